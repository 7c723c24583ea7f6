package gpuexec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// LeaderHeader is the response header in which a node that does not lead
// names the leader's API (http://host:port).
const LeaderHeader = "Sluice-Leader"

// KeepaliveHeader, on a lease stream's response, is how often the leader
// sends a message on it when it has nothing else to say (a Go duration). An
// agent that hears nothing for three times that ends the stream: the leader is
// paused or cut off though the connection is open. A server that does not
// send it (a build before keepalives) is given the heartbeats only.
const KeepaliveHeader = "Sluice-Lease-Keepalive"

// silentServerPause is how long an agent leaves a server alone after its
// lease stream fell silent, when there are others to try.
const silentServerPause = 10 * time.Second

// Agent is the executor's side of the lease protocol: it holds a lease
// stream open to the leader (found through any server), runs the attempts
// it is assigned with its Runner, heartbeats the attempts it runs, and
// reports progress and outcomes (to any server; followers forward them).
//
// An attempt survives a leader change: the agent reconnects, lists what it
// runs in its new lease, and reports the outcome to whoever leads then. The
// attempt number fences a report the log no longer wants.
type Agent struct {
	Info    *sluicev1.ExecutorInfo
	Servers []string // base URLs, e.g. http://127.0.0.1:7700
	// Discover, if set, adds servers found at run time (through gossip).
	Discover func() []string
	Runner   Runner
	// Token is the executor token (Authorization: Bearer); empty sends
	// none, for an executor that authenticates with a client certificate
	// (set in Client's TLS config).
	Token string
	// Client carries every call; nil means http.DefaultClient.
	Client *http.Client
	Log    *slog.Logger
	// Retry is the pause between reconnects and report retries (default 200ms).
	Retry time.Duration
	// Ended, if set, hears of each attempt's end: "succeeded", "failed", or
	// "stopped" (by the leader, or because the agent is closing).
	Ended func(result string)

	ctx      context.Context // Run's: attempts and reports live as long as it
	mu       sync.Mutex
	running  map[attemptKey]context.CancelCauseFunc
	interval time.Duration
	server   int // index into Servers of the last server that answered
	hint     string
	leased   string               // the server whose lease stream is open and answered
	silent   map[string]time.Time // servers whose stream fell silent, until when to skip them

	connected atomic.Bool // a lease stream has been answered and is open
}

// Connected reports whether the agent holds an answered lease stream now.
func (a *Agent) Connected() bool { return a.connected.Load() }

func (a *Agent) ended(result string) {
	if a.Ended != nil {
		a.Ended(result)
	}
}

// errSilentLeader ends a lease stream that has been silent too long.
var errSilentLeader = errors.New("the lease stream was silent for three keepalive periods; the leader is paused or cut off")

type attemptKey struct {
	job     string
	attempt int32
}

// Run serves until ctx ends; it returns ctx's error after every attempt it
// started has stopped.
func (a *Agent) Run(ctx context.Context) error {
	if a.Retry <= 0 {
		a.Retry = 200 * time.Millisecond
	}
	if a.Log == nil {
		a.Log = slog.New(slog.DiscardHandler)
	}
	a.mu.Lock()
	a.running = make(map[attemptKey]context.CancelCauseFunc)
	a.mu.Unlock()
	a.ctx = ctx
	var wg sync.WaitGroup
	defer wg.Wait()
	var lastWarn time.Time
	for ctx.Err() == nil {
		base := a.pickServer()
		if base == "" {
			pause(ctx, a.Retry) // no server known yet
			continue
		}
		err := a.lease(ctx, base, &wg)
		if ctx.Err() != nil {
			break
		}
		switch connect.CodeOf(err) {
		case connect.CodeUnknown:
			if errors.Is(err, errSilentLeader) {
				a.Log.Info("lease stream silent; looking for the leader elsewhere", "executor", a.Info.GetName(), "server", base)
				break
			}
			a.Log.Debug("lease ended; reconnecting", "executor", a.Info.GetName(), "server", base, "err", err)
		default:
			a.Log.Debug("lease ended; reconnecting", "executor", a.Info.GetName(), "server", base, "err", err)
		case connect.CodePermissionDenied, connect.CodeUnauthenticated, connect.CodeInvalidArgument:
			// Not a leader change: a wrong token or a refused description
			// will not fix itself; say so, at most every few seconds.
			if time.Since(lastWarn) > 5*time.Second {
				a.Log.Warn("executor cannot lease", "executor", a.Info.GetName(), "server", base, "err", err)
				lastWarn = time.Now()
			}
		}
		pause(ctx, a.Retry)
	}
	return ctx.Err()
}

