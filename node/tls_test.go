package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/gpuexec"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// The tests' CA signs every node's and executor's certificate unless a test
// makes another to be refused.
var (
	testCAOnce   sync.Once
	testCAValue  *CA
	testTLSOnce  sync.Once
	testTLSValue *http.Client
)

func sharedCA() *CA {
	testCAOnce.Do(func() {
		ca, err := NewCA("sluice test CA", time.Hour)
		if err != nil {
			panic(err)
		}
		testCAValue = ca
	})
	return testCAValue
}

// sharedTLSClient trusts the tests' CA and presents no certificate.
func sharedTLSClient() *http.Client {
	testTLSOnce.Do(func() { testTLSValue = tlsClient(sharedCA(), nil, false) })
	return testTLSValue
}

// tlsClient is an HTTP/2-or-1.1 client trusting ca, presenting cert when
// given; fresh makes a new TLS connection for every call.
func tlsClient(ca *CA, cert *tls.Certificate, fresh bool) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	t := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, Protocols: new(http.Protocols), DisableKeepAlives: fresh}
	if cert != nil {
		// Sent whatever CAs the server asks for (Go's default would hold
		// back a certificate the server will not accept, as an attacker
		// would not).
		t.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	t.Protocols.SetHTTP1(true)
	if !fresh {
		t.Protocols.SetHTTP2(true)
	}
	return &http.Client{Transport: t}
}

// writeCert issues a certificate from ca into dir as name.pem and
// name-key.pem and returns the paths.
func writeCert(t *testing.T, ca *CA, dir, name string, use CertUse) (certFile, keyFile string) {
	t.Helper()
	var hosts []string
	if use == NodeCert {
		hosts = []string{"127.0.0.1", "localhost"}
	}
	c, k, err := ca.Issue(name, use, hosts, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, c, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, k, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func writeCAFile(t *testing.T, ca *CA, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(p, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// mtlsFiles gives node id a certificate from ca, with ca as its peer and
// executor CA.
func mtlsFiles(t *testing.T, ca *CA, id string) TLSFiles {
	dir := t.TempDir()
	cert, key := writeCert(t, ca, dir, id, NodeCert)
	caFile := writeCAFile(t, ca, dir)
	return TLSFiles{CertFile: cert, KeyFile: key, PeerCAFile: caFile, ExecutorCAFile: caFile}
}

func loadPair(t *testing.T, certFile, keyFile string) *tls.Certificate {
	t.Helper()
	c, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// certExecutors runs synthetic executors that authenticate with client
// certificates (no token): executor prefix-i has a certificate for its name.
func certExecutors(t *testing.T, ca *CA, count int, servers []string, prefix string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, count)
	dir := t.TempDir()
	for i := 1; i <= count; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		cert := execCert(t, ca, dir, name)
		a := &gpuexec.Agent{Info: gpuexec.DeclaredInfo(name, 1, 1, 81920, nil), Servers: servers,
			Retry: 50 * time.Millisecond, Client: tlsClient(sharedCA(), cert, false),
			Runner: &gpuexec.Synthetic{Name: name, Durations: map[string]time.Duration{"sdxl": 50 * time.Millisecond, "llama-8b": 20 * time.Millisecond}}}
		go func() { a.Run(ctx); done <- struct{}{} }()
	}
	t.Cleanup(func() {
		cancel()
		for range count {
			<-done
		}
	})
}

// execCert issues an executor's certificate for name.
func execCert(t *testing.T, ca *CA, dir, name string) *tls.Certificate {
	t.Helper()
	c, k := writeCert(t, ca, dir, name, ExecutorCert)
	return loadPair(t, c, k)
}

// TestMTLSClusterJoinsForwardsAndReplicates: three nodes with mutual TLS on
// raft and forwarding and TLS on the API join, take writes through a
// follower, run them on executors that authenticate with client
// certificates (their reports reach the leader through followers), and
// agree on the state.
func TestMTLSClusterJoinsForwardsAndReplicates(t *testing.T) {
	ca := sharedCA()
	c := startClusterWith(t, 3, 0, func(cfg *Config) { cfg.TLS = mtlsFiles(t, ca, cfg.ID) })
	var servers []string
	for _, n := range c.nodes {
		if n.stream == nil || n.Scheme() != "https" {
			t.Fatalf("%s: raft over plain TCP or API without TLS", n.cfg.ID)
		}
		servers = append(servers, baseURL(n))
	}
	certExecutors(t, ca, 2, servers, "x")
	l := c.waitLeader()
	waitExecutors(t, l, 2)
	f := c.followers()[0]
	ids := submitAll(t, f, "mtls", 20)
	c.checkInvariants(ids)

	// The API refuses plaintext: an http:// call to a TLS port fails.
	plain := sluicev1connect.NewJobServiceClient(http.DefaultClient, "http://"+f.Addr(), connect.WithInterceptors(testAuth(DemoBobKey)))
	if _, err := plain.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: ids[0]})); err == nil {
		t.Fatal("a plaintext call to the TLS API port succeeded")
	}

	// A follower checks an executor's certificate before forwarding: x-1
	// may heartbeat as x-1 (the leader answers), never as x-2, and a header
	// naming another executor, sent by a non-peer, is stripped.
	x1 := execCert(t, ca, t.TempDir(), "x-1")
	ex := sluicev1connect.NewExecutorServiceClient(tlsClient(ca, x1, false), baseURL(f))
	_, err := ex.Heartbeat(context.Background(), connect.NewRequest(&sluicev1.HeartbeatRequest{Executor: "x-1"}))
	if code := connect.CodeOf(err); err != nil && code == connect.CodePermissionDenied || code == connect.CodeUnauthenticated {
		t.Fatalf("x-1 heartbeating as x-1 through a follower: %v", err)
	}
	req := connect.NewRequest(&sluicev1.HeartbeatRequest{Executor: "x-2"})
	req.Header().Set(executorCertHeader, "x-2")
	_, err = ex.Heartbeat(context.Background(), req)
	if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), `client certificate is for "x-1"`) {
		t.Fatalf("x-1 heartbeating as x-2 with a forged %s: %v, want permission_denied naming x-1", executorCertHeader, err)
	}
}

