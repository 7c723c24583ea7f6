// Command loadgen drives a write load at a Sluice cluster (Submit) or an
// etcd cluster (Put), or a rate-limit check load at a gateway rate limiter
// (Redis running a GCRA script, the Envoy rate limit service of
// envoyproxy/ratelimit or of Sluice, Sluice's LimitService), from N
// concurrent clients for a fixed time, and prints the writes (checks) per
// second and the latency p50/p99/max of the calls that started and finished
// inside the measured window (after a warm-up). Every latency is kept and
// sorted, so the percentiles are exact.
//
// By default each client sends its next write as soon as the last one is
// acknowledged (a closed loop: the load is whatever the cluster can take).
// With -rate the clients together offer that many writes per second, each
// on its own schedule (client i every clients/rate seconds, the clients'
// phases spread evenly); a write's latency is counted from when it was due,
// not from when it was sent, so a write held back by a slow one before it
// counts the wait (as wrk2 does; without that, "coordinated omission" would
// hide the stalls). The latencies are those of every write due in the
// window, however late it finished; the throughput counts the writes that
// finished in the window. A rate above what the cluster takes shows as a
// throughput below it and latencies that grow with the run.
//
//	go run ./bench/loadgen -target sluice -addr http://127.0.0.1:17701 -clients 16
//	go run ./bench/loadgen -target etcd -addr http://127.0.0.1:23791,http://127.0.0.1:23792 -clients 16
//
// The gateway targets (bench/gateway.sh) send checks, each for a key drawn
// uniformly from -keys by the client's own generator:
//
//	-target redis-gcra            EVALSHA of bench/gateway/gcra.lua, one per call (go-redis, a connection per client)
//	-target redis-gcra-pipelined  -pipeline EVALSHAs per call, in one pipeline
//	-target rls                   envoy.service.ratelimit.v3 ShouldRateLimit (grpc-go over h2c), descriptor [(user, id)]
//	-target sluice-check          sluice.v1.LimitService/Check, key "user=<id>"
//	-target sluice-checkbatch     sluice.v1.LimitService/CheckBatch of -batch checks
//
//	go run ./bench/loadgen -target redis-gcra -addr 127.0.0.1:6390 -clients 64 -keys 1000000
//	go run ./bench/loadgen -target rls -addr http://127.0.0.1:17701 -token gw -clients 64
//
// A call that carries several checks (-batch, -pipeline) has one latency,
// the call's round trip; the throughput counts checks, and so does -rate
// (the clients together start rate/N calls of N checks a second). A check
// answered over the limit is a completed check (counted in over_limit=);
// a failed call counts each of its checks as an error.
//
// The last line it prints is machine-readable (RESULT key=value ...), for
// bench/cluster.sh and bench/gateway.sh.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

type config struct {
	target, proto, label string
	addrs                []string
	clients              int
	warmup, duration     time.Duration
	keyPrefix            string
	tenants              int
	model                string
	valueSize            int
	gzip                 bool
	timeline             time.Duration
	rate                 float64
	// The gateway targets.
	token, domain, descriptor string
	keys, batch, pipeline     int
	conns                     int
	seed                      uint64
	gcraBurst, gcraRate       int64
	gcraPeriod                time.Duration
	per                       int // checks per call: -batch, -pipeline or 1
}

