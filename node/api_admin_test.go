package node

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// TestSetPolicyRefusesALockoutUnlessForced: a policy without an admin
// token, or one that drops a tenant with queued jobs, is refused with
// failed_precondition naming it; a dry run checks without applying; force
// applies.
func TestSetPolicyRefusesALockoutUnlessForced(t *testing.T) {
	n := startNode(t, 0) // no executors: bob's job stays queued
	ctx := context.Background()
	id := submit(t, jobClient(n, DemoBobKey), &sluicev1.JobSpec{Model: "llama-8b"}).Id
	admin := adminClient(n)
	cur, err := admin.GetPolicy(ctx, connect.NewRequest(&sluicev1.GetPolicyRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	before := proto.Clone(cur.Msg.Policy).(*sluicev1.Policy)

	noAdmin := proto.Clone(before).(*sluicev1.Policy)
	noAdmin.AdminTokenSha256 = ""
	_, err = admin.SetPolicy(ctx, connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: noAdmin}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "admin_token_sha256 is empty") {
		t.Fatalf("a policy without an admin token: %v", err)
	}
	if _, err := admin.SetPolicy(ctx, connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: &sluicev1.Policy{}})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf(`{"policy":{}}: %v`, err)
	}

	noBob := proto.Clone(before).(*sluicev1.Policy)
	noBob.Tenants = noBob.Tenants[:1]
	noBob.Tiers = noBob.Tiers[:1]
	noBob.Rules = nil
	_, err = admin.SetPolicy(ctx, connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: noBob}))
	if want := `policy: tenant "bob" has 1 queued and 0 running jobs; keep it or pass force`; connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), want) {
		t.Fatalf("dropping bob: %v, want failed_precondition %q", err, want)
	}
	_, err = admin.SetPolicy(ctx, connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: noBob, DryRun: true}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("a dry run of dropping bob: %v", err)
	}
	if _, err := admin.SetPolicy(ctx, connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: noBob, DryRun: true, Force: true})); err != nil {
		t.Fatalf("a forced dry run: %v", err)
	}
	if !proto.Equal(n.fsm.Policy(), before) {
		t.Fatal("a dry run changed the policy")
	}
	if _, err := admin.SetPolicy(ctx, connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: noBob, Force: true})); err != nil {
		t.Fatalf("dropping bob with force: %v", err)
	}
	if !proto.Equal(n.fsm.Policy(), noBob) {
		t.Fatal("the forced policy is not in force")
	}
	if q, _ := n.fsm.ActiveJobs("bob"); q != 1 {
		t.Fatalf("bob's job %s: %d queued after the policy change, want 1", id, q)
	}
}

// TestRedriveNamesTargetsThatAreNotThere: a job id that does not exist is
// not_found, a job that is not dead-lettered is failed_precondition, an
// unknown tenant is not_found; a known tenant without dead letters is a 0
// answer.
func TestRedriveNamesTargetsThatAreNotThere(t *testing.T) {
	n := startNode(t, 0)
	ctx := context.Background()
	queued := submit(t, jobClient(n, DemoBobKey), &sluicev1.JobSpec{Model: "llama-8b"}).Id
	admin := adminClient(n)
	for _, tc := range []struct {
		req  *sluicev1.RedriveDeadLettersRequest
		code connect.Code
		want string
	}{
		{&sluicev1.RedriveDeadLettersRequest{JobIds: []string{"999999"}}, connect.CodeNotFound, "job_ids[0]: job 999999 does not exist"},
		{&sluicev1.RedriveDeadLettersRequest{JobIds: []string{queued}}, connect.CodeFailedPrecondition, "job " + queued + " is queued, not dead-lettered"},
		{&sluicev1.RedriveDeadLettersRequest{Tenant: "nobody"}, connect.CodeNotFound, `tenant: "nobody" is not one of the policy's tenants`},
		{&sluicev1.RedriveDeadLettersRequest{Model: "gpt-9"}, connect.CodeNotFound, `model: "gpt-9" is not one of the policy's models`},
	} {
		_, err := admin.RedriveDeadLetters(ctx, connect.NewRequest(tc.req))
		if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("redrive %v: %v, want %s %q", tc.req, err, tc.code, tc.want)
		}
	}
	res, err := admin.RedriveDeadLetters(ctx, connect.NewRequest(&sluicev1.RedriveDeadLettersRequest{Tenant: "bob"}))
	if err != nil || len(res.Msg.JobIds) != 0 {
		t.Fatalf("redrive bob without dead letters: %v %v, want 0 jobs", res, err)
	}
}

// TestAdminOnAClusterNamesUnknownNodesAndMarksAStoppedOne: removing a
// server that is not a member is not_found and lists the members; a
// policy that drops a busy tenant, sent to a follower, is refused by the
// leader; a stopped follower is listed as unreachable, with the time since
// it was last heard from.
func TestAdminOnAClusterNamesUnknownNodesAndMarksAStoppedOne(t *testing.T) {
	c := startCluster(t, 3, 0)
	ctx := context.Background()
	leader := c.waitLeader()
	follower := c.followers()[0]
	_, err := adminClient(follower).RemoveNode(ctx, connect.NewRequest(&sluicev1.RemoveNodeRequest{Id: "n9"}))
	if want := `id: "n9" is not a member (members: n1, n2, n3)`; connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), want) {
		t.Fatalf("remove n9: %v, want not_found %q", err, want)
	}

	submit(t, jobClient(follower, DemoBobKey), &sluicev1.JobSpec{Model: "llama-8b"})
	noBob := proto.Clone(leader.fsm.Policy()).(*sluicev1.Policy)
	noBob.Tenants = noBob.Tenants[:1]
	_, err = adminClient(follower).SetPolicy(ctx, connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: noBob}))
	if want := `tenant "bob" has 1 queued and 0 running jobs`; connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), want) {
		t.Fatalf("dropping bob through a follower: %v, want failed_precondition %q", err, want)
	}

	stopped := c.followers()[len(c.followers())-1]
	stopped.Close()
	waitFor(t, "the stopped follower to be listed as unreachable", func() bool {
		res, err := adminClient(leader).GetClusterStatus(ctx, connect.NewRequest(&sluicev1.GetClusterStatusRequest{}))
		if err != nil {
			return false
		}
		for _, m := range res.Msg.Members {
			// The leader's heartbeats give the time it last heard from the stopped node.
			if m.Unreachable != (m.Id == stopped.cfg.ID) || (m.Unreachable && m.LastContact == nil) {
				return false
			}
		}
		return true
	})
}
