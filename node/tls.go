package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Transport security. The API port serves TLS with the certificate in
// --tls-cert/--tls-key, re-read when the files change (polled every second)
// or on Reload (SIGHUP), so a certificate is rotated without a restart: new
// connections get the new one, open ones keep theirs. With --peer-ca,
// servers authenticate each other: raft traffic requires a client
// certificate signed by the peer CA on both ends, and a follower forwarding
// a write presents its certificate to the leader, whose certificate it
// checks against the peer CA. A peer certificate must also allow server
// auth, so an executor's certificate (client auth only) is never a peer's,
// even when one CA signs both. With --executor-ca, an executor may present a
// client certificate instead of the token; its Common Name (or a DNS SAN)
// is the only executor name it may act as.

// TLSFiles names the files of a node's transport security; the empty value
// is plaintext.
type TLSFiles struct {
	// CertFile and KeyFile are this node's certificate and key (PEM): the
	// API port serves them, and with PeerCAFile they are its identity to
	// its peers (so they must then allow client auth too, and be signed by
	// the peer CA).
	CertFile, KeyFile string
	// PeerCAFile, when set, turns on mutual TLS between servers (raft and
	// forwarding): a server must present a certificate it signs.
	PeerCAFile string
	// ExecutorCAFile, when set, lets executors authenticate with a client
	// certificate it signs instead of the executor token.
	ExecutorCAFile string
}

// certPollInterval is how often a CertReloader looks at its files.
const certPollInterval = time.Second

// CertReloader holds a certificate and key read from files, and reads them
// again when they change or on Reload. A new pair that does not load (a
// half-written file, a key that does not match) is logged and the old one
// kept, so a rotation done out of order heals on the next change.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	cert              atomic.Pointer[tls.Certificate]
	mu                sync.Mutex // serialises loads; guards seen
	seen              [2]fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi.ModTime(), fi.Size()}
}

// NewCertReloader loads the pair once (an error names --tls-cert or
// --tls-key and what is wrong); Watch keeps it current.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log}
	r.seen = [2]fileStamp{stampOf(certFile), stampOf(keyFile)}
	c, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert.Store(c)
	return r, nil
}

// LoadKeyPair reads a certificate and its key; errors name the flag
// (--tls-cert or --tls-key), the file and what is wrong.
func LoadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, errors.New("--tls-cert and --tls-key: both empty")
	case certFile == "":
		return nil, fmt.Errorf("--tls-cert: empty, but --tls-key is %s; give both", keyFile)
	case keyFile == "":
		return nil, fmt.Errorf("--tls-key: empty, but --tls-cert is %s; give both", certFile)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-key: %w", err)
	}
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("--tls-cert %s: no CERTIFICATE PEM block", certFile)
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s: %w", certFile, err)
	}
	if kb, _ := pem.Decode(keyPEM); kb == nil || !bytes.HasSuffix([]byte(kb.Type), []byte("PRIVATE KEY")) {
		return nil, fmt.Errorf("--tls-key %s: no PRIVATE KEY PEM block", keyFile)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("--tls-key %s does not go with --tls-cert %s: %w", keyFile, certFile, err)
	}
	if now := time.Now(); now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("--tls-cert %s: expired at %s", certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	c.Leaf = leaf
	return &c, nil
}

// Reload reads the files now; on an error the old certificate stays.
func (r *CertReloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadLocked()
}

