package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// rawConn is one client's keep-alive connection for -proto connect-raw.
type rawConn struct {
	c net.Conn
	r *bufio.Reader
}

// rawSluiceWriter sends the same Connect unary call as sluiceWriter (a
// POST of the protobuf SubmitRequest to /sluice.v1.JobService/Submit with
// Connect-Protocol-Version: 1, the API key and a Connect-Timeout-Ms), but
// writes the request bytes on a plain TCP connection per client and reads
// the HTTP/1.1 response itself, without net/http's client (its connection
// goroutines, header maps and body readers). On a machine where the load
// generator shares the CPUs with the servers, that leaves them more of it:
// the stand-in for clients on other machines.
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
		accept = "Connect-Accept-Encoding: gzip\r\n"
	}
	reqs := make([][]byte, c.tenants)
	for i := range reqs {
		reqs[i] = fmt.Appendf(nil, "POST /sluice.v1.JobService/Submit HTTP/1.1\r\nHost: %s\r\n"+
			"Content-Type: application/proto\r\nConnect-Protocol-Version: 1\r\nConnect-Timeout-Ms: 30000\r\n%s"+
			"Authorization: Bearer %s%d\r\nContent-Length: %d\r\n\r\n%s",
			u.Host, accept, c.keyPrefix, i, len(body), body)
	}
	conns := make([]*rawConn, c.clients)
	return func(ctx context.Context, client, _ int) error {
		rc := conns[client]
		if rc == nil {
			nc, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			if err != nil {
				return err
			}
			rc = &rawConn{c: nc, r: bufio.NewReaderSize(nc, 4096)}
			conns[client] = rc
		}
		if d, ok := ctx.Deadline(); ok {
			rc.c.SetDeadline(d)
		}
		status, err := rc.roundTrip(reqs[client%len(reqs)])
		if err != nil {
			rc.c.Close()
			conns[client] = nil
			return err
		}
		if status != 200 {
			return fmt.Errorf("submit: HTTP %d", status)
		}
		return nil
	}, nil
}

var (
	crlf          = []byte("\r\n")
	contentLength = []byte("content-length:")
	chunked       = []byte("transfer-encoding: chunked")
)

// roundTrip writes one request and reads its response (status line,
// headers, a Content-Length or chunked body, which it discards).
func (rc *rawConn) roundTrip(req []byte) (int, error) {
	if _, err := rc.c.Write(req); err != nil {
		return 0, err
	}
	line, err := rc.r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	n, isChunked := -1, false
	for {
		line, err = rc.r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if bytes.Equal(line, crlf) {
			break
		}
		lower := bytes.ToLower(line)
		if bytes.HasPrefix(lower, contentLength) {
			n, err = strconv.Atoi(string(bytes.TrimSpace(lower[len(contentLength):])))
			if err != nil {
				return 0, fmt.Errorf("bad header %q", line)
			}
		} else if bytes.HasPrefix(lower, chunked) {
			isChunked = true
		}
	}
	switch {
	case isChunked:
		for {
			line, err = rc.r.ReadSlice('\n')
			if err != nil {
				return 0, err
			}
			size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("bad chunk size %q", line)
			}
			if _, err := rc.r.Discard(int(size) + 2); err != nil {
				return 0, err
			}
			if size == 0 {
				return status, nil
			}
		}
	case n >= 0:
		_, err = rc.r.Discard(n)
		return status, err
	}
	return 0, io.ErrUnexpectedEOF
}