func main() {
	var c config
	var addrs string
	flag.StringVar(&c.target, "target", "sluice", "what to load: sluice (JobService/Submit), etcd (KV/Put), or a gateway rate limiter: redis-gcra, redis-gcra-pipelined, rls, sluice-check, sluice-checkbatch")
	flag.StringVar(&addrs, "addr", "http://127.0.0.1:7700", "comma-separated base URLs; sluice: the first is used; etcd: the leader among them is found and used; gateway targets: the first (redis: host:port)")
	flag.StringVar(&c.proto, "proto", "", "wire protocol; sluice: connect (Connect over HTTP/1.1, the default), connect-raw (the same calls written on plain keep-alive TCP connections, one per client, without net/http's client: a lighter load generator) or grpc (gRPC over h2c); etcd: grpc (over h2c, as etcd's Go client; the default) or json (the v3 JSON gateway over HTTP/1.1); sluice-check and sluice-checkbatch: connect (the default) or grpc; rls: grpc; redis: resp")
	flag.IntVar(&c.clients, "clients", 16, "concurrent clients, each with one request in flight")
	flag.DurationVar(&c.warmup, "warmup", 2*time.Second, "load applied before measuring")
	flag.DurationVar(&c.duration, "duration", 8*time.Second, "measured window")
	flag.StringVar(&c.keyPrefix, "key-prefix", "bench-key-", "sluice: API keys are this prefix plus 0..tenants-1; client i uses key i mod tenants")
	flag.IntVar(&c.tenants, "tenants", 64, "sluice: number of tenant API keys")
	flag.StringVar(&c.model, "model", "llama-8b", "sluice: the model of every submitted job")
	flag.IntVar(&c.valueSize, "value-size", 100, "etcd: bytes per value (keys are bench/<client>/<seq>); 100 makes a Put about the size of a Submit's 111-byte raft entry")
	flag.BoolVar(&c.gzip, "gzip", true, "sluice: accept gzip-compressed responses, as connect-go clients (the sluice CLI among them) do by default; false asks for them uncompressed")
	flag.StringVar(&c.label, "label", "", "a name for this run, echoed in the RESULT line")
	flag.Float64Var(&c.rate, "rate", 0, "writes per second offered by all clients together, each client on its own schedule, latency counted from when a write was due (an open loop); 0: each client sends its next write when the last is acknowledged (a closed loop)")
	flag.StringVar(&c.token, "token", "", "gateway targets: the gateway token (Authorization: Bearer, or gRPC metadata authorization for rls)")
	flag.IntVar(&c.keys, "keys", 1, "gateway targets: distinct keys; each check draws one uniformly")
	flag.IntVar(&c.batch, "batch", 32, "sluice-checkbatch: checks per CheckBatch call")
	flag.IntVar(&c.pipeline, "pipeline", 32, "redis-gcra-pipelined: EVALSHAs per pipeline")
	flag.IntVar(&c.conns, "conns", 1, "rls: shared gRPC connections (client i uses i mod conns); Envoy keeps one HTTP/2 connection to a rate limit service per worker")
	flag.StringVar(&c.domain, "domain", "bench", "rls: the request's domain")
	flag.StringVar(&c.descriptor, "descriptor", "user", "gateway targets: the key's name: rls sends the descriptor [(name, id)], sluice-check the key name=id, redis the key gcra:name=id")
	flag.Uint64Var(&c.seed, "seed", 1, "gateway targets: seed of the clients' key generators (client i's is PCG(seed, i))")
	flag.Int64Var(&c.gcraBurst, "gcra-burst", 1000000, "redis targets: GCRA burst")
	flag.Int64Var(&c.gcraRate, "gcra-rate", 1000000, "redis targets: GCRA requests per -gcra-period")
	flag.DurationVar(&c.gcraPeriod, "gcra-period", time.Second, "redis targets: GCRA period")
	flag.DurationVar(&c.timeline, "timeline", 0, "if set, also print the window in slices of this length (by when each write finished): writes/s, p50, p99 and max of each, to see when the slow writes happen")
	flag.Parse()
	c.addrs = strings.Split(addrs, ",")
	if c.clients < 1 || c.duration <= 0 || c.warmup < 0 || c.tenants < 1 || c.valueSize < 0 || c.rate < 0 ||
		c.keys < 1 || c.batch < 1 || c.pipeline < 1 || c.conns < 1 || c.gcraBurst < 1 || c.gcraRate < 1 || c.gcraPeriod < time.Millisecond {
		fmt.Fprintln(os.Stderr, "loadgen: -clients, -duration, -tenants, -keys, -batch, -pipeline, -conns, -gcra-burst and -gcra-rate must be positive, -gcra-period at least 1ms; -warmup, -value-size and -rate non-negative")
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// writer sends one write and waits for its acknowledgement; client is the
// index of the calling client, seq the count of its earlier writes.
type writer func(ctx context.Context, client, seq int) error

// call sends one request and waits for its answer: one write, or one or
// more checks. It returns how many checks (writes) were answered and how
// many of those were over the limit; with an error, every check it carried
// failed.
type call func(ctx context.Context, client, seq int) (n, overLimit int, err error)

func (w writer) call() call {
	return func(ctx context.Context, client, seq int) (int, int, error) {
		if err := w(ctx, client, seq); err != nil {
			return 0, 0, err
		}
		return 1, 0, nil
	}
}

func run(c config) error {
	var (
		w     writer
		f     call
		where string
		err   error
	)
	c.per = 1
	switch c.target {
	case "sluice":
		if c.proto == "" {
			c.proto = "connect"
		}
		w, err = sluiceWriter(c)
		where = c.addrs[0]
	case "etcd":
		if c.proto == "" {
			c.proto = "grpc"
		}
		where, err = etcdLeader(c.addrs)
		if err != nil {
			return err
		}
		w, err = etcdWriter(c, where)
	case "redis-gcra", "redis-gcra-pipelined", "rls", "sluice-check", "sluice-checkbatch":
		switch c.target {
		case "redis-gcra-pipelined":
			c.per = c.pipeline
		case "sluice-checkbatch":
			c.per = c.batch
		}
		if c.proto == "" {
			c.proto = map[string]string{"rls": "grpc", "sluice-check": "connect", "sluice-checkbatch": "connect"}[c.target]
			if c.proto == "" {
				c.proto = "resp"
			}
		}
		var done func()
		f, done, err = checkCaller(c)
		if err != nil {
			return err
		}
		defer done()
		where = c.addrs[0]
	default:
		return fmt.Errorf("-target: %q is not sluice, etcd, redis-gcra, redis-gcra-pipelined, rls, sluice-check or sluice-checkbatch", c.target)
	}
	if err != nil {
		return err
	}
	if f == nil {
		f = w.call()
	}
	r := measure(c, f)
	r.print(c, where)
	if c.timeline > 0 {
		r.printTimeline(c.timeline)
	}
	if r.errors > 0 && r.errors*100 > r.checks {
		return fmt.Errorf("%d of %d checks (writes) failed", r.errors, r.errors+r.checks)
	}
	return nil
}

// transport is one shared client transport: HTTP/1.1 with an idle
// connection kept for every client, or HTTP/2 without TLS (prior knowledge),
// multiplexing every client over few connections as gRPC clients do.
func transport(h2c bool, clients int) *http.Client {
	t := &http.Transport{
		MaxIdleConns:        clients + 16,
		MaxIdleConnsPerHost: clients + 16,
		DisableCompression:  true,
	}
	if h2c {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: t}
}

func sluiceWriter(c config) (writer, error) {
	var opts []connect.ClientOption
	switch c.proto {
	case "connect":
	case "grpc":
		opts = append(opts, connect.WithGRPC())
	case "connect-raw":
		return rawSluiceWriter(c)
	default:
		return nil, fmt.Errorf("-proto: %q is not connect, connect-raw or grpc for sluice", c.proto)
	}
	if !c.gzip {
		opts = append(opts, connect.WithAcceptCompression("gzip", nil, nil))
	}
	hc := transport(c.proto == "grpc", c.clients)
	js := sluicev1connect.NewJobServiceClient(hc, strings.TrimSuffix(c.addrs[0], "/"), opts...)
	keys := make([]string, c.tenants)
	for i := range keys {
		keys[i] = "Bearer " + c.keyPrefix + fmt.Sprint(i)
	}
	return func(ctx context.Context, client, _ int) error {
		req := connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: c.model}})
		req.Header().Set("Authorization", keys[client%len(keys)])
		_, err := js.Submit(ctx, req)
		return err
	}, nil
}