func (r *CertReloader) reloadLocked() error {
	r.seen = [2]fileStamp{stampOf(r.certFile), stampOf(r.keyFile)}
	c, err := LoadKeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.log.Error("TLS certificate not reloaded; keeping the current one", "err", err)
		return err
	}
	old := r.cert.Swap(c)
	if old == nil || !bytes.Equal(old.Leaf.Raw, c.Leaf.Raw) {
		r.log.Info("TLS certificate loaded", "file", r.certFile, "subject", c.Leaf.Subject.CommonName,
			"serial", c.Leaf.SerialNumber.Text(16), "expires", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Watch polls the files every second and reloads when either changed,
// until ctx ends.
func (r *CertReloader) Watch(ctx context.Context) {
	t := time.NewTicker(certPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		if now := [2]fileStamp{stampOf(r.certFile), stampOf(r.keyFile)}; now != r.seen {
			r.reloadLocked()
		}
		r.mu.Unlock()
	}
}

// Current is the certificate in use.
func (r *CertReloader) Current() *tls.Certificate { return r.cert.Load() }

// GetCertificate is for tls.Config.GetCertificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (r *CertReloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// LoadCAFile reads PEM CA certificates; errors name the flag.
func LoadCAFile(flag, path string) (*x509.CertPool, []*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", flag, err)
	}
	var certs []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %s: %w", flag, path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, nil, fmt.Errorf("%s %s: no CERTIFICATE PEM block", flag, path)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, certs, nil
}

// nodeTLS is a node's loaded transport security.
type nodeTLS struct {
	cert      *CertReloader
	peerPool  *x509.CertPool // nil: no mutual TLS between servers
	peerRoots []*x509.Certificate
	execPool  *x509.CertPool // nil: executors use the token only
	execRoots []*x509.Certificate
}

func loadNodeTLS(f TLSFiles, log *slog.Logger) (*nodeTLS, error) {
	if f.CertFile == "" && f.KeyFile == "" {
		switch {
		case f.PeerCAFile != "":
			return nil, errors.New("--peer-ca: needs --tls-cert and --tls-key, this node's certificate signed by the peer CA")
		case f.ExecutorCAFile != "":
			return nil, errors.New("--executor-ca: needs --tls-cert and --tls-key (client certificates need TLS on the API port)")
		}
		return nil, nil
	}
	cert, err := NewCertReloader(f.CertFile, f.KeyFile, log)
	if err != nil {
		return nil, err
	}
	t := &nodeTLS{cert: cert}
	if f.PeerCAFile != "" {
		if t.peerPool, t.peerRoots, err = LoadCAFile("--peer-ca", f.PeerCAFile); err != nil {
			return nil, err
		}
		leaf := cert.Current().Leaf
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: t.peerPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			return nil, fmt.Errorf("--tls-cert %s: not usable as a peer certificate under --peer-ca %s (it must be signed by it and allow client auth): %w", f.CertFile, f.PeerCAFile, err)
		}
		if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
			return nil, fmt.Errorf("--tls-cert %s: does not allow server auth, which a peer certificate needs", f.CertFile)
		}
	}
	if f.ExecutorCAFile != "" {
		if t.execPool, t.execRoots, err = LoadCAFile("--executor-ca", f.ExecutorCAFile); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// apiConfig is the API port's: any client may connect; a client
// certificate, when given, must verify against the peer or executor CA.
func (t *nodeTLS) apiConfig() *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: t.cert.GetCertificate}
	if t.peerPool != nil || t.execPool != nil {
		pool := x509.NewCertPool()
		for _, r := range slices.Concat(t.peerRoots, t.execRoots) {
			pool.AddCert(r)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c
}

// raftServerConfig requires a peer certificate of every raft connection.
func (t *nodeTLS) raftServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: t.cert.GetCertificate,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      t.peerPool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !isPeerCert(cs.PeerCertificates[0]) {
				return errors.New("client certificate does not allow server auth: not a peer's")
			}
			return nil
		},
	}
}

// peerClientConfig is for dialling peers: this node's certificate, the
// peer CA as the only root.
func (t *nodeTLS) peerClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		RootCAs:              t.peerPool,
		GetClientCertificate: t.cert.GetClientCertificate,
	}
}

func isPeerCert(c *x509.Certificate) bool {
	return slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
}

// callerCert is what a verified client certificate makes of a call.
type callerCert struct {
	// peer: the certificate chains to the peer CA and allows server auth.
	peer bool
	// executorNames: the names (Common Name and DNS SANs) an executor with
	// this certificate may act as; for a peer, the name a forwarded call
	// carries in executorCertHeader (the peer checked the certificate).
	executorNames []string
}

type callerCertKey struct{}

// connCert computes a connection's callerCert once; HTTP/2 streams share it.
type connCert struct {
	once sync.Once
	c    callerCert
}

type connCertKey struct{}

// executorCertHeader carries, on a call a follower forwards, the executor
// name that the follower took from the executor's client certificate. It is
// believed only from a peer; the middleware strips it from anyone else.
const executorCertHeader = "Sluice-Executor-Cert-Name"

