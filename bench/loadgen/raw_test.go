package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// submitServer is a JobService whose Submit checks what connect-go's
// handler decoded from a -proto connect-raw request.
type submitServer struct {
	sluicev1connect.UnimplementedJobServiceHandler
	calls  atomic.Int64
	reject atomic.Bool
	big    atomic.Bool
	bad    atomic.Value // string: what was wrong with a request
}

func (s *submitServer) Submit(_ context.Context, req *connect.Request[sluicev1.SubmitRequest]) (*connect.Response[sluicev1.SubmitResponse], error) {
	s.calls.Add(1)
	if got := req.Msg.GetSpec().GetModel(); got != "llama-8b" {
		s.bad.Store("model " + got)
	}
	if got := req.Header().Get("Authorization"); !strings.HasPrefix(got, "Bearer key-") {
		s.bad.Store("authorization " + got)
	}
	if got := req.Spec().Procedure; got != sluicev1connect.JobServiceSubmitProcedure {
		s.bad.Store("procedure " + got)
	}
	if s.reject.Load() {
		return nil, connect.NewError(connect.CodeResourceExhausted, nil)
	}
	job := &sluicev1.Job{Id: "j1", Tenant: "t"}
	if s.big.Load() {
		// Big enough to be gzipped.
		job.ProgressText = strings.Repeat("progress ", 2000)
	}
	return connect.NewResponse(&sluicev1.SubmitResponse{Job: job}), nil
}

// TestRawSubmitIsAConnectCall: connect-raw's hand-written request is a
// Connect unary call that connect-go's handler accepts, and its response
// reader keeps the connection usable across replies, gzipped ones and
// errors.
func TestRawSubmitIsAConnectCall(t *testing.T) {
	srv := &submitServer{}
	mux := http.NewServeMux()
	mux.Handle(sluicev1connect.NewJobServiceHandler(srv, connect.WithCompressMinBytes(1024)))
	var conns atomic.Int64
	ts := httptest.NewUnstartedServer(mux)
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	defer ts.Close()

	c := config{addrs: []string{ts.URL}, clients: 2, tenants: 4, keyPrefix: "key-", model: "llama-8b", gzip: true}
	w, err := rawSluiceWriter(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 6 {
		srv.big.Store(i == 2 || i == 3)
		if err := w(ctx, i%2, i/2); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	srv.reject.Store(true)
	if err := w(ctx, 0, 6); err == nil || !strings.Contains(err.Error(), "HTTP 429") {
		t.Fatalf("a rejected call gave %v, want an HTTP 429 error", err)
	}
	srv.reject.Store(false)
	if err := w(ctx, 0, 7); err != nil {
		t.Fatalf("the call after an error: %v", err)
	}
	if bad := srv.bad.Load(); bad != nil {
		t.Fatalf("the handler got a wrong request: %v", bad)
	}
	if srv.calls.Load() != 8 || conns.Load() != 2 {
		t.Fatalf("%d calls over %d connections; want 8 over 2 (one kept alive per client)", srv.calls.Load(), conns.Load())
	}

	if _, err := rawSluiceWriter(config{addrs: []string{"https://example.com"}, tenants: 1}); err == nil {
		t.Fatal("an https:// address was accepted")
	}
}

// TestRawResponseReader: roundTrip reads a reply with a length and a
// chunked one off one connection, and refuses a reply that is not HTTP/1.1.
func TestRawResponseReader(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("abc"))
			w.(http.Flusher).Flush() // a flush before the end: chunked
			w.Write([]byte(strings.Repeat("d", 5000)))
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
			w.Write([]byte("no"))
		default:
			w.Write([]byte("ok"))
		}
	}))
	defer ts.Close()
	host := strings.TrimPrefix(ts.URL, "http://")
	nc, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc := &rawConn{c: nc, r: bufio.NewReader(nc)}
	for _, c := range []struct {
		path string
		want int
	}{{"/chunked", 200}, {"/plain", 200}, {"/teapot", 418}, {"/chunked", 200}, {"/plain", 200}} {
		got, err := rc.roundTrip([]byte("GET " + c.path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"))
		if err != nil || got != c.want {
			t.Fatalf("GET %s: %d, %v; want %d", c.path, got, err, c.want)
		}
	}

	bad, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	go func() {
		c, err := bad.Accept()
		if err == nil {
			c.Write([]byte("SSH-2.0-nope\r\n"))
			c.Close()
		}
	}()
	nc2, err := net.Dial("tcp", bad.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	rc2 := &rawConn{c: nc2, r: bufio.NewReader(nc2)}
	if _, err := rc2.roundTrip([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err == nil || !strings.Contains(err.Error(), "bad status line") {
		t.Fatalf("a reply that is not HTTP: %v, want a bad status line error", err)
	}
}