// TestPeerWithCertificateFromAnotherCAIsRefused: a server whose certificate
// another CA signed cannot join (the leader's TLS check of its raft port
// fails), cannot open a raft connection to a member, and its client
// certificate is refused on a member's API; an executor's certificate from
// the right CA is not a peer's either.
func TestPeerWithCertificateFromAnotherCAIsRefused(t *testing.T) {
	ca := sharedCA()
	c := startClusterWith(t, 1, 0, func(cfg *Config) { cfg.TLS = mtlsFiles(t, ca, cfg.ID) })
	n1 := c.nodes[0]
	other, err := NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := Start(Config{ID: "bad", DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", TLS: mtlsFiles(t, other, "bad"),
		Logger: quietLogger(), RaftLog: nilWriter{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bad.Close() })

	_, err = adminClient(n1).JoinNode(context.Background(), connect.NewRequest(&sluicev1.JoinNodeRequest{
		Id: "bad", RaftAddress: bad.RaftAddr(), HttpAddress: bad.Addr()}))
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("join of a node with another CA's certificate: %v, want a TLS error", err)
	}
	t.Logf("join refused: %v", err)
	if cfg := n1.raft.GetConfiguration(); cfg.Error() != nil || len(cfg.Configuration().Servers) != 1 {
		t.Fatalf("configuration after the refused join: %v", cfg.Configuration().Servers)
	}

	// Its raft transport cannot reach n1: n1's certificate is not one it trusts.
	var resp raft.RequestVoteResponse
	err = bad.transport.RequestVote("n1", raft.ServerAddress(n1.RaftAddr()), &raft.RequestVoteRequest{}, &resp)
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("raft from the bad node: %v, want a TLS error", err)
	}
	// n1 refuses its certificate even from a client that trusts n1.
	badCert := bad.tls.cert.Current()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		want string
	}{
		{"another CA's node certificate", *badCert, "unknown certificate authority"},
		{"an executor's certificate", *execCert(t, ca, t.TempDir(), "x-1"), "bad certificate"},
	} {
		cert := tc.cert
		err := raftHandshake(n1.RaftAddr(), &tls.Config{RootCAs: pool,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("raft connection with %s: %v, want %q", tc.name, err, tc.want)
		}
		t.Logf("raft connection with %s refused: %v", tc.name, err)
	}
	// On the API port a client certificate, when given, must verify.
	jobs := sluicev1connect.NewJobServiceClient(tlsClient(ca, badCert, true), baseURL(n1), connect.WithInterceptors(testAuth(DemoBobKey)))
	_, err = jobs.ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{}))
	if !refusedClientCert(err) {
		t.Fatalf("API call with another CA's client certificate: %v", err)
	}
	// And n1 does not forward to it: its API certificate is not the peer CA's.
	if _, err := n1.cluster.askHealth(context.Background(), bad.Addr()); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("peer call to the bad node: %v", err)
	}
}