func (a *Agent) client(base string) sluicev1connect.ExecutorServiceClient {
	c := a.Client
	if c == nil {
		c = http.DefaultClient
	}
	return sluicev1connect.NewExecutorServiceClient(c, base)
}

func (a *Agent) authorize(h http.Header) {
	if a.Token != "" {
		h.Set("Authorization", "Bearer "+a.Token)
	}
}

// pickServer prefers the leader a server named last, else the next server
// whose stream has not fallen silent lately.
func (a *Agent) pickServer() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if h := a.hint; h != "" {
		a.hint = ""
		if time.Now().After(a.silent[h]) { // not a server that just went silent
			return h
		}
	}
	servers := a.servers()
	if len(servers) == 0 {
		return ""
	}
	for range servers {
		a.server = (a.server + 1) % len(servers)
		if time.Now().After(a.silent[servers[a.server]]) {
			break
		}
	}
	return servers[a.server]
}

// markSilent makes pickServer skip base for a while.
func (a *Agent) markSilent(base string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.silent == nil {
		a.silent = make(map[string]time.Time)
	}
	a.silent[base] = time.Now().Add(silentServerPause)
	if a.hint == base {
		a.hint = ""
	}
}

// servers is Servers then whatever Discover adds, without repeats.
func (a *Agent) servers() []string {
	out := append([]string(nil), a.Servers...)
	if a.Discover != nil {
		for _, s := range a.Discover() {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// Running is how many attempts the agent runs now.
func (a *Agent) Running() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.running)
}

func (a *Agent) noteLeader(err error) {
	var ce *connect.Error
	if errors.As(err, &ce) {
		if h := ce.Meta().Get(LeaderHeader); h != "" {
			a.mu.Lock()
			a.hint = h
			a.mu.Unlock()
		}
	}
}

func (a *Agent) runningList() []*sluicev1.RunningAttempt {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*sluicev1.RunningAttempt, 0, len(a.running))
	for k := range a.running {
		out = append(out, &sluicev1.RunningAttempt{JobId: k.job, Attempt: k.attempt})
	}
	return out
}

// lease holds one lease stream to base until it ends.
func (a *Agent) lease(ctx context.Context, base string, wg *sync.WaitGroup) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Until the leader says how often it speaks, it must answer within two
	// seconds: a paused server accepts the connection and says nothing.
	var heard atomic.Int64
	heard.Store(time.Now().UnixNano())
	silence := atomic.Int64{}
	silence.Store(int64(2 * time.Second))
	watchdog := make(chan struct{})
	go func() {
		defer close(watchdog)
		a.watch(ctx, &heard, &silence, cancel)
	}()
	defer func() { cancel(nil); <-watchdog }()
	req := connect.NewRequest(&sluicev1.LeaseRequest{Executor: a.Info, Running: a.runningList()})
	a.authorize(req.Header())
	stream, err := a.client(base).Lease(ctx, req)
	if err != nil {
		return a.leaseEnded(ctx, base, err)
	}
	defer stream.Close()
	heartbeats := make(chan struct{})
	go func() {
		defer close(heartbeats)
		a.heartbeat(ctx, base, func() { cancel(nil) })
	}()
	defer func() { cancel(nil); <-heartbeats }()
	first := true
	defer func() {
		a.connected.Store(false)
		a.mu.Lock()
		if a.leased == base {
			a.leased = ""
		}
		a.mu.Unlock()
	}()
	for stream.Receive() {
		heard.Store(time.Now().UnixNano())
		if first {
			first = false
			a.connected.Store(true)
			a.mu.Lock()
			a.leased = base
			a.mu.Unlock()
			// A leader that sends keepalives is taken for gone after three of
			// their periods of silence; one that does not, only by the heartbeats.
			if d, err := time.ParseDuration(stream.ResponseHeader().Get(KeepaliveHeader)); err == nil && d > 0 {
				silence.Store(int64(3 * d))
			} else {
				silence.Store(0)
			}
		}
		msg := stream.Msg()
		if d := msg.GetHeartbeatInterval(); d != nil {
			a.mu.Lock()
			a.interval = d.AsDuration()
			a.mu.Unlock()
		}
		switch m := msg.Msg.(type) {
		case *sluicev1.LeaseResponse_Assignment:
			a.start(m.Assignment, wg)
		case *sluicev1.LeaseResponse_Stop:
			a.stop(m.Stop)
		}
	}
	return a.leaseEnded(ctx, base, stream.Err())
}

