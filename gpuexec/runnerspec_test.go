package gpuexec

import (
	"reflect"
	"testing"
	"time"
)

func TestParseRunnerBuildsEachKind(t *testing.T) {
	opts := RunnerOptions{Name: "gpu-box-1", Durations: map[string]time.Duration{"sdxl": time.Second}, MaxOutputBytes: 4096, Grace: time.Second}
	for _, tc := range []struct {
		spec string
		want Runner
	}{
		{"synthetic", &Synthetic{Name: "gpu-box-1", Durations: opts.Durations}},
		{" exec:./testdata/echo-env.sh --fast | tee log ", &ExecRunner{Command: []string{"/bin/sh", "-c", "./testdata/echo-env.sh --fast | tee log"}, MaxOutputBytes: 4096, Grace: time.Second}},
		{"exec:MODEL_DIR=/models sh -c 'echo {}'", &ExecRunner{Command: []string{"/bin/sh", "-c", "MODEL_DIR=/models sh -c 'echo {}'"}, MaxOutputBytes: 4096, Grace: time.Second}},
		{"exec:$HOME/run.sh", &ExecRunner{Command: []string{"/bin/sh", "-c", "$HOME/run.sh"}, MaxOutputBytes: 4096, Grace: time.Second}},
		{"http:http://127.0.0.1:8000/generate", &HTTPRunner{URL: "http://127.0.0.1:8000/generate", MaxOutputBytes: 4096}},
		{"https://models.internal/v1/run", &HTTPRunner{URL: "https://models.internal/v1/run", MaxOutputBytes: 4096}},
	} {
		got, err := ParseRunner(tc.spec, opts)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %#v, %v; want %#v", tc.spec, got, err, tc.want)
		}
	}
}

func TestParseRunnerErrorsSayWhatToWrite(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"foo", `--runner: unknown kind "foo"; want synthetic, exec:COMMAND or http:URL`},
		{"grpc:localhost:9000", `--runner: unknown kind "grpc"; want synthetic, exec:COMMAND or http:URL`},
		{"", "--runner: empty; want synthetic, exec:COMMAND or http:URL"},
		{"synthetic:fast", `--runner: synthetic takes no argument (got "synthetic:fast"); want synthetic, exec:COMMAND or http:URL`},
		{"exec:", "--runner: exec: needs a command, e.g. exec:./examples/runners/progress.sh"},
		{"exec:   ", "--runner: exec: needs a command, e.g. exec:./examples/runners/progress.sh"},
		{"exec:./examples/runners/progres.sh", "--runner exec:./examples/runners/progres.sh: ./examples/runners/progres.sh: no such executable file (check the path and its x bit)"},
		{"exec:CUDA=1 pyhton3 serve.py", "--runner exec:CUDA=1 pyhton3 serve.py: pyhton3: not found in $PATH"},
		{"http:", "--runner: http: needs a URL, e.g. http:http://127.0.0.1:8000/generate"},
		{"http:127.0.0.1:8000", `--runner: http: URL "127.0.0.1:8000" must start with http:// or https://`},
		{"http:ftp://files/run", `--runner: http: URL "ftp://files/run" must start with http:// or https://`},
		{"http:http:///run", `--runner: http: URL "http:///run" has no host`},
	} {
		_, err := ParseRunner(tc.spec, RunnerOptions{})
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q: %v, want %q", tc.spec, err, tc.want)
		}
	}
}
