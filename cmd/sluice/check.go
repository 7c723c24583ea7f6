package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// checkCmd asks LimitService.Check, as a gateway would: for trying a
// policy's gateway rules from a shell (docs/gateway.md).
func checkCmd(f *clientFlags) *cobra.Command {
	req := &sluicev1.CheckRequest{}
	c := &cobra.Command{
		Use:   "check",
		Short: "Ask whether a request may go ahead, as a gateway does (needs the gateway or admin token as --key)",
		Long: `Ask whether a request may go ahead, as a gateway does (LimitService.Check),
and charge it unless --check-only. --key is the gateway token (or the admin
token); the end user's key, if any, is --api-key.

  sluice check --key dev-gateway --api-key dev-alice --method /v1/images/generations
  sluice check --key dev-gateway --client-ip 203.0.113.9 --check-only
  sluice check --key dev-gateway --tenant carol --key-attrs plan=trial --cost 1200`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			res, err := sluicev1connect.NewLimitServiceClient(f.httpClient(), f.addr, f.options()...).Check(c.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			f.print(os.Stdout, res.Msg, func(w io.Writer) { checkTable(w, res.Msg) })
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&req.Tenant, "tenant", "", "the tenant the request is from")
	fl.StringVar(&req.ApiKey, "api-key", "", "the end user's API key (a known key gives its tenant and tier)")
	fl.StringVar(&req.Tier, "tier", "", "the tier, for a tenant the policy does not know")
	fl.StringVar(&req.ClientIp, "client-ip", "", "the end user's address")
	fl.StringVar(&req.Method, "method", "", "the endpoint, e.g. /v1/images/generations")
	fl.StringVar(&req.Model, "model", "", "the model")
	fl.StringVar(&req.Key, "key-attrs", "", "other attributes as key=value,... (rules' match.key)")
	fl.Int64Var(&req.Cost, "cost", 0, "what the request weighs for rules that count cost (0 means 1)")
	fl.BoolVar(&req.CheckOnly, "check-only", false, "decide without charging")
	fl.BoolVar(&req.Refund, "refund", false, "give --cost back instead of charging it")
	fl.BoolVar(&req.AllowDelay, "allow-delay", false, "the caller would hold the request until start_after")
	return c
}

func checkTable(w io.Writer, r *sluicev1.CheckResponse) {
	switch r.Verdict {
	case sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED:
		fmt.Fprintln(w, "allowed")
	case sluicev1.CheckVerdict_CHECK_VERDICT_DELAYED:
		fmt.Fprintf(w, "delayed by rule %q: start in %v\n", r.Rule, r.StartAfter.AsDuration().Round(time.Millisecond))
	case sluicev1.CheckVerdict_CHECK_VERDICT_DEGRADED:
		fmt.Fprintf(w, "degraded: %s; retry with model %s\n", r.Message, r.FallbackModel)
	default:
		fmt.Fprintf(w, "refused: %s\n", r.Message)
	}
	for _, rc := range r.Rules {
		state := "ok"
		switch {
		case rc.Refused && rc.Shadow:
			state = "would refuse (shadow)"
		case rc.Refused:
			state = "refused"
		case rc.Shadow:
			state = "ok (shadow)"
		}
		reset := ""
		if d := rc.ResetAfter.AsDuration(); d > 0 {
			reset = "resets in " + humanWait(d)
		}
		fmt.Fprintf(w, "  %-20s %d/%d %s left  %-22s %s  %s\n", rc.Rule, rc.Remaining, rc.Limit, rc.Unit, state, reset, rc.Description)
	}
	for _, h := range r.Headers {
		fmt.Fprintf(w, "%s: %s\n", h.Name, h.Value)
	}
}