// leaseEnded notes what an ended lease stream says of the leader: a server
// that fell silent is skipped for a while, a refusal may name the leader.
func (a *Agent) leaseEnded(ctx context.Context, base string, err error) error {
	if errors.Is(context.Cause(ctx), errSilentLeader) {
		a.markSilent(base)
		return errSilentLeader
	}
	a.noteLeader(err)
	return err
}

// watch ends the lease (cancel with errSilentLeader) once nothing has been
// heard on it for longer than silence (0: never).
func (a *Agent) watch(ctx context.Context, heard, silence *atomic.Int64, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if s := time.Duration(silence.Load()); s > 0 && time.Since(time.Unix(0, heard.Load())) > s {
			cancel(errSilentLeader)
			return
		}
	}
}

// heartbeat renews the lease; three failed heartbeats in a row end the
// stream so that the agent looks for the leader elsewhere.
func (a *Agent) heartbeat(ctx context.Context, base string, endLease context.CancelFunc) {
	failures := 0
	for {
		a.mu.Lock()
		every := a.interval
		a.mu.Unlock()
		if every <= 0 {
			every = time.Second
		}
		if !pause(ctx, every) {
			return
		}
		req := connect.NewRequest(&sluicev1.HeartbeatRequest{Executor: a.Info.GetName(), Running: a.runningList()})
		a.authorize(req.Header())
		hctx, cancel := context.WithTimeout(ctx, every)
		res, err := a.client(base).Heartbeat(hctx, req)
		cancel()
		if err != nil {
			if failures++; failures >= 3 {
				a.noteLeader(err)
				endLease()
				return
			}
			continue
		}
		failures = 0
		for _, s := range res.Msg.Stop {
			a.stop(s)
		}
	}
}

// start runs an assignment unless the agent runs that attempt already.
func (a *Agent) start(as *sluicev1.Assignment, wg *sync.WaitGroup) {
	key := attemptKey{as.JobId, as.Attempt}
	// The run outlives the lease stream (a leader change must not stop it),
	// so it hangs off the agent's context, not the stream's.
	runCtx, cancel := context.WithCancelCause(a.ctx)
	a.mu.Lock()
	if _, ok := a.running[key]; ok {
		a.mu.Unlock()
		cancel(nil)
		return
	}
	a.running[key] = cancel
	a.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			a.mu.Lock()
			delete(a.running, key)
			a.mu.Unlock()
			cancel(nil)
		}()
		a.run(runCtx, as)
	}()
}

// stop cancels a running attempt.
func (a *Agent) stop(s *sluicev1.StopAttempt) {
	a.mu.Lock()
	cancel, ok := a.running[attemptKey{s.JobId, s.Attempt}]
	a.mu.Unlock()
	if ok {
		cancel(errors.New(s.Reason))
	}
}

