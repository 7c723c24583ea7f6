package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// gatewayBudget is the limit TestGatewayLimitHoldsAcrossLeaderKills spends:
// a sliding log, so that no window boundary can excuse an overrun.
const gatewayBudget = 200

const gatewayPolicy = `
tiers: [{name: pro, weight: 1}]
tenants: [{name: bob, tier: pro, api_key_sha256: ["%s"]}]
models: [{name: llama-8b, default_duration: 100ms}]
admin_token_sha256: "%s"
executor_token_sha256: "%s"
rules: [{name: budget, scope: RULE_SCOPE_GLOBAL, match: {method: /v1/images}, sliding_log: {limit: 200, window: 1h}}]
`

// TestGatewayLimitHoldsAcrossLeaderKills checks through every node of a
// 3-process cluster while the leader is killed (kill -9) twice, mid-budget:
// the checks answered ALLOWED never exceed the limit (docs/gateway.md: an
// allowed check is committed before it is answered, so no leader change
// forgets it), every one of them is charged on the surviving replicas, and
// the replicas end with the same state.
func TestGatewayLimitHoldsAcrossLeaderKills(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three server processes")
	}
	bin := buildSluice(t)
	cl := startProcClusterWith(t, bin, 3, gatewayPolicy, func(int) []string { return nil })
	clients := make([]sluicev1connect.LimitServiceClient, len(cl.urls))
	for i, u := range cl.urls {
		clients[i] = sluicev1connect.NewLimitServiceClient(http.DefaultClient, u, connect.WithInterceptors(bearerAuth("admin")))
	}
	var allowed, refused atomic.Int64
	var mu sync.Mutex
	errs := &codes{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(40 * time.Millisecond): // ~200 checks/s in all
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, err := clients[i%len(clients)].Check(ctx, connect.NewRequest(&sluicev1.CheckRequest{Tenant: fmt.Sprintf("u%d", w), Method: "/v1/images"}))
				cancel()
				switch {
				case err != nil:
					mu.Lock()
					errs.add(err)
					mu.Unlock()
				case res.Msg.Verdict == sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED:
					allowed.Add(1)
				default:
					refused.Add(1)
				}
			}
		})
	}
	for round, at := range []int64{gatewayBudget / 4, gatewayBudget * 3 / 5} {
		if !waitUpTo(30*time.Second, func() bool { return allowed.Load() >= at }) {
			t.Fatalf("round %d: %d checks allowed after 30 s, want %d", round+1, allowed.Load(), at)
		}
		old := cl.waitLeader(nil)
		old.kill()
		t.Logf("round %d: killed the leader %s with %d checks allowed", round+1, old.id, allowed.Load())
		cl.waitLeader(old)
		old.start(t, bin)
		cl.caughtUp(old)
	}
	if !waitUpTo(30*time.Second, func() bool { return refused.Load() >= 50 }) {
		t.Fatalf("%d refused after 30 s: the budget of %d was never spent (%d allowed)", refused.Load(), gatewayBudget, allowed.Load())
	}
	close(stop)
	wg.Wait()
	if a := allowed.Load(); a > gatewayBudget {
		t.Fatalf("%d checks allowed over a leader kill, more than the limit of %d", a, gatewayBudget)
	}
	// What the replicated counter holds: every allowed check, plus any whose
	// answer was lost with its leader (charged, never answered ALLOWED).
	res, err := clients[0].Check(context.Background(), connect.NewRequest(&sluicev1.CheckRequest{Method: "/v1/images", CheckOnly: true}))
	if err != nil {
		t.Fatal(err)
	}
	charged := gatewayBudget - res.Msg.Rules[0].Remaining
	if charged < allowed.Load() || charged > gatewayBudget {
		t.Fatalf("the budget's counter holds %d charges for %d allowed checks (limit %d)", charged, allowed.Load(), gatewayBudget)
	}
	cl.sameState()
	t.Logf("%d allowed (limit %d, %d charged), %d refused, errors: %v", allowed.Load(), gatewayBudget, charged, refused.Load(), errs)
}
