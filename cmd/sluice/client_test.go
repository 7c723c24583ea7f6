package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInputReadsInlineFileAndStdin(t *testing.T) {
	big := `{"prompt":"` + strings.Repeat("x", 200000) + `"}` // past a shell's single-argument limit
	path := filepath.Join(t.TempDir(), "in.json")
	if err := os.WriteFile(path, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, arg, stdin string
		want             int // length of the prompt
	}{
		{"inline", `{"prompt":"hi"}`, "", 2},
		{"@file", "@" + path, "", 200000},
		{"stdin", "-", big, 200000},
	} {
		in, err := readInput(tc.arg, strings.NewReader(tc.stdin))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := len(in.Fields["prompt"].GetStringValue()); got != tc.want {
			t.Fatalf("%s: prompt of %d bytes, want %d", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct{ arg, stdin, want string }{
		{"@" + filepath.Join(t.TempDir(), "missing.json"), "", "--input: open "},
		{"-", "[1,2]", "--input: stdin is not a JSON object"},
		{"-", strings.Repeat(" ", 2<<20), "--input: stdin is over the server's 1048576-byte request limit"},
		{"prompt=hi", "", "--input: not a JSON object"},
	} {
		_, err := readInput(tc.arg, strings.NewReader(tc.stdin))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("--input %.40q: %v, want %q", tc.arg, err, tc.want)
		}
	}
}

func TestNotBeforeTakesRFC3339OrADelayAndExplainsAnythingElse(t *testing.T) {
	now := time.Date(2026, 12, 4, 8, 30, 0, 0, time.UTC)
	for s, want := range map[string]time.Time{
		"30s":                  now.Add(30 * time.Second),
		"2h":                   now.Add(2 * time.Hour),
		"2026-12-05T09:00:00Z": time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC),
	} {
		got, err := parseWhen(s, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	_, err := parseWhen("tomorrow", now)
	const want = `--not-before: "tomorrow" is neither RFC 3339 (2026-12-05T08:00:00Z) nor a delay like 30s or 2h`
	if err == nil || err.Error() != want {
		t.Fatalf("tomorrow: %v\nwant %s", err, want)
	}
	t.Log(err)
}
