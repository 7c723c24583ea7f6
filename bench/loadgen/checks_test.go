package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// checkConfig is a gateway target's config as main builds it from the flags' defaults.
func checkConfig(target, addr string, clients, keys int) config {
	c := config{target: target, addrs: []string{addr}, clients: clients, keys: keys, batch: 32, pipeline: 32, conns: 1,
		domain: "bench", descriptor: "user", token: "tok", seed: 1, gzip: true,
		gcraBurst: 1000000, gcraRate: 1000000, gcraPeriod: time.Second, per: 1}
	switch target {
	case "sluice-check", "sluice-checkbatch":
		c.proto = "connect"
	case "redis-gcra-pipelined":
		c.per = c.pipeline
	}
	if target == "sluice-checkbatch" {
		c.per = c.batch
	}
	return c
}

func TestKeyPickerIsUniformPerClientAndReproducible(t *testing.T) {
	c := config{clients: 2, keys: 10, seed: 7}
	a, b := newKeyPicker(c), newKeyPicker(c)
	counts := map[string]int{}
	for range 10000 {
		x := a.id(1)
		if y := b.id(1); x != y {
			t.Fatalf("the same seed drew %s and %s", x, y)
		}
		counts[x]++
	}
	if len(counts) != 10 {
		t.Fatalf("drew %d distinct keys of 10: %v", len(counts), counts)
	}
	for k, n := range counts {
		if i, err := strconv.Atoi(k); err != nil || i < 0 || i >= 10 || n < 800 || n > 1200 {
			t.Fatalf("key %q drawn %d times of 10000", k, n)
		}
	}
	if newKeyPicker(config{clients: 1, keys: 1, seed: 1}).id(0) != "0" {
		t.Fatal("one key is not key 0")
	}
}

