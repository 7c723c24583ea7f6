package gpuexec

import (
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"time"
)

// RunnerOptions are the executor settings a --runner spec does not carry.
type RunnerOptions struct {
	// Name is the executor's name, which the synthetic runner echoes.
	Name string
	// Durations and FailureRate configure the synthetic runner.
	Durations   map[string]time.Duration
	FailureRate float64
	// MaxOutputBytes bounds exec stdout and http response bodies; 0 means
	// DefaultMaxOutputBytes.
	MaxOutputBytes int64
	// Grace is the exec runner's time between SIGTERM and SIGKILL; 0 means
	// DefaultGrace.
	Grace time.Duration
	// HTTPClient sends the http runner's requests; nil means a default one.
	HTTPClient *http.Client
}

// runnerKinds is the usage line every spec error ends with.
const runnerKinds = "want synthetic, exec:COMMAND or http:URL"

// ParseRunner builds the runner a --runner flag names:
//
//   - synthetic: pretends to run models (no GPU needed);
//   - exec:COMMAND: runs COMMAND with /bin/sh -c per attempt (see ExecRunner);
//   - http:URL: POSTs each attempt to URL (see HTTPRunner); a bare http:// or
//     https:// URL is accepted too.
func ParseRunner(spec string, opts RunnerOptions) (Runner, error) {
	spec = strings.TrimSpace(spec)
	if strings.HasPrefix(spec, "http://") || strings.HasPrefix(spec, "https://") {
		spec = "http:" + spec
	}
	kind, arg, hasArg := strings.Cut(spec, ":")
	arg = strings.TrimSpace(arg)
	switch kind {
	case "":
		return nil, fmt.Errorf("--runner: empty; %s", runnerKinds)
	case "synthetic":
		if hasArg {
			return nil, fmt.Errorf("--runner: synthetic takes no argument (got %q); %s", spec, runnerKinds)
		}
		return &Synthetic{Name: opts.Name, Durations: opts.Durations, FailureRate: opts.FailureRate}, nil
	case "exec":
		if arg == "" {
			return nil, fmt.Errorf("--runner: exec: needs a command, e.g. exec:./examples/runners/progress.sh")
		}
		if err := checkCommand(arg); err != nil {
			return nil, fmt.Errorf("--runner exec:%s: %w", arg, err)
		}
		// Through a shell, so that the flag can hold arguments, pipes and
		// environment assignments as an operator would type them.
		return &ExecRunner{Command: []string{"/bin/sh", "-c", arg}, MaxOutputBytes: opts.MaxOutputBytes, Grace: opts.Grace}, nil
	case "http":
		if arg == "" {
			return nil, fmt.Errorf("--runner: http: needs a URL, e.g. http:http://127.0.0.1:8000/generate")
		}
		if !strings.HasPrefix(arg, "http://") && !strings.HasPrefix(arg, "https://") {
			return nil, fmt.Errorf("--runner: http: URL %q must start with http:// or https://", arg)
		}
		u, err := url.Parse(arg)
		switch {
		case err != nil:
			return nil, fmt.Errorf("--runner: http: %v", err)
		case u.Host == "":
			return nil, fmt.Errorf("--runner: http: URL %q has no host", arg)
		}
		return &HTTPRunner{URL: u.String(), Client: opts.HTTPClient, MaxOutputBytes: opts.MaxOutputBytes}, nil
	}
	return nil, fmt.Errorf("--runner: unknown kind %q; %s", kind, runnerKinds)
}

// checkCommand finds the program a shell command line starts with (after any
// VAR=value assignments), so that a typo shows at start rather than as a
// failed attempt per job. A line that starts with shell syntax is left to
// the shell.
func checkCommand(line string) error {
	for _, w := range strings.Fields(line) {
		if strings.Contains(w, "=") && !strings.HasPrefix(w, "=") {
			continue // an environment assignment
		}
		if strings.ContainsAny(w, "$`(){}<>|;&*?[]~'\"\\") {
			return nil
		}
		if _, err := exec.LookPath(w); err != nil {
			if strings.Contains(w, "/") {
				return fmt.Errorf("%s: no such executable file (check the path and its x bit)", w)
			}
			return fmt.Errorf("%s: not found in $PATH", w)
		}
		return nil
	}
	return nil
}
