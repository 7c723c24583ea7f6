package node

import (
	"errors"
	"fmt"
	"strings"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// lockout reports why replacing cur with next would lock the cluster out,
// or nil: next has no admin token (every admin command, SetPolicy included,
// would be refused until a node restarts with --policy), or it removes
// tenants that still have queued or running jobs (their clients could no
// longer see or cancel them). active counts a tenant's jobs in the state
// the check is made against.
func lockout(cur, next *sluicev1.Policy, active func(tenant string) (queued, running int64)) error {
	var errs []error
	if next.GetAdminTokenSha256() == "" {
		errs = append(errs, errors.New("policy: admin_token_sha256 is empty: every admin command would be refused "+
			"until a node restarts with --policy; set it (`sluice hash-key TOKEN` prints it) or pass force"))
	}
	kept := make(map[string]bool, len(next.GetTenants()))
	for _, t := range next.GetTenants() {
		kept[t.Name] = true
	}
	var busy []string
	for _, t := range cur.GetTenants() {
		if kept[t.Name] {
			continue
		}
		if q, r := active(t.Name); q+r > 0 {
			busy = append(busy, fmt.Sprintf("tenant %q has %d queued and %d running jobs", t.Name, q, r))
		}
	}
	switch len(busy) {
	case 0:
	case 1:
		errs = append(errs, fmt.Errorf("policy: %s; keep it or pass force", busy[0]))
	default:
		errs = append(errs, fmt.Errorf("policy: %s; keep them or pass force", strings.Join(busy, ", ")))
	}
	return errors.Join(errs...)
}