// raftHandshake opens a TLS connection to a raft port and reads from it:
// under TLS 1.3 the server's verdict on the client certificate arrives
// after the client's handshake, as an alert on the first read.
func raftHandshake(addr string, cfg *tls.Config) error {
	cfg.ServerName = "127.0.0.1"
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err
}

// TestAPICertificateRotatedUnderLoadFailsNoCall: while clients submit
// without pause (half on kept-alive HTTP/2 connections, half opening a new
// TLS connection per call), the API certificate is replaced twice (once
// with Reload, as SIGHUP does, once by the file changing alone). No call
// fails, and a new connection sees each new certificate's serial.
func TestAPICertificateRotatedUnderLoadFailsNoCall(t *testing.T) {
	ca := sharedCA()
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, ca, dir, "n1", NodeCert)
	p := DemoPolicy()
	p.Rules = nil
	n, err := Start(Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Bootstrap: true, Policy: p,
		TLS: TLSFiles{CertFile: certFile, KeyFile: keyFile}, Logger: quietLogger(), RaftLog: nilWriter{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	waitFor(t, "leadership", n.Leading)

	serial := func() string {
		t.Helper()
		pool := x509.NewCertPool()
		pool.AddCert(ca.Cert)
		c, err := tls.Dial("tcp", n.Addr(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
	}
	rotate := func() {
		c, k, err := ca.Issue("n1", NodeCert, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Error(err)
			return
		}
		// Written in place, not renamed: a poll may see the new certificate
		// with the old key, which must keep the old pair, not break calls.
		if err := os.WriteFile(certFile, c, 0o600); err != nil {
			t.Error(err)
		}
		if err := os.WriteFile(keyFile, k, 0o600); err != nil {
			t.Error(err)
		}
	}

	ctx, stop := context.WithCancel(context.Background())
	var calls, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			jobs := sluicev1connect.NewJobServiceClient(tlsClient(ca, nil, i%2 == 1), baseURL(n), connect.WithInterceptors(testAuth(DemoBobKey)))
			for k := 0; ctx.Err() == nil; k++ {
				_, err := jobs.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{
					Model: "llama-8b", IdempotencyKey: fmt.Sprintf("rot-%d-%d", i, k)}}))
				calls.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	s0 := serial()
	waitCalls := func(more int64) {
		at := calls.Load()
		waitFor(t, "calls to go on", func() bool { return calls.Load() >= at+more })
	}
	waitCalls(50)
	rotate()
	if err := n.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	s1 := serial()
	waitCalls(50)
	rotate() // no Reload: the poll sees the files change
	var s2 string
	waitFor(t, "the changed files to be loaded", func() bool { s2 = serial(); return s2 != s1 })
	waitCalls(50)
	stop()
	wg.Wait()
	if s1 == s0 {
		t.Fatalf("after Reload a new connection still sees serial %s", s0)
	}
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d calls failed during rotation; first: %v", f, calls.Load(), firstErr.Load())
	}
	t.Logf("%d calls, none failed; serials %s → %s → %s", calls.Load(), s0, s1, s2)
}

// TestCertReloaderKeepsTheOldPairOnABadFile: garbage, or a key that is not
// the certificate's, is refused naming the flag; the old pair stays.
func TestCertReloaderKeepsTheOldPairOnABadFile(t *testing.T) {
	ca := sharedCA()
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, ca, dir, "n1", NodeCert)
	r, err := NewCertReloader(certFile, keyFile, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	before := r.Current().Leaf.SerialNumber
	_, otherKey := writeCert(t, ca, dir, "other", NodeCert)
	otherKeyPEM, _ := os.ReadFile(otherKey)
	for _, tc := range []struct {
		file string
		data []byte
		want string
	}{
		{certFile, []byte("not a certificate"), "--tls-cert " + certFile + ": no CERTIFICATE PEM block"},
		{keyFile, otherKeyPEM, "--tls-key " + keyFile + " does not go with --tls-cert"},
	} {
		orig, _ := os.ReadFile(tc.file)
		os.WriteFile(tc.file, tc.data, 0o600)
		err := r.Reload()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("reload: %v, want %q", err, tc.want)
		}
		if r.Current().Leaf.SerialNumber.Cmp(before) != 0 {
			t.Fatal("a bad file replaced the certificate")
		}
		os.WriteFile(tc.file, orig, 0o600)
	}
	if err := r.Reload(); err != nil {
		t.Fatalf("reload of the restored files: %v", err)
	}
}

