package fsm

import (
	"archive/zip"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// parisQuotaHash applies a one-job-a-day quota in Europe/Paris and two
// Submits either side of midnight in Paris (22:30 and 23:30 UTC in
// December), and returns the state hash: where the day starts decides
// whether the second is admitted.
func parisQuotaHash(t fatalf) string {
	m := newMachine(t)
	p := testPolicy()
	p.Rules = []*sluicev1.Rule{{Name: "daily", Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: 1, TimeZone: "Europe/Paris"}}}}
	if r := m.apply(CmdSetPolicy, 0, &raftv1.SetPolicy{Policy: p}); r.Err != nil {
		t.Fatalf("policy: %v", r.Err)
	}
	for _, at := range []string{"2026-12-04T22:30:00Z", "2026-12-04T23:30:00Z"} {
		ts, _ := time.Parse(time.RFC3339, at)
		m.apply(CmdSubmit, ts.UnixNano(), &raftv1.Submit{Tenant: "bob", Spec: &sluicev1.JobSpec{Model: "sdxl"}})
	}
	return m.f.Reads().StateHash()
}

// TestQuotaZonesIgnoreTheHostsZoneinfo: a replica whose ZONEINFO names a
// zone file where Europe/Paris is UTC+14 still starts Paris's day where
// every other replica does: zones come only from the embedded database. The
// other replica is this test binary run again with ZONEINFO set (Go reads
// it once per process).
func TestQuotaZonesIgnoreTheHostsZoneinfo(t *testing.T) {
	if os.Getenv("SLUICE_ZONE_REPLICA") != "" {
		fmt.Printf("hash=%s\n", parisQuotaHash(t))
		return
	}
	want := parisQuotaHash(t)
	// A zone file where "Europe/Paris" holds Pacific/Kiritimati's rules.
	kiritimati := zoneData(t, "Pacific/Kiritimati")
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "Europe/Paris", Method: zip.Store})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(kiritimati)
	zw.Close()
	bogus := filepath.Join(t.TempDir(), "zoneinfo.zip")
	if err := os.WriteFile(bogus, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if loc, err := time.LoadLocationFromTZData("Europe/Paris", kiritimati); err != nil || time.Date(2026, 12, 4, 23, 30, 0, 0, time.UTC).In(loc).Day() != 5 {
		t.Fatalf("the bogus Paris is not UTC+14: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestQuotaZonesIgnoreTheHostsZoneinfo$")
	cmd.Env = append(os.Environ(), "SLUICE_ZONE_REPLICA=1", "ZONEINFO="+bogus)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("replica with ZONEINFO=%s: %v\n%s", bogus, err, out)
	}
	_, after, ok := strings.Cut(string(out), "hash=")
	got, _, _ := strings.Cut(after, "\n")
	if !ok || got != want {
		t.Fatalf("a replica with another zone file reached state %s, this one %s", got, want)
	}
}

func zoneData(t *testing.T, name string) []byte {
	t.Helper()
	b, err := policy.ZoneData(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