// rawCodec passes protobuf bytes through untouched, so that etcd's
// messages need no generated code: a request is a *[]byte encoded with
// protowire, a response a *[]byte.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(m any) ([]byte, error) {
	b, ok := m.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: %T is not *[]byte", m)
	}
	return *b, nil
}
func (rawCodec) Unmarshal(data []byte, m any) error {
	b, ok := m.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: %T is not *[]byte", m)
	}
	*b = append((*b)[:0], data...)
	return nil
}

// etcdPut encodes etcdserverpb.PutRequest{key: 1, value: 2}.
func etcdPut(key, value []byte) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, key)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	return protowire.AppendBytes(b, value)
}

func etcdWriter(c config, addr string) (writer, error) {
	value := bytes.Repeat([]byte{'v'}, c.valueSize)
	switch c.proto {
	case "grpc":
		hc := transport(true, c.clients)
		kv := connect.NewClient[[]byte, []byte](hc, addr+"/etcdserverpb.KV/Put", connect.WithGRPC(), connect.WithCodec(rawCodec{}))
		return func(ctx context.Context, client, seq int) error {
			body := etcdPut(fmt.Appendf(nil, "bench/%d/%d", client, seq), value)
			_, err := kv.CallUnary(ctx, connect.NewRequest(&body))
			return err
		}, nil
	case "json":
		hc := transport(false, c.clients)
		val := base64.StdEncoding.EncodeToString(value)
		return func(ctx context.Context, client, seq int) error {
			body := fmt.Sprintf(`{"key":%q,"value":%q}`, base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "bench/%d/%d", client, seq)), val)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, addr+"/v3/kv/put", strings.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			msg, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("etcd put: %s: %s", resp.Status, bytes.TrimSpace(msg))
			}
			return nil
		}, nil
	}
	return nil, fmt.Errorf("-proto: %q is not grpc or json for etcd", c.proto)
}

