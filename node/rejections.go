package node

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// rejections counts the Submits each rule refused while this node led, for
// the operator's page (GetClusterStatus). It is the leader's soft state:
// reset when the node becomes leader, empty on followers. maxRejectionRules
// bounds the rules it remembers (the policy's rules, and "busy").
type rejections struct {
	mu    sync.Mutex
	rules map[string]*sluicev1.RuleRejections
}

const maxRejectionRules = 1000

func (r *rejections) note(rule, tenant string, at time.Time) {
	if rule == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rules == nil {
		r.rules = map[string]*sluicev1.RuleRejections{}
	}
	rr, ok := r.rules[rule]
	if !ok {
		if len(r.rules) >= maxRejectionRules {
			return
		}
		rr = &sluicev1.RuleRejections{Rule: rule}
		r.rules[rule] = rr
	}
	rr.Count++
	rr.LastAt, rr.LastTenant = timestamppb.New(at), tenant
}

func (r *rejections) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rules = nil
}

// list copies the counts, most first.
func (r *rejections) list() []*sluicev1.RuleRejections {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*sluicev1.RuleRejections, 0, len(r.rules))
	for _, rr := range r.rules {
		out = append(out, &sluicev1.RuleRejections{Rule: rr.Rule, Count: rr.Count, LastAt: rr.LastAt, LastTenant: rr.LastTenant})
	}
	slices.SortFunc(out, func(a, b *sluicev1.RuleRejections) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Rule, b.Rule))
	})
	return out
}
