package limiter

import (
	"testing"
	"time"
)

// A Challenge rule over its limit challenges rather than rejects, unless a Reject or Degrade
// rule refuses too; an exempt request passes it, charging it only what it allows.
func TestEngineChallengeRuleAndExemptions(t *testing.T) {
	human := Rule{Name: "human", Action: Challenge, Scope: PerClientIP, Algorithm: FixedWindow{Limit: 1, Window: time.Minute}}
	e := mustEngine(t, human, Rule{Name: "daily", Scope: PerTenant, Algorithm: FixedWindow{Limit: 3, Window: time.Hour}})
	req := Request{Tenant: "ann", ClientIP: "192.0.2.1", Cost: 1}
	var d Decision
	e.Admit(&req, epoch, &d)
	if d.Verdict != Admitted {
		t.Fatalf("first: %v", d.Verdict)
	}
	e.Admit(&req, epoch, &d)
	if d.Verdict != Challenged || d.Rule != "human" || d.RetryAt <= epoch {
		t.Fatalf("second: %v by %q retry %d", d.Verdict, d.Rule, d.RetryAt-epoch)
	}
	if u := e.Usage(&req, epoch, nil); u[1].Used != 1 {
		t.Fatalf("a challenged request charged the daily rule: used %d", u[1].Used)
	}
	req.Exempt = []string{"human"}
	for i := range 2 {
		e.Admit(&req, epoch, &d)
		if d.Verdict != Admitted || !d.Rules()[0].Exempt || d.Rules()[0].Allowed {
			t.Fatalf("exempt %d: %v, %+v", i, d.Verdict, d.Rules()[0])
		}
	}
	// The other rules still apply to an exempt request.
	e.Admit(&req, epoch, &d)
	if d.Verdict != Rejected || d.Rule != "daily" {
		t.Fatalf("exempt past the daily rule: %v by %q", d.Verdict, d.Rule)
	}
	u := e.Usage(&req, epoch, nil)
	if u[0].Used != 1 || u[1].Used != 3 {
		t.Fatalf("used %d and %d, want 1 (the exempt requests over it charged nothing) and 3", u[0].Used, u[1].Used)
	}
}
