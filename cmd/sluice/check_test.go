package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/node"
)

// TestCheckCommandAsksLikeAGateway: `sluice check` against `sluice dev`
// charges alice's key until the demo policy's free-rate bucket (burst 5) is
// empty, then prints the refusal with its rule and Retry-After; a
// check-only charges nothing, and bad input is refused naming the field.
func TestCheckCommandAsksLikeAGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildSluice(t)
	_, url := startDev(t, bin, t.TempDir())
	check := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"check"}, args...)...)
		cmd.Env = append(os.Environ(), "SLUICE_ADDR="+url, "SLUICE_API_KEY="+node.DemoAdminToken)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for i := range 3 {
		if out, err := check("--api-key", node.DemoAliceKey, "--check-only"); err != nil || !strings.HasPrefix(out, "allowed\n") || !strings.Contains(out, "free-rate            5/5 requests left") {
			t.Fatalf("check-only %d: %v\n%s", i+1, err, out)
		}
	}
	for i := range 5 {
		if out, err := check("--api-key", node.DemoAliceKey); err != nil || !strings.HasPrefix(out, "allowed\n") {
			t.Fatalf("check %d: %v\n%s", i+1, err, out)
		}
	}
	out, err := check("--api-key", node.DemoAliceKey)
	if err != nil || !strings.HasPrefix(out, `refused: rate limited by rule "free-rate" (10 requests per 1m0s, burst 5): too frequent, retry in`) ||
		!strings.Contains(out, "\nRetry-After: ") {
		t.Fatalf("sixth check: %v\n%s", err, out)
	}
	if out, err := check("--client-ip", "300.1.1.1"); err == nil || !strings.Contains(out, `invalid_argument: client_ip: "300.1.1.1" is not an IP address`) {
		t.Fatalf("a bad IP: %v\n%s", err, out)
	}
}
