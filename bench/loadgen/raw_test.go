package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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
		job.ProgressText = strings.Repeat("progress ", 2000) // over the 1 KiB gzip threshold
	}
	return connect.NewResponse(&sluicev1.SubmitResponse{Job: job}), nil
}

// TestRawSubmitIsAConnectCall: connect-raw's hand-written request is a
// Connect unary call that connect-go's handler accepts, gzip is negotiated
// as connect-go's client negotiates it, and the connection stays usable
// across replies, gzipped ones and errors.
func TestRawSubmitIsAConnectCall(t *testing.T) {
	srv := &submitServer{}
	mux := http.NewServeMux()
	mux.Handle(sluicev1connect.NewJobServiceHandler(srv, connect.WithCompressMinBytes(1024)))
	var conns, gzipped atomic.Int64
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r)
		if w.Header().Get("Content-Encoding") == "gzip" {
			gzipped.Add(1)
		}
	}))
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
	if gzipped.Load() != 2 {
		t.Fatalf("%d replies were gzipped; want the 2 big ones", gzipped.Load())
	}
	srv.reject.Store(true)
	if err := w(ctx, 0, 6); err == nil || !strings.Contains(err.Error(), "HTTP 429") || !strings.Contains(err.Error(), "resource_exhausted") {
		t.Fatalf("a rejected call gave %v, want an HTTP 429 error with Connect's code", err)
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

	// The server drops idle connections: the next call goes out again on a new one.
	ts.Config.SetKeepAlivesEnabled(false)
	ts.CloseClientConnections()
	for i := range 2 {
		if err := w(ctx, 1, 10+i); err != nil {
			t.Fatalf("a call after the server closed the connection: %v", err)
		}
	}
	if srv.calls.Load() != 10 || conns.Load() != 4 {
		t.Fatalf("%d calls over %d connections; want 10 over 4 (a new one after the close, and after Connection: close)", srv.calls.Load(), conns.Load())
	}

	if _, err := rawSluiceWriter(config{addrs: []string{"https://example.com"}, tenants: 1}); err == nil {
		t.Fatal("an https:// address was accepted")
	}
}

// TestRawResponseReader: roundTrip reads replies with a length (the plain
// 200s without parsing them into a header map), chunked ones with a
// trailer, ones after an informational reply, and ones with no body off one
// connection, and refuses a reply that is not HTTP.
func TestRawResponseReader(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			w.Write([]byte("abc"))
			w.(http.Flusher).Flush() // a flush before the end: chunked
			w.Write([]byte(strings.Repeat("d", 5000)))
			w.Header().Set("X-Sum", "5003")
		case "/early":
			w.Header().Set("Link", "</x>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Write([]byte("ok"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
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
	}{{"/chunked", 200}, {"/plain", 200}, {"/early", 200}, {"/empty", 204}, {"/teapot", 418}, {"/chunked", 200}, {"/plain", 200}} {
		got, err := rc.roundTrip([]byte("GET " + c.path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"))
		if err != nil || got.status != c.want || got.close {
			t.Fatalf("GET %s: %+v, %v; want %d on a kept connection", c.path, got, err, c.want)
		}
	}
	if rc.fast != 2 {
		t.Fatalf("%d replies were skipped over by their length; want the 2 plain ones", rc.fast)
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
	if _, err := rc2.roundTrip([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err == nil || !strings.Contains(err.Error(), "malformed HTTP") {
		t.Fatalf("a reply that is not HTTP: %v, want a malformed HTTP error", err)
	}
}

// TestRawClientsRunConcurrently: every client dials and sends on its own
// goroutine, as measure runs them (under -race, a state shared between
// them shows here).
func TestRawClientsRunConcurrently(t *testing.T) {
	srv := &submitServer{}
	mux := http.NewServeMux()
	mux.Handle(sluicev1connect.NewJobServiceHandler(srv))
	ts := httptest.NewServer(mux)
	defer ts.Close()
	w, err := rawSluiceWriter(config{addrs: []string{ts.URL}, clients: 8, tenants: 4, keyPrefix: "key-", model: "llama-8b"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for s := range 20 {
				if err := w(ctx, i, s); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if srv.calls.Load() != 160 {
		t.Fatalf("%d calls reached the server, want 160", srv.calls.Load())
	}
}
