// Command loadgen drives a write load at a Sluice cluster (Submit) or an
// etcd cluster (Put) from N concurrent clients for a fixed time, and prints
// the writes per second and the latency p50/p99/max of the writes that
// started and finished inside the measured window (after a warm-up).
// Every latency is kept and sorted, so the percentiles are exact.
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
// The last line it prints is machine-readable (RESULT key=value ...), for
// bench/cluster.sh.
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
}

func main() {
	var c config
	var addrs string
	flag.StringVar(&c.target, "target", "sluice", "what to load: sluice (JobService/Submit) or etcd (KV/Put)")
	flag.StringVar(&addrs, "addr", "http://127.0.0.1:7700", "comma-separated base URLs; sluice: the first is used; etcd: the leader among them is found and used")
	flag.StringVar(&c.proto, "proto", "", "wire protocol; sluice: connect (Connect over HTTP/1.1, the default), connect-raw (the same calls written on plain keep-alive TCP connections, one per client, without net/http's client: a lighter load generator) or grpc (gRPC over h2c); etcd: grpc (over h2c, as etcd's Go client; the default) or json (the v3 JSON gateway over HTTP/1.1)")
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
	flag.DurationVar(&c.timeline, "timeline", 0, "if set, also print the window in slices of this length (by when each write finished): writes/s, p50, p99 and max of each, to see when the slow writes happen")
	flag.Parse()
	c.addrs = strings.Split(addrs, ",")
	if c.clients < 1 || c.duration <= 0 || c.warmup < 0 || c.tenants < 1 || c.valueSize < 0 || c.rate < 0 {
		fmt.Fprintln(os.Stderr, "loadgen: -clients, -duration and -tenants must be positive; -warmup, -value-size and -rate non-negative")
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

func run(c config) error {
	var (
		w     writer
		where string
		err   error
	)
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
	default:
		return fmt.Errorf("-target: %q is not sluice or etcd", c.target)
	}
	if err != nil {
		return err
	}
	r := measure(c, w)
	r.print(c, where)
	if c.timeline > 0 {
		r.printTimeline(c.timeline)
	}
	if r.errors > 0 && r.errors*100 > int64(len(r.lat)) {
		return fmt.Errorf("%d of %d writes failed", r.errors, r.errors+int64(len(r.lat)))
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
	lat    []time.Duration
	done   []timed // with -timeline: every kept write, by when it finished
	errors int64
	first  []string
	total  int64 // successful writes over the whole run, warm-up and edges included
	// finished counts the successful writes that finished in the window, whenever they were
	// sent or due: with -rate, the throughput the cluster delivered.
	finished int64
	// cpu is the load generator's own CPU time (user + system) over the whole run, warm-up
	// included: on a machine it shares with the servers, what it takes from them; -1 when
	// the system does not say.
	cpu time.Duration
}

// measure runs the clients through the warm-up and the window. In a closed
// loop a write counts if it started at or after the window opened and
// finished before it closed; with -rate, if it was due in the window.
func measure(c config, w writer) result {
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
	start := time.Now()
	var every time.Duration // with -rate: how often each client is due to send
	if c.rate > 0 {
		every = time.Duration(float64(c.clients) / c.rate * float64(time.Second))
	}
	for i := range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			var done []timed
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
				err := w(ctx, i, seq)
				t1 := time.Now()
				cancel()
				o, cl := open.Load(), closed.Load()
				if err == nil {
					total.Add(1)
					if o != 0 && t1.UnixNano() >= o && (cl == 0 || t1.UnixNano() < cl) {
						finished.Add(1)
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
					r.errors++
					if len(r.first) < 5 {
						r.first = append(r.first, errString(err))
					}
					mu.Unlock()
					continue
				}
				lat = append(lat, t1.Sub(t0))
				if c.timeline > 0 {
					done = append(done, timed{time.Duration(t1.UnixNano() - o), t1.Sub(t0)})
				}
			}
			per[i], perDone[i] = lat, done
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
	for _, l := range per {
		r.lat = append(r.lat, l...)
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
	rate := float64(len(r.lat)) / r.window.Seconds()
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
	fmt.Printf("%s: %s via %s at %s: %d clients, %s, %d writes in %.1fs: %.0f/s, p50 %s ms, p99 %s ms, max %s ms, %d errors; load generator CPU %d µs per write\n",
		label, c.target, c.proto, where, c.clients, offered, len(r.lat), r.window.Seconds(), rate, ms(p50), ms(p99), ms(mx), r.errors, clientUS)
	for _, e := range r.first {
		fmt.Println("  error:", e)
	}
	fmt.Printf("RESULT label=%s target=%s proto=%s gzip=%v clients=%d offered=%.0f writes=%d rate=%.0f p50_ms=%s p99_ms=%s max_ms=%s errors=%d total=%d client_cpu_us=%d\n",
		label, c.target, c.proto, c.gzip && c.target == "sluice", c.clients, c.rate, len(r.lat), rate, ms(p50), ms(p99), ms(mx), r.errors, r.total, clientUS)
}