func (a *Agent) run(runCtx context.Context, as *sluicev1.Assignment) {
	asg := Assignment{JobID: as.JobId, Attempt: as.Attempt, Model: as.Model, Input: as.Input, GPUs: as.Gpus,
		RunTimeout: as.GetRunTimeout().AsDuration(), Expected: as.GetExpectedDuration().AsDuration()}
	if asg.RunTimeout <= 0 {
		asg.RunTimeout = time.Hour
	}
	ctx, cancel := context.WithTimeout(runCtx, asg.RunTimeout)
	defer cancel()
	var last time.Time
	progress := func(fraction float64, text string) {
		// Progress is soft state: best effort, at most a few a second.
		if time.Since(last) < 250*time.Millisecond && fraction < 1 {
			return
		}
		last = time.Now()
		go a.report(ctx, &sluicev1.ReportRequest{JobId: as.JobId, Attempt: as.Attempt,
			Outcome: &sluicev1.ReportRequest_Progress{Progress: &sluicev1.Progress{Fraction: fraction, Text: text}}}, 1)
	}
	began := time.Now()
	res := a.Runner.Run(ctx, asg, progress)
	if runCtx.Err() != nil {
		// Stopped by the leader (canceled, reassigned) or the agent is
		// closing: the log has moved on or the next leader requeues it.
		a.ended("stopped")
		return
	}
	if res.Err == nil {
		a.ended("succeeded")
	} else {
		a.ended("failed")
	}
	rep := &sluicev1.ReportRequest{JobId: as.JobId, Attempt: as.Attempt}
	switch {
	case res.Err == nil:
		rep.Outcome = &sluicev1.ReportRequest_Succeeded{Succeeded: &sluicev1.Succeeded{Output: res.Output}}
	case ctx.Err() != nil:
		rep.Outcome = &sluicev1.ReportRequest_Failed{Failed: &sluicev1.Failed{Retryable: true, Error: &sluicev1.JobError{
			Code: "run_timeout", Message: fmt.Sprintf("attempt %d ran longer than the run timeout of %v", as.Attempt, asg.RunTimeout)}}}
	default:
		rep.Outcome = &sluicev1.ReportRequest_Failed{Failed: &sluicev1.Failed{Retryable: res.Err.Retryable, Error: &sluicev1.JobError{
			Code: res.Err.Code, Message: res.Err.Message}}}
	}
	a.Log.Debug("attempt ended", "job", as.JobId, "attempt", as.Attempt, "took", time.Since(began))
	// An outcome must reach the log: retry across servers until one
	// accepts or refuses it, for as long as the agent runs.
	a.report(a.ctx, rep, 0)
}

// report sends rep, trying each server in turn; tries 0 means until it is
// answered or ctx ends.
func (a *Agent) report(ctx context.Context, rep *sluicev1.ReportRequest, tries int) {
	rep.Executor = a.Info.GetName()
	for i := 0; tries == 0 || i < tries; i++ {
		base := a.reportTo(i)
		if base == "" {
			if !pause(ctx, a.Retry) {
				return
			}
			continue
		}
		req := connect.NewRequest(proto.Clone(rep).(*sluicev1.ReportRequest))
		a.authorize(req.Header())
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := a.client(base).Report(rctx, req)
		cancel()
		if err == nil || isFinal(err) {
			return
		}
		// A hint that failed is dropped (the next try goes round the servers),
		// unless the answer names another leader.
		a.mu.Lock()
		if a.hint == base {
			a.hint = ""
		}
		a.mu.Unlock()
		a.noteLeader(err)
		if !pause(ctx, a.Retry) {
			return
		}
	}
}

// reportTo is the server for a report's try i: the leader a server named
// last, else the one whose lease stream is open, else the servers in turn,
// those that fell silent lately last. A report sent to a paused server
// could wait there for its whole timeout, and be answered by that server
// from a stale state when it resumes.
func (a *Agent) reportTo(i int) string {
	servers := a.servers()
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if a.hint != "" && now.After(a.silent[a.hint]) { // not a server that just went silent
		return a.hint
	}
	order := make([]string, 0, len(servers)+1)
	if a.leased != "" {
		order = append(order, a.leased)
	}
	for _, quiet := range []bool{false, true} {
		for _, s := range servers {
			if now.Before(a.silent[s]) == quiet && !slices.Contains(order, s) {
				order = append(order, s)
			}
		}
	}
	if len(order) == 0 {
		return ""
	}
	return order[i%len(order)]
}

// isFinal reports errors that a retry cannot change.
func isFinal(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodePermissionDenied, connect.CodeUnauthenticated:
		return true
	}
	return false
}

// pause waits d; false when ctx ended first.
func pause(ctx context.Context, d time.Duration) bool { return sleep(ctx, d) == nil }

// ServerList splits a comma-separated list of server addresses into base
// URLs, adding http:// where missing.
func ServerList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !strings.Contains(p, "://") {
			p = "http://" + p
		}
		out = append(out, strings.TrimSuffix(p, "/"))
	}
	return out
}

// DeclaredInfo describes an executor from declared capacity: gpus GPUs of
// memMB each, named name-gpuN.
func DeclaredInfo(name string, slots, gpus int, memMB int64, models []string) *sluicev1.ExecutorInfo {
	info := &sluicev1.ExecutorInfo{Name: name, Slots: int32(slots), Models: models}
	for i := range max(gpus, 1) {
		info.Gpus = append(info.Gpus, &sluicev1.GPU{Uuid: fmt.Sprintf("%s-gpu%d", name, i), Name: "declared",
			MemoryTotalMb: memMB, MemoryFreeMb: memMB, UtilizationPct: -1})
	}
	return info
}
