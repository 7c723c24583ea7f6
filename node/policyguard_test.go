package node

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func TestLockoutNamesTheMissingAdminTokenAndEveryBusyTenantRemoved(t *testing.T) {
	cur := DemoPolicy()
	cur.Tenants = append(cur.Tenants, &sluicev1.Tenant{Name: "carol", Tier: "free"})
	jobs := map[string][2]int64{"bob": {3, 1}, "alice": {0, 2}} // queued, running
	active := func(tenant string) (int64, int64) { return jobs[tenant][0], jobs[tenant][1] }
	if err := lockout(cur, cur, active); err != nil {
		t.Fatalf("the same policy: %v", err)
	}
	// carol has no jobs: removing her is allowed.
	noCarol := proto.Clone(cur).(*sluicev1.Policy)
	noCarol.Tenants = noCarol.Tenants[:2]
	if err := lockout(cur, noCarol, active); err != nil {
		t.Fatalf("removing an idle tenant: %v", err)
	}
	noBob := proto.Clone(cur).(*sluicev1.Policy)
	noBob.Tenants = []*sluicev1.Tenant{noBob.Tenants[0]}
	err := lockout(cur, noBob, active)
	if want := `policy: tenant "bob" has 3 queued and 1 running jobs; keep it or pass force`; err == nil || err.Error() != want {
		t.Fatalf("removing bob: %v, want %q", err, want)
	}
	modelsOnly := &sluicev1.Policy{Models: cur.Models}
	err = lockout(cur, modelsOnly, active)
	for _, want := range []string{"admin_token_sha256 is empty", `tenant "alice" has 0 queued and 2 running jobs`, `tenant "bob" has 3 queued and 1 running jobs`, "keep them or pass force"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("a policy of models only: %v, want it to say %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "carol") {
		t.Errorf("carol has no jobs but is named: %v", err)
	}
}