func (t *nodeTLS) classify(cs *tls.ConnectionState) callerCert {
	var out callerCert
	for _, chain := range cs.VerifiedChains {
		if len(chain) == 0 {
			continue
		}
		leaf, root := chain[0], chain[len(chain)-1]
		if isPeerCert(leaf) && containsCert(t.peerRoots, root) {
			return callerCert{peer: true}
		}
		if containsCert(t.execRoots, root) {
			out.executorNames = append([]string{leaf.Subject.CommonName}, leaf.DNSNames...)
		}
	}
	return out
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	return slices.ContainsFunc(list, func(x *x509.Certificate) bool { return x.Equal(c) })
}

// withCallerCert stores what the caller's certificate proves in the
// request's context, and strips the headers only a peer may send.
func (n *Node) withCallerCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c callerCert
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			if cc, ok := r.Context().Value(connCertKey{}).(*connCert); ok {
				cc.once.Do(func() { cc.c = n.tls.classify(r.TLS) })
				c = cc.c
			} else {
				c = n.tls.classify(r.TLS)
			}
		}
		if c.peer {
			if name := r.Header.Get(executorCertHeader); name != "" {
				c.executorNames = []string{name}
			}
		} else if n.tls.peerPool != nil {
			// With mutual TLS a forwarded client address is believed only
			// from a peer's certificate, not from a member's host alone.
			r.Header.Del(forwardedForHeader)
		}
		r.Header.Del(executorCertHeader)
		if c.peer || len(c.executorNames) > 0 {
			r = r.WithContext(context.WithValue(r.Context(), callerCertKey{}, c))
		}
		next.ServeHTTP(w, r)
	})
}

func callerCertOf(ctx context.Context) callerCert {
	c, _ := ctx.Value(callerCertKey{}).(callerCert)
	return c
}

// tlsStreamLayer is raft's transport over mutual TLS.
type tlsStreamLayer struct {
	ln     net.Listener // the TCP listener; Accept wraps its conns
	server *tls.Config
	client *tls.Config
	log    *slog.Logger
}

func newTLSStreamLayer(addr string, t *nodeTLS, log *slog.Logger) (*tlsStreamLayer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("%s is not an address peers can dial (give the host's own address)", addr)
	}
	return &tlsStreamLayer{ln: ln, server: t.raftServerConfig(), client: t.peerClientConfig(), log: log}, nil
}

func (s *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return &loggedHandshake{Conn: tls.Server(c, s.server), log: s.log}, nil
}

func (s *tlsStreamLayer) Close() error   { return s.ln.Close() }
func (s *tlsStreamLayer) Addr() net.Addr { return s.ln.Addr() }

func (s *tlsStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(addr))
	if err != nil {
		return nil, err
	}
	cfg := s.client.Clone()
	cfg.ServerName = host
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", string(addr))
	if err != nil {
		return nil, fmt.Errorf("raft: dial %s over TLS: %w", addr, err)
	}
	return c, nil
}

// loggedHandshake completes the server side's handshake on first use and
// logs a refused peer, which raft itself would only see as a bad read.
type loggedHandshake struct {
	*tls.Conn
	log  *slog.Logger
	once sync.Once
	err  error
}

func (c *loggedHandshake) handshake() error {
	c.once.Do(func() {
		c.Conn.SetDeadline(time.Now().Add(10 * time.Second))
		if c.err = c.Conn.Handshake(); c.err != nil {
			c.log.Warn("raft: refused a connection: TLS handshake failed", "from", c.RemoteAddr().String(), "err", c.err)
			return
		}
		c.Conn.SetDeadline(time.Time{})
	})
	return c.err
}

func (c *loggedHandshake) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *loggedHandshake) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// checkPeerTLS dials a joining server's raft address and completes a
// handshake: a node whose certificate the peer CA did not sign is refused
// before it is made a voter.
func (n *Node) checkPeerTLS(ctx context.Context, id, raftAddr string) error {
	if n.stream == nil {
		return nil
	}
	c, err := n.stream.Dial(raft.ServerAddress(raftAddr), 3*time.Second)
	if err != nil {
		return fmt.Errorf("node %s: %w (is its certificate signed by --peer-ca?)", id, err)
	}
	return c.Close()
}
