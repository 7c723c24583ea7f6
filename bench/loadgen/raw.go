package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// rawConn is one client's keep-alive connection for -proto connect-raw.
type rawConn struct {
	c      net.Conn
	r      *bufio.Reader
	reused bool // a reply has been read on it
	fast   int  // replies read by plainOK (for tests)
}

// rawSluiceWriter sends the same Connect unary call as sluiceWriter (a
// POST of the protobuf SubmitRequest to /sluice.v1.JobService/Submit with
// Connect-Protocol-Version: 1, the API key, a Connect-Timeout-Ms and, with
// -gzip, Accept-Encoding: gzip), but as bytes built once and written on a
// plain TCP connection per client, with a plain 200 reply skipped over by
// its length and any other read by http.ReadResponse: no net/http client,
// so none of its per-connection goroutines, per-request header maps and
// hand-offs. On a machine where the
// load generator shares the CPUs with the servers, that leaves them more of
// it: the stand-in for clients on other machines.
func rawSluiceWriter(c config) (writer, error) {
	u, err := url.Parse(c.addrs[0])
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("-addr: %q is not an http:// URL (connect-raw speaks plain HTTP/1.1)", c.addrs[0])
	}
	body, err := proto.Marshal(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: c.model}})
	if err != nil {
		return nil, err
	}
	accept := ""
	if c.gzip {
		accept = "Accept-Encoding: gzip\r\n" // unary Connect negotiates with HTTP's own header
	}
	path := strings.TrimSuffix(u.Path, "/") + "/sluice.v1.JobService/Submit"
	reqs := make([][]byte, c.tenants)
	for i := range reqs {
		reqs[i] = fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\n"+
			"Content-Type: application/proto\r\nConnect-Protocol-Version: 1\r\nConnect-Timeout-Ms: 30000\r\n%s"+
			"Authorization: Bearer %s%d\r\nContent-Length: %d\r\n\r\n%s",
			path, u.Host, accept, c.keyPrefix, i, len(body), body)
	}
	conns := make([]*rawConn, c.clients)
	dial := func() (*rawConn, error) {
		nc, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
		if err != nil {
			return nil, err
		}
		return &rawConn{c: nc, r: bufio.NewReaderSize(nc, 4096)}, nil
	}
	return func(ctx context.Context, client, _ int) error {
		req := reqs[client%len(reqs)]
		for try := 0; ; try++ {
			rc := conns[client]
			if rc == nil {
				var err error // not the enclosing function's: every client runs this at once
				if rc, err = dial(); err != nil {
					return err
				}
				conns[client] = rc
			}
			if d, ok := ctx.Deadline(); ok {
				rc.c.SetDeadline(d)
			}
			res, err := rc.roundTrip(req)
			if err != nil || res.close {
				rc.c.Close()
				conns[client] = nil
			}
			// A kept-alive connection the server closed while it was idle fails
			// before any of the reply arrives: send again on a new one, once (as
			// net/http's client does).
			if err != nil && res.idleClosed && try == 0 {
				continue
			}
			if err != nil {
				return err
			}
			if res.status != http.StatusOK {
				return fmt.Errorf("submit: HTTP %d: %s", res.status, strings.TrimSpace(res.errBody))
			}
			return nil
		}
	}, nil
}

type rawResult struct {
	status     int
	close      bool   // the server closes the connection after this reply
	idleClosed bool   // with an error: it came before any byte of the reply, on a reused connection
	errBody    string // the start of a reply that is not 200 (Connect's JSON error)
}

// roundTrip writes one request and reads its reply, discarding the body.
func (rc *rawConn) roundTrip(req []byte) (rawResult, error) {
	reused := rc.reused
	if _, err := rc.c.Write(req); err != nil {
		return rawResult{idleClosed: reused}, err
	}
	if _, err := rc.r.Peek(1); err != nil {
		return rawResult{idleClosed: reused}, err
	}
	rc.reused = true
	if n, ok := rc.plainOK(); ok {
		rc.fast++
		_, err := rc.r.Discard(n)
		return rawResult{status: http.StatusOK}, err
	}
	res, err := http.ReadResponse(rc.r, nil)
	for err == nil && res.StatusCode >= 100 && res.StatusCode < 200 {
		res, err = http.ReadResponse(rc.r, nil) // an informational reply: the real one follows
	}
	if err != nil {
		return rawResult{}, err
	}
	out := rawResult{status: res.StatusCode, close: res.Close}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<10))
		out.errBody = string(b)
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return out, err
}

// plainOK looks at the reply already buffered, without consuming it: when
// its whole head is there and it is a 200 with a Content-Length and no
// Transfer-Encoding or Connection header (a Connect reply from net/http), it
// returns the length of head and body, to discard. Anything else is left to
// http.ReadResponse. The saving is the CPU of parsing every reply into a
// header map: about 5 µs a call here.
func (rc *rawConn) plainOK() (int, bool) {
	buf, _ := rc.r.Peek(rc.r.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 || !bytes.HasPrefix(buf, []byte("HTTP/1.1 200 ")) {
		return 0, false
	}
	head := buf[:end+2]
	length := -1
	for line := range bytes.Lines(head[bytes.IndexByte(head, '\n')+1:]) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, false
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.Atoi(string(bytes.TrimSpace(value)))
			if err != nil || n < 0 || length >= 0 {
				return 0, false
			}
			length = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")), bytes.EqualFold(name, []byte("Connection")):
			return 0, false
		}
	}
	if length < 0 {
		return 0, false
	}
	return end + 4 + length, true
}
