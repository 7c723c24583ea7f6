package node

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// browserPath finds a headless Chromium (`make browser` installs Debian's
// chromium-headless-shell).
func browserPath(t *testing.T) string {
	for _, name := range []string{"chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("SLUICE_SKIP_BROWSER") != "" {
		t.Skip("no headless Chromium, and SLUICE_SKIP_BROWSER is set")
	}
	t.Fatal("no headless Chromium on PATH: `make browser` installs one (apt-get install chromium-headless-shell); SLUICE_SKIP_BROWSER=1 skips this test")
	return ""
}

// browser starts a headless Chromium for the test.
func browser(t *testing.T) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browserPath(t)), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 1000), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first run starts the browser, which lives as long as its context:
	// the timeout goes on a context made after it.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", browserPath(t), err)
	}
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancelTimeout)
	return ctx
}

// screenshot saves the page as name.png in $SLUICE_SCREENSHOTS, if set
// (`make screenshots` sets it to docs/).
func screenshot(t *testing.T, ctx context.Context, name string) {
	dir := os.Getenv("SLUICE_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// text is an element's text.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(v)
}

// attr is an element's attribute.
func attr(t *testing.T, ctx context.Context, sel, name string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
	if err != nil {
		t.Fatalf("attribute %s of %s: %v", name, sel, err)
	}
	return v.Value
}

// TestWebUIInABrowser uses the UI as its users would, in a real headless
// Chromium: alice logs in with her key, submits a job from the form, sees
// its place in line and ETA change as the jobs ahead finish, sees it
// succeed, and sees why a submit over her limit is refused and when to
// retry; the operator logs in with the admin token and sees the queue by
// tier and tenant, the executors and the rejections.
func TestWebUIInABrowser(t *testing.T) {
	ctx := browser(t)
	p := DemoPolicy()
	p.Rules = []*sluicev1.Rule{{Name: "alice-burst", Match: &sluicev1.RuleMatch{Tenant: "alice"},
		Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: 3, Per: durationpb.New(time.Hour), Burst: 3}}}}
	n := startNodeWith(t, 1, p)
	base := baseURL(n)
	long, _ := structpb.NewStruct(map[string]any{"duration_ms": 1200})
	longJobs := func(key string, k int) {
		for range k {
			if _, err := jobClient(n, key).Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{
				Spec: &sluicev1.JobSpec{Model: "sdxl", Input: long}})); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Alice logs in and submits from the form.
	err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#login-key"), DemoAliceKey),
		chromedp.Click(chromedp.CSS("#login-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#user")),
		chromedp.WaitVisible(chromedp.CSS(`#usage [data-rule="alice-burst"]`)),
		chromedp.WaitReady(chromedp.CSS(`#submit-model option[value="sdxl"]`)),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	// Long jobs ahead of the one she submits from the form, on the one
	// executor: one of bob's, two of her own (a tenant's jobs run in order).
	longJobs(DemoBobKey, 1)
	longJobs(DemoAliceKey, 2)
	err = chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#submit-model"), "sdxl"),
		chromedp.SetValue(chromedp.CSS("#submit-input"), `{"prompt": "a lighthouse", "duration_ms": 600}`),
		chromedp.Click(chromedp.CSS("#submit-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#submit-result .accepted")),
	)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	accepted, jobID := text(t, ctx, "#submit-result .accepted"), attr(t, ctx, "#submit-result .accepted", "data-job")
	if !strings.Contains(accepted, "in line") {
		t.Fatalf("the accepted submit says %q", accepted)
	}
	// Watch the row: its place in line and ETA change, then it succeeds.
	row := fmt.Sprintf(`#jobs tr[data-job="%s"]`, jobID)
	seen := map[string]bool{}
	var state string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		// One read of the row: the page redraws it as updates come.
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(() => {
			const r = document.querySelector(%q);
			return r ? [".state", ".pos", ".eta"].map((c) => r.querySelector(c).textContent.trim()).join(" ") : "";
		})()`, row)))
		if err != nil {
			t.Fatal(err)
		}
		state, _, _ = strings.Cut(v, " ")
		seen[v] = true
		if state == "SUCCEEDED" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if state != "SUCCEEDED" {
		t.Fatalf("job %s: %s after 30s; seen %v", jobID, state, seen)
	}
	queuedViews := 0
	for v := range seen {
		if strings.HasPrefix(v, "QUEUED ") {
			queuedViews++
		}
	}
	if queuedViews < 2 {
		t.Fatalf("the job's place in line or ETA never changed while queued: %v", seen)
	}

	// Over her limit: the refusal names the rule and when to retry.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#submit-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#submit-result .refusal")),
	)
	if err != nil {
		t.Fatalf("submit over the limit: %v", err)
	}
	refusal, code := text(t, ctx, "#submit-result .refusal"), attr(t, ctx, "#submit-result .refusal", "data-code")
	if code != "resource_exhausted" || !strings.Contains(refusal, "alice-burst") || !strings.Contains(refusal, "Retry in") {
		t.Fatalf("the refusal (%s) says %q", code, refusal)
	}
	screenshot(t, ctx, "ui-user")

	// The operator, while bob has jobs waiting.
	longJobs(DemoBobKey, 3)
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#logout")),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#login-key"), DemoAdminToken),
		chromedp.Click(chromedp.CSS(`input[name=role][value=operator]`)),
		chromedp.Click(chromedp.CSS("#login-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#operator")),
		chromedp.WaitVisible(chromedp.CSS(`#tiers [data-tier="pro"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#rejections [data-rule="alice-burst"]`)),
		chromedp.WaitVisible(chromedp.CSS("#queue-chart svg polygon")),
		chromedp.WaitVisible(chromedp.CSS("#executors tbody tr")),
	)
	if err != nil {
		t.Fatalf("operator view: %v", err)
	}
	total := text(t, ctx, "#queued-total")
	if total == "0" || total == "" {
		t.Fatalf("the operator sees %q queued", total)
	}
	time.Sleep(2500 * time.Millisecond) // a second sample for the chart, for the screenshot
	screenshot(t, ctx, "ui-operator")

	// A wrong key is refused at the login form, and the page sends the
	// headers that keep it to itself.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#logout")),
		chromedp.Click(chromedp.CSS(`input[name=role][value=user]`)),
		chromedp.SendKeys(chromedp.CSS("#login-key"), "not-a-key"),
		chromedp.Click(chromedp.CSS("#login-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#login-error")),
	)
	if err != nil {
		t.Fatal(err)
	}
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("login-error").textContent.length > 0`))
	loginErr := text(t, ctx, "#login-error")
	if err != nil || !strings.Contains(loginErr, "unauthenticated") {
		t.Fatalf("a wrong key: %q (%v)", loginErr, err)
	}
	resp, err := http.Get(base + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("Content-Security-Policy %q", csp)
	}
}

// TestWebUISolvesAChallenge: over a CHALLENGE rule the dashboard solves
// the proof of work in the browser with Web Crypto, says so, and keeps the
// pass, so that the next Submit over the rule is admitted without one.
func TestWebUISolvesAChallenge(t *testing.T) {
	ctx := browser(t)
	p := DemoPolicy()
	p.Rules = []*sluicev1.Rule{{Name: "alice-human", Match: &sluicev1.RuleMatch{Tenant: "alice"}, Action: sluicev1.OverLimitAction_OVER_LIMIT_ACTION_CHALLENGE,
		Challenge: &sluicev1.ChallengeSettings{Difficulty: 12, MaxDifficulty: 12},
		Limit:     &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: 1, Per: durationpb.New(time.Hour), Burst: 1}}}}
	n := startNodeWith(t, 1, p)
	submit := func() error {
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`document.getElementById("submit-result").replaceChildren()`)); err != nil {
			return err
		}
		return chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS("#submit-form button[type=submit]")),
			chromedp.WaitVisible(chromedp.CSS("#submit-result .accepted, #submit-result .refusal")),
		)
	}
	err := chromedp.Do(ctx,
		chromedp.Navigate(baseURL(n)+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#login-key"), DemoAliceKey),
		chromedp.Click(chromedp.CSS("#login-form button[type=submit]")),
		chromedp.WaitReady(chromedp.CSS(`#submit-model option[value="sdxl"]`)),
		chromedp.SetValue(chromedp.CSS("#submit-model"), "sdxl"),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	for i, want := range []string{"", "Challenge of rule \"alice-human\" solved in", ""} {
		if err := submit(); err != nil {
			t.Fatalf("submit %d: %v", i+1, err)
		}
		got := text(t, ctx, "#submit-result")
		if !strings.Contains(got, "queued") || (want != "" && !strings.Contains(got, want)) || (want == "" && strings.Contains(got, "solved")) {
			t.Fatalf("submit %d says %q, want it queued%s", i+1, got, map[bool]string{true: "", false: " and " + want}[want == ""])
		}
		t.Logf("submit %d: %s", i+1, got)
	}
}