// TestTLSConfigErrorsNameTheFlag: a missing half, an unreadable file, a
// key that does not match, and a node certificate not from the peer CA.
func TestTLSConfigErrorsNameTheFlag(t *testing.T) {
	ca := sharedCA()
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, ca, dir, "n1", NodeCert)
	_, otherKey := writeCert(t, ca, dir, "n2", NodeCert)
	other, _ := NewCA("other", time.Hour)
	otherCA := filepath.Join(dir, "other-ca.pem")
	os.WriteFile(otherCA, other.CertPEM, 0o644)
	execCert, execKey := writeCert(t, ca, dir, "x-1", ExecutorCert)
	caFile := writeCAFile(t, ca, dir)
	for _, tc := range []struct {
		files TLSFiles
		want  string
	}{
		{TLSFiles{CertFile: certFile}, "--tls-key: empty, but --tls-cert is"},
		{TLSFiles{KeyFile: keyFile}, "--tls-cert: empty, but --tls-key is"},
		{TLSFiles{CertFile: filepath.Join(dir, "missing.pem"), KeyFile: keyFile}, "--tls-cert: open " + dir},
		{TLSFiles{CertFile: certFile, KeyFile: otherKey}, "--tls-key " + otherKey + " does not go with --tls-cert " + certFile},
		{TLSFiles{PeerCAFile: caFile}, "--peer-ca: needs --tls-cert and --tls-key"},
		{TLSFiles{CertFile: certFile, KeyFile: keyFile, PeerCAFile: otherCA}, "not usable as a peer certificate under --peer-ca"},
		{TLSFiles{CertFile: execCert, KeyFile: execKey, PeerCAFile: caFile}, "--tls-cert " + execCert + ": does not allow server auth, which a peer certificate needs"},
		{TLSFiles{CertFile: certFile, KeyFile: keyFile, ExecutorCAFile: keyFile}, "--executor-ca " + keyFile + ": no CERTIFICATE PEM block"},
	} {
		_, err := Start(Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", TLS: tc.files, Logger: quietLogger(), RaftLog: nilWriter{}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%+v: %v, want %q", tc.files, err, tc.want)
		}
	}
}