// etcdLeader asks each endpoint's JSON gateway for its status and returns
// the one that is the leader, so that writes are not forwarded (as they are
// not for Sluice, which the benchmark also loads at its leader).
func etcdLeader(addrs []string) (string, error) {
	for _, a := range addrs {
		a = strings.TrimSuffix(a, "/")
		resp, err := http.Post(a+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
		if err != nil {
			continue
		}
		var st struct {
			Header struct {
				MemberID string `json:"member_id"`
			} `json:"header"`
			Leader string `json:"leader"`
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err == nil && st.Leader != "" && st.Leader == st.Header.MemberID {
			return a, nil
		}
	}
	return "", fmt.Errorf("no etcd leader among %v", addrs)
}

type result struct {
	window time.Duration
	lat    []time.Duration // one per kept call
	done   []timed         // with -timeline: every kept call, by when it finished
	// checks counts the checks (writes) of the kept calls, overLimit those of them
	// answered over the limit; errors the checks of the calls that failed.
	checks, overLimit int64
	errors            int64
	first             []string
	total             int64 // checks (writes) answered over the whole run, warm-up and edges included
	// finished counts the checks (writes) answered in the window, whenever they were
	// sent or due: with -rate, the throughput the system delivered.
	finished int64
	// cpu is the load generator's own CPU time (user + system) over the whole run, warm-up
	// included: on a machine it shares with the servers, what it takes from them; -1 when
	// the system does not say.
	cpu time.Duration
}

// measure runs the clients through the warm-up and the window. In a closed
// loop a call counts if it started at or after the window opened and
// finished before it closed; with -rate, if it was due in the window.
func measure(c config, w call) result {
	var (
		open, closed atomic.Int64 // unix nanoseconds; 0 until set
		stop         atomic.Bool
		wg           sync.WaitGroup
		mu           sync.Mutex
		r            result
		total        atomic.Int64
		finished     atomic.Int64 // successful writes that finished in the window
	)
	per := make([][]time.Duration, c.clients)
	perDone := make([][]timed, c.clients)
	perChecks := make([][2]int64, c.clients) // checks and over-limit answers of the kept calls
	start := time.Now()
	var every time.Duration // with -rate: how often each client is due to send
	if c.rate > 0 {
		every = time.Duration(float64(c.clients) * float64(max(c.per, 1)) / c.rate * float64(time.Second))
	}
	for i := range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			var done []timed
			var kept [2]int64
			// pastWindow: with -rate, a write due once the window has closed is not sent.
			pastWindow := func(due time.Time) bool {
				cl := closed.Load()
				return cl != 0 && due.UnixNano() >= cl
			}
			for seq := 0; ; seq++ {
				var due time.Time
				if every > 0 {
					// Due at its slot; a write that is late goes at once and its latency
					// still counts from the slot. After the window the client goes on
					// until every write due in it has been sent and answered.
					due = start.Add(every*time.Duration(seq) + every*time.Duration(i)/time.Duration(c.clients))
					if pastWindow(due) {
						break
					}
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
					if pastWindow(due) {
						break
					}
				} else if stop.Load() {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				t0 := time.Now()
				if every > 0 {
					t0 = due
				}
				n, over, err := w(ctx, i, seq)
				t1 := time.Now()
				cancel()
				o, cl := open.Load(), closed.Load()
				if err == nil {
					total.Add(int64(n))
					if o != 0 && t1.UnixNano() >= o && (cl == 0 || t1.UnixNano() < cl) {
						finished.Add(int64(n))
					}
				}
				if o == 0 || t0.UnixNano() < o {
					continue
				}
				// A closed loop keeps the writes that finished in the window; an open loop
				// the writes due in it, however late they finished.
				if every == 0 && cl != 0 && t1.UnixNano() > cl {
					continue
				}
				if err != nil {
					mu.Lock()
					r.errors += int64(max(c.per, 1))
					if len(r.first) < 5 {
						r.first = append(r.first, errString(err))
					}
					mu.Unlock()
					continue
				}
				lat = append(lat, t1.Sub(t0))
				kept[0] += int64(n)
				kept[1] += int64(over)
				if c.timeline > 0 {
					done = append(done, timed{time.Duration(t1.UnixNano() - o), t1.Sub(t0)})
				}
			}
			per[i], perDone[i], perChecks[i] = lat, done, kept
		}()
	}
	time.Sleep(c.warmup)
	t0 := time.Now()
	open.Store(t0.UnixNano())
	time.Sleep(c.duration)
	t1 := time.Now()
	closed.Store(t1.UnixNano())
	stop.Store(true)
	wg.Wait()
	r.window = t1.Sub(t0)
	r.total, r.finished = total.Load(), finished.Load()
	r.cpu = -1
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for i, l := range per {
		r.lat = append(r.lat, l...)
		r.checks += perChecks[i][0]
		r.overLimit += perChecks[i][1]
	}
	slices.Sort(r.lat)
	for _, d := range perDone {
		r.done = append(r.done, d...)
	}
	return r
}

// timed is a write's latency and when it finished, from the window's opening.
type timed struct{ at, lat time.Duration }

// printTimeline prints the window in slices of about length every, from
// its opening to its end (a slice in which no write finished shows as 0/s;
// the last one ends with the window, and its rate is over its own length).
func (r result) printTimeline(every time.Duration) {
	slices.SortFunc(r.done, func(a, b timed) int { return cmp.Compare(a.at, b.at) })
	fmt.Printf("| from s | writes/s | p50 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|\n")
	n := max(1, int((r.window+every/2)/every))
	i := 0
	for k := range n {
		from, end := time.Duration(k)*every, time.Duration(k+1)*every
		if k == n-1 {
			end = r.window
		}
		var lat []time.Duration
		for ; i < len(r.done) && r.done[i].at < end; i++ {
			lat = append(lat, r.done[i].lat)
		}
		slices.Sort(lat)
		var mx time.Duration
		if len(lat) > 0 {
			mx = lat[len(lat)-1]
		}
		fmt.Printf("| %.2f | %.0f | %s | %s | %s |\n", from.Seconds(), float64(len(lat))/(end-from).Seconds(),
			ms(quantile(lat, 0.5)), ms(quantile(lat, 0.99)), ms(mx))
	}
}

func errString(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code().String() + ": " + ce.Message()
	}
	if st, ok := status.FromError(err); ok {
		return st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}

// quantile is the exact q-quantile of sorted latencies (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)) + 0.5)
	i = min(max(i-1, 0), len(sorted)-1)
	return sorted[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func (r result) print(c config, where string) {
	label := c.label
	if label == "" {
		label = c.target
	}
	rate := float64(r.checks) / r.window.Seconds()
	if c.rate > 0 {
		// Behind schedule, writes due in the window finish after it: count what finished.
		rate = float64(r.finished) / r.window.Seconds()
	}
	p50, p99 := quantile(r.lat, 0.50), quantile(r.lat, 0.99)
	var mx time.Duration
	if len(r.lat) > 0 {
		mx = r.lat[len(r.lat)-1]
	}
	offered := "all they can (closed loop)"
	if c.rate > 0 {
		offered = fmt.Sprintf("%.0f/s offered", c.rate)
	}
	clientUS := int64(-1)
	if r.total > 0 && r.cpu >= 0 {
		clientUS = r.cpu.Microseconds() / r.total
	}
	gateway := c.target != "sluice" && c.target != "etcd"
	if gateway {
		fmt.Printf("%s: %s via %s at %s: %d clients, %d keys, %d checks a call, %s, %d calls, %d checks (%d over the limit) in %.1fs: %.0f checks/s, call p50 %s ms, p99 %s ms, max %s ms, %d checks failed; load generator CPU %d µs per check\n",
			label, c.target, c.proto, where, c.clients, c.keys, c.per, offered, len(r.lat), r.checks, r.overLimit, r.window.Seconds(), rate, ms(p50), ms(p99), ms(mx), r.errors, clientUS)
	} else {
		fmt.Printf("%s: %s via %s at %s: %d clients, %s, %d writes in %.1fs: %.0f/s, p50 %s ms, p99 %s ms, max %s ms, %d errors; load generator CPU %d µs per write\n",
			label, c.target, c.proto, where, c.clients, offered, len(r.lat), r.window.Seconds(), rate, ms(p50), ms(p99), ms(mx), r.errors, clientUS)
	}
	for _, e := range r.first {
		fmt.Println("  error:", e)
	}
	// For the gateway targets rate is checks/s, writes the calls (of per checks each),
	// errors the checks of the calls that failed, over_limit the checks answered over the limit.
	fmt.Printf("RESULT label=%s target=%s proto=%s gzip=%v clients=%d offered=%.0f writes=%d rate=%.0f p50_ms=%s p99_ms=%s max_ms=%s errors=%d total=%d client_cpu_us=%d",
		label, c.target, c.proto, c.gzip && (c.target == "sluice" || strings.HasPrefix(c.target, "sluice-")), c.clients, c.rate, len(r.lat), rate, ms(p50), ms(p99), ms(mx), r.errors, r.total, clientUS)
	if gateway {
		fmt.Printf(" keys=%d per_call=%d checks=%d over_limit=%d", c.keys, c.per, r.checks, r.overLimit)
	}
	fmt.Println()
}
