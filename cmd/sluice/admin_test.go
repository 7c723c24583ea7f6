package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/node"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// TestAdminCommandsRefuseLockoutsAndUnknownTargets runs the admin commands
// of issue 24 against `sluice dev`: a dry run prints the changes and the
// leader's verdict and applies nothing; a policy without an admin token is
// refused unless --force; remove and redrive of targets that are not there
// fail naming them; a redrive of a tenant without dead letters says so.
func TestAdminCommandsRefuseLockoutsAndUnknownTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildSluice(t)
	_, url := startDev(t, bin, t.TempDir())
	admin := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"admin"}, args...)...)
		cmd.Env = append(os.Environ(), "SLUICE_ADDR="+url, "SLUICE_API_KEY="+node.DemoAdminToken)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	dir := t.TempDir()
	write := func(name, doc string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	modelsOnly := write("models.yaml", "models:\n  - name: sdxl\n    default_duration: 2s\n")

	out, err := admin("policy", "--dry-run", modelsOnly)
	t.Logf("policy --dry-run:\n%s", out)
	for _, want := range []string{"tenants:\n  - alice (1 API key)\n  - bob (1 API key)", "  - llama-8b", "  - free-rate",
		"~ admin_token_sha256: ", "dry run: the leader would refuse it: failed_precondition: policy: admin_token_sha256 is empty"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("policy --dry-run: %v, want the output to contain %q", err, want)
		}
	}
	out, err = admin("policy", modelsOnly)
	if err == nil || !strings.Contains(out, "failed_precondition: policy: admin_token_sha256 is empty") {
		t.Errorf("policy without an admin token: %v\n%s", err, out)
	}
	status, err := admin("members")
	if err != nil || !strings.Contains(status, "leader") {
		t.Fatalf("the refused policy locked the admin out: %v\n%s", err, status)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"remove", "n9"}, `not_found: id: "n9" is not a member (members: n1)`},
		{[]string{"redrive", "999999"}, "not_found: job_ids[0]: job 999999 does not exist"},
		{[]string{"redrive", "--tenant", "nobody"}, `not_found: tenant: "nobody" is not one of the policy's tenants`},
	} {
		out, err := admin(tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("admin %s: %v\n%s\nwant an error containing %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
	out, err = admin("redrive", "--tenant", "bob")
	if want := "redriven: 0 jobs (no dead-lettered jobs for tenant bob)"; err != nil || !strings.Contains(out, want) {
		t.Errorf("redrive --tenant bob: %v\n%s\nwant %q", err, out, want)
	}
}

func TestMembersTableMarksUnreachableServers(t *testing.T) {
	var b strings.Builder
	membersTable(&b, []*sluicev1.Member{
		{Id: "n1", Role: "leader", Term: 2, CommitIndex: 9, AppliedIndex: 9, LastContact: durationpb.New(0)},
		{Id: "n2", Role: "follower", Unreachable: true, LastContact: durationpb.New(12300 * time.Millisecond)},
		{Id: "n3", Role: "follower", Unreachable: true},
	})
	t.Logf("\n%s", b.String())
	lines := strings.Split(b.String(), "\n")
	if !strings.HasSuffix(lines[2], "12s (unreachable)") || !strings.HasSuffix(lines[3], "unreachable") || strings.Contains(lines[1], "unreachable") {
		t.Fatalf("members table:\n%s", b.String())
	}
}