// TestExecutorClientCertificateActsOnlyAsItsName: an executor with a client
// certificate and no token leases and runs a job; its certificate does not
// let it act as another executor, and a certificate from another CA is
// refused at the handshake.
func TestExecutorClientCertificateActsOnlyAsItsName(t *testing.T) {
	ca := sharedCA()
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, ca, dir, "n1", NodeCert)
	p := DemoPolicy()
	p.Rules = nil
	n, err := Start(Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Bootstrap: true, Policy: p,
		LeaseGrace: 200 * time.Millisecond, HeartbeatInterval: 200 * time.Millisecond,
		TLS:    TLSFiles{CertFile: certFile, KeyFile: keyFile, ExecutorCAFile: writeCAFile(t, ca, dir)},
		Logger: quietLogger(), RaftLog: nilWriter{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	waitFor(t, "leadership", n.Leading)
	certExecutors(t, ca, 1, []string{baseURL(n)}, "gpu")
	waitExecutors(t, n, 1)
	jobs := jobClient(n, DemoBobKey)
	id := submit(t, jobs, &sluicev1.JobSpec{Model: "sdxl", Input: input(t, map[string]any{"duration_ms": 20})}).Id
	if j := waitState(t, jobs, id, sluicev1.JobState_JOB_STATE_SUCCEEDED); j.Executor != "gpu-1" {
		t.Fatalf("ran on %q", j.Executor)
	}

	gpu1 := execCert(t, ca, dir, "gpu-1")
	ex := sluicev1connect.NewExecutorServiceClient(tlsClient(ca, gpu1, false), baseURL(n))
	_, err = ex.Heartbeat(context.Background(), connect.NewRequest(&sluicev1.HeartbeatRequest{Executor: "gpu-1"}))
	if err != nil {
		t.Fatalf("gpu-1 heartbeating as itself: %v", err)
	}
	_, err = ex.Heartbeat(context.Background(), connect.NewRequest(&sluicev1.HeartbeatRequest{Executor: "gpu-2"}))
	if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), `executor name "gpu-2": the client certificate is for "gpu-1"`) {
		t.Fatalf("gpu-1 heartbeating as gpu-2: %v", err)
	}
	_, err = ex.Report(context.Background(), connect.NewRequest(&sluicev1.ReportRequest{Executor: "gpu-2", JobId: id, Attempt: 1,
		Outcome: &sluicev1.ReportRequest_Failed{Failed: &sluicev1.Failed{}}}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("gpu-1 reporting as gpu-2: %v", err)
	}
	stream, err := ex.Lease(context.Background(), connect.NewRequest(&sluicev1.LeaseRequest{Executor: gpuexec.DeclaredInfo("gpu-2", 1, 1, 1024, nil)}))
	if err == nil {
		stream.Receive()
		err = stream.Err()
		stream.Close()
	}
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("gpu-1 leasing as gpu-2: %v", err)
	}
	// gpu-1 cannot end a job that runs on another executor, even under
	// its own name and with the right attempt number.
	startExecutors(t, 1, []string{baseURL(n)}, "tok")
	waitExecutors(t, n, 2)
	long := submit(t, jobs, &sluicev1.JobSpec{Model: "sdxl", Input: input(t, map[string]any{"duration_ms": 60000})}).Id
	var running *sluicev1.Job
	waitFor(t, "the long job to run", func() bool {
		running = waitState(t, jobs, long, sluicev1.JobState_JOB_STATE_RUNNING)
		return running.Executor != ""
	})
	if running.Executor == "gpu-1" { // gpu-1 was free: it ran first; the next goes to tok-1
		long = submit(t, jobs, &sluicev1.JobSpec{Model: "sdxl", Input: input(t, map[string]any{"duration_ms": 60000})}).Id
		running = waitState(t, jobs, long, sluicev1.JobState_JOB_STATE_RUNNING)
	}
	if running.Executor != "tok-1" {
		t.Fatalf("the long job runs on %q, want tok-1", running.Executor)
	}
	rep, err := ex.Report(context.Background(), connect.NewRequest(&sluicev1.ReportRequest{Executor: "gpu-1", JobId: long, Attempt: running.Attempt,
		Outcome: &sluicev1.ReportRequest_Succeeded{Succeeded: &sluicev1.Succeeded{}}}))
	if err != nil || rep.Msg.Accepted {
		t.Fatalf("gpu-1 reporting tok-1's job: %v, accepted %v", err, rep.Msg.GetAccepted())
	}
	if j := waitState(t, jobs, long, sluicev1.JobState_JOB_STATE_RUNNING); j.Executor != "tok-1" {
		t.Fatalf("after gpu-1's report the job is on %q", j.Executor)
	}

	// No certificate, no token: unauthenticated.
	anon := sluicev1connect.NewExecutorServiceClient(sharedTLSClient(), baseURL(n))
	if _, err := anon.Heartbeat(context.Background(), connect.NewRequest(&sluicev1.HeartbeatRequest{Executor: "gpu-1"})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("no credential: %v", err)
	}
	// Another CA's certificate: refused at the handshake.
	other, _ := NewCA("other", time.Hour)
	forged := execCert(t, other, t.TempDir(), "gpu-1")
	ex = sluicev1connect.NewExecutorServiceClient(tlsClient(ca, forged, true), baseURL(n))
	_, err = ex.Heartbeat(context.Background(), connect.NewRequest(&sluicev1.HeartbeatRequest{Executor: "gpu-1"}))
	if !refusedClientCert(err) {
		t.Fatalf("another CA's executor certificate: %v", err)
	}
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Code() == connect.CodePermissionDenied {
		t.Fatal("refused by the handler, not the handshake")
	}
}

// refusedClientCert reports whether a call failed because the server refused
// the client's certificate. Under TLS 1.3 the server judges it after the
// client has sent its request: the client reads the alert, or finds the
// connection already closed under its write (a reset, a broken pipe, or,
// when its own reader saw the close first, its connection closed).
func refusedClientCert(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "unknown certificate authority") ||
		strings.Contains(err.Error(), "broken pipe") || strings.Contains(err.Error(), "connection reset") ||
		strings.Contains(err.Error(), "use of closed network connection"))
}