// startRedis runs a redis-server on a free port for the test, or skips it.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server on PATH")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	for i := 0; ; i++ {
		if rdb.Ping(context.Background()).Err() == nil {
			return addr
		}
		if i == 100 {
			t.Fatal("redis-server never answered PING")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGCRAScriptAllowsTheBurstThenRefuses runs gcra.lua through both
// redis targets: a burst of 3 at 10 a second lets 3 through at once and
// refuses the 4th; a pipeline of 5 on a fresh key is 3 allowed, 2 refused;
// the key's state expires once the bucket is full again.
func TestGCRAScriptAllowsTheBurstThenRefuses(t *testing.T) {
	addr := startRedis(t)
	ctx := context.Background()
	c := checkConfig("redis-gcra", addr, 1, 1)
	c.gcraBurst, c.gcraRate, c.gcraPeriod = 3, 10, time.Second
	f, done, err := checkCaller(c)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	var over []int
	for range 4 {
		n, o, err := f(ctx, 0, 0)
		if err != nil || n != 1 {
			t.Fatalf("check: %d, %v", n, err)
		}
		over = append(over, o)
	}
	if fmt.Sprint(over) != "[0 0 0 1]" {
		t.Fatalf("over the limit %v, want [0 0 0 1]", over)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if ttl := rdb.PTTL(ctx, "gcra:user=0").Val(); ttl <= 0 || ttl > 300*time.Millisecond {
		t.Fatalf("the key's TTL is %v, want up to 300ms (3 requests at 10/s)", ttl)
	}
	v, err := rdb.EvalSha(ctx, mustSHA(t, rdb), []string{"gcra:user=0"}, 3, 10, 1000, 1).Int64Slice()
	if err != nil || len(v) != 4 || v[0] != 0 || v[2] <= 0 || v[2] > 100 || v[3] <= 0 || v[3] > 300 {
		t.Fatalf("refused answer %v %v, want {0, 0, retry ≤ 100ms, reset ≤ 300ms}", v, err)
	}

	c = checkConfig("redis-gcra-pipelined", addr, 1, 1)
	c.gcraBurst, c.gcraRate, c.gcraPeriod, c.pipeline, c.per, c.descriptor = 3, 10, time.Second, 5, 5, "other"
	f, done2, err := checkCaller(c)
	if err != nil {
		t.Fatal(err)
	}
	defer done2()
	if n, o, err := f(ctx, 0, 0); err != nil || n != 5 || o != 2 {
		t.Fatalf("a pipeline of 5: %d checks, %d over, %v; want 5, 2", n, o, err)
	}
}

func mustSHA(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	keys, err := rdb.Do(context.Background(), "SCRIPT", "EXISTS", gcraSHA()).BoolSlice()
	if err != nil || len(keys) != 1 || !keys[0] {
		t.Fatalf("the script is not loaded: %v %v", keys, err)
	}
	return gcraSHA()
}

// rlsServer answers OVER_LIMIT for odd user ids and checks what was sent.
type rlsServer struct {
	rlsv3.UnimplementedRateLimitServiceServer
	calls atomic.Int64
	mu    sync.Mutex
	bad   string
}

func (s *rlsServer) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	s.calls.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer tok" {
		return nil, status.Error(codes.Unauthenticated, "authorization")
	}
	ds := req.GetDescriptors()
	if req.GetDomain() != "bench" || len(ds) != 1 || len(ds[0].GetEntries()) != 1 || ds[0].GetEntries()[0].GetKey() != "user" {
		s.mu.Lock()
		s.bad = req.String()
		s.mu.Unlock()
		return nil, status.Error(codes.InvalidArgument, "descriptors")
	}
	id, err := strconv.Atoi(ds[0].GetEntries()[0].GetValue())
	if err != nil || id < 0 || id >= 4 {
		return nil, status.Error(codes.InvalidArgument, "id")
	}
	code := rlsv3.RateLimitResponse_OK
	if id%2 == 1 {
		code = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	return &rlsv3.RateLimitResponse{OverallCode: code}, nil
}

// TestRLSTargetCountsOverLimitAsChecks: a closed loop against a rate limit
// service that refuses half the keys counts every answer as a check, the
// refusals in over_limit, and no errors.
func TestRLSTargetCountsOverLimitAsChecks(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	srv := &rlsServer{}
	rlsv3.RegisterRateLimitServiceServer(gs, srv)
	go gs.Serve(l)
	defer gs.Stop()

	c := checkConfig("rls", "http://"+l.Addr().String(), 4, 4)
	c.conns, c.warmup, c.duration = 2, 50*time.Millisecond, 300*time.Millisecond
	f, done, err := checkCaller(c)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	r := measure(c, f)
	if srv.bad != "" {
		t.Fatalf("bad request %s", srv.bad)
	}
	if r.errors != 0 || r.checks < 100 || r.checks != int64(len(r.lat)) {
		t.Fatalf("%d checks in %d calls, %d errors %v", r.checks, len(r.lat), r.errors, r.first)
	}
	if frac := float64(r.overLimit) / float64(r.checks); frac < 0.4 || frac > 0.6 {
		t.Fatalf("%d of %d over the limit, want about half", r.overLimit, r.checks)
	}
	// Without the token every call fails, and each failure is an error.
	c.token = ""
	f, done2, err := checkCaller(c)
	if err != nil {
		t.Fatal(err)
	}
	defer done2()
	if n, _, err := f(context.Background(), 0, 0); n != 0 || status.Code(err) != codes.Unauthenticated || !strings.HasPrefix(errString(err), "Unauthenticated") {
		t.Fatalf("no token: %d, %v", n, err)
	}
}

// limitServer refuses checks whose key ends in an odd digit.
type limitServer struct {
	sluicev1connect.UnimplementedLimitServiceHandler
	checks atomic.Int64
	bad    atomic.Value
}

func (s *limitServer) verdict(h http.Header, r *sluicev1.CheckRequest) *sluicev1.CheckResponse {
	s.checks.Add(1)
	if h.Get("Authorization") != "Bearer tok" || !strings.HasPrefix(r.GetKey(), "user=") {
		s.bad.Store(fmt.Sprint(h.Get("Authorization"), r))
	}
	v := sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED
	if k := r.GetKey(); (k[len(k)-1]-'0')%2 == 1 {
		v = sluicev1.CheckVerdict_CHECK_VERDICT_REFUSED
	}
	return &sluicev1.CheckResponse{Verdict: v}
}

func (s *limitServer) Check(_ context.Context, req *connect.Request[sluicev1.CheckRequest]) (*connect.Response[sluicev1.CheckResponse], error) {
	return connect.NewResponse(s.verdict(req.Header(), req.Msg)), nil
}

func (s *limitServer) CheckBatch(_ context.Context, req *connect.Request[sluicev1.CheckBatchRequest]) (*connect.Response[sluicev1.CheckBatchResponse], error) {
	res := &sluicev1.CheckBatchResponse{}
	for _, c := range req.Msg.GetChecks() {
		res.Results = append(res.Results, s.verdict(req.Header(), c))
	}
	return connect.NewResponse(res), nil
}

// TestCheckBatchCountsChecksAndOffersRateInChecks: CheckBatch's calls carry
// -batch checks each; the throughput and -rate count checks, the latencies
// calls, and a refused check is a completed one.
func TestCheckBatchCountsChecksAndOffersRateInChecks(t *testing.T) {
	srv := &limitServer{}
	mux := http.NewServeMux()
	mux.Handle(sluicev1connect.NewLimitServiceHandler(srv))
	ts := httptest.NewServer(mux)
	defer ts.Close()

	c := checkConfig("sluice-checkbatch", ts.URL, 4, 1000)
	c.batch, c.per = 10, 10
	c.warmup, c.duration, c.rate = 100*time.Millisecond, time.Second, 2000 // 200 calls a second
	f, done, err := checkCaller(c)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	r := measure(c, f)
	if b := srv.bad.Load(); b != nil {
		t.Fatalf("bad check %v", b)
	}
	if r.errors != 0 || r.checks != 10*int64(len(r.lat)) {
		t.Fatalf("%d checks in %d calls, %d errors %v", r.checks, len(r.lat), r.errors, r.first)
	}
	if len(r.lat) < 180 || len(r.lat) > 220 || r.finished < 1800 || r.finished > 2200 {
		t.Fatalf("%d calls, %d checks finished in the window at 2000 checks/s offered in calls of 10", len(r.lat), r.finished)
	}
	if frac := float64(r.overLimit) / float64(r.checks); frac < 0.4 || frac > 0.6 {
		t.Fatalf("%d of %d refused, want about half", r.overLimit, r.checks)
	}

	c = checkConfig("sluice-check", ts.URL, 2, 1)
	f, done2, err := checkCaller(c)
	if err != nil {
		t.Fatal(err)
	}
	defer done2()
	if n, o, err := f(context.Background(), 0, 0); n != 1 || o != 0 || err != nil { // key user=0: allowed
		t.Fatalf("Check: %d, %d, %v", n, o, err)
	}
}

// TestFailedCallsCountEachCheckAsAnError: a failed call of N checks is N
// errors and no latency.
func TestFailedCallsCountEachCheckAsAnError(t *testing.T) {
	c := config{clients: 1, warmup: 0, duration: 100 * time.Millisecond, per: 8}
	r := measure(c, func(context.Context, int, int) (int, int, error) {
		time.Sleep(5 * time.Millisecond)
		return 0, 0, fmt.Errorf("boom")
	})
	if len(r.lat) != 0 || r.checks != 0 || r.errors == 0 || r.errors%8 != 0 {
		t.Fatalf("%d latencies, %d checks, %d errors", len(r.lat), r.checks, r.errors)
	}
}
