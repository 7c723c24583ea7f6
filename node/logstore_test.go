package node

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"go.etcd.io/bbolt"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// restartable starts a one-node cluster on dir with the given log store, waits for it to
// lead and returns it; the caller closes it.
func restartable(t *testing.T, dir, store string) (*Node, error) {
	t.Helper()
	p := DemoPolicy()
	p.Rules = nil
	n, err := Start(Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Bootstrap: true, Policy: p,
		Logger: quietLogger(), RaftLog: io.Discard, RaftLogStore: store, RaftWALSegmentSize: 64 << 10})
	if err != nil {
		return nil, err
	}
	waitFor(t, "leadership", n.Leading)
	return n, nil
}

// TestLogStoreIsKeptAcrossRestarts: a new data dir takes the WAL; a data dir whose log is
// in raft.db (written with the bolt store) stays on bolt when the flag is left out; naming
// the store that does not hold the log is refused with an error naming the flag, and the
// data dir is left as it was; either way the jobs written before the restart are there.
func TestLogStoreIsKeptAcrossRestarts(t *testing.T) {
	for _, tc := range []struct{ first, other string }{{"", LogStoreBolt}, {LogStoreBolt, LogStoreWAL}} {
		t.Run("first="+tc.first, func(t *testing.T) {
			dir := t.TempDir()
			n, err := restartable(t, dir, tc.first)
			if err != nil {
				t.Fatal(err)
			}
			want := LogStoreWAL
			if tc.first == LogStoreBolt {
				want = LogStoreBolt
			}
			if n.store.kind() != want {
				t.Fatalf("store %q on a new data dir with --raft-log-store=%q, want %q", n.store.kind(), tc.first, want)
			}
			ids := submitAll(t, n, "before", 300) // several 64 KiB WAL segments
			n.Close()

			if n, err := restartable(t, dir, tc.other); err == nil || !strings.Contains(err.Error(), "--raft-log-store="+tc.other) {
				if n != nil {
					n.Close()
				}
				t.Fatalf("restart with --raft-log-store=%s on a %s log: err %v, want a refusal naming the flag", tc.other, want, err)
			}
			if _, err := os.Stat(filepath.Join(dir, "wal")); (err == nil) != (want == LogStoreWAL) {
				t.Fatalf("after the refused start, wal/ exists=%v with a %s log", err == nil, want)
			}
			for _, again := range []string{"", want} {
				n, err = restartable(t, dir, again)
				if err != nil {
					t.Fatalf("restart with --raft-log-store=%q: %v", again, err)
				}
				if n.store.kind() != want {
					t.Fatalf("restart with --raft-log-store=%q took %q, want %q", again, n.store.kind(), want)
				}
				c := jobClient(n, DemoBobKey)
				for _, id := range ids {
					if _, err := c.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: id})); err != nil {
						t.Fatalf("job %s after a restart on the %s log: %v", id, want, err)
					}
				}
				n.Close()
			}
		})
	}
}

func TestLogStoreRejectsBadSettings(t *testing.T) {
	for _, tc := range []struct {
		store   string
		segment int
		want    string
	}{
		{"rocks", 0, `--raft-log-store) "rocks": must be "wal" or "bolt"`},
		{"", -1, "--raft-wal-segment-mib) -1 bytes"},
		{LogStoreWAL, 1 << 31, "--raft-wal-segment-mib) 2147483648 bytes"},
	} {
		dir := t.TempDir()
		_, err := Start(Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Bootstrap: true, Logger: quietLogger(),
			RaftLog: io.Discard, RaftLogStore: tc.store, RaftWALSegmentSize: tc.segment})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("store %q segment %d: err %v, want one containing %q", tc.store, tc.segment, err, tc.want)
		}
	}
}

// TestLogStoreRefusesAMissingOrDoubleLog: raft.db records which store holds the log, so a
// node whose WAL is gone, or whose data dir holds a log in both stores, refuses to start
// instead of starting on the wrong or an empty log.
func TestLogStoreRefusesAMissingOrDoubleLog(t *testing.T) {
	written := func(t *testing.T, store string) string {
		dir := t.TempDir()
		n, err := restartable(t, dir, store)
		if err != nil {
			t.Fatal(err)
		}
		submitAll(t, n, "x", 3)
		n.Close()
		return dir
	}
	refused := func(t *testing.T, dir, want string) {
		t.Helper()
		n, err := restartable(t, dir, "")
		if err == nil {
			n.Close()
			t.Fatalf("a node started on %s; want a refusal containing %q", dir, want)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("err %v, want one containing %q", err, want)
		}
	}
	t.Run("wal missing", func(t *testing.T) {
		dir := written(t, LogStoreWAL)
		if err := os.RemoveAll(filepath.Join(dir, "wal")); err != nil {
			t.Fatal(err)
		}
		refused(t, dir, "which is missing")
	})
	t.Run("wal beside a recorded bolt log", func(t *testing.T) {
		dir := written(t, LogStoreBolt)
		if err := os.Mkdir(filepath.Join(dir, "wal"), 0o755); err != nil {
			t.Fatal(err)
		}
		refused(t, dir, "exists too")
	})
	t.Run("entries in both", func(t *testing.T) {
		dir := written(t, LogStoreWAL)
		// What a build from before the WAL would leave after running on this data dir.
		b, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.StoreLog(&raft.Log{Index: 1, Term: 1, Type: raft.LogNoop}); err != nil {
			t.Fatal(err)
		}
		b.Close()
		refused(t, dir, "cannot tell which is current")
	})
}

// TestLogStoreOfADataDirFromBeforeTheRecord: a data dir written before raft.db recorded the
// store has its log in raft.db; the node stays on bolt, keeps its jobs, and records it.
func TestLogStoreOfADataDirFromBeforeTheRecord(t *testing.T) {
	dir := t.TempDir()
	n, err := restartable(t, dir, LogStoreBolt)
	if err != nil {
		t.Fatal(err)
	}
	ids := submitAll(t, n, "old", 3)
	n.Close()
	db, err := bbolt.Open(filepath.Join(dir, "raft.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("conf")).Delete(logStoreKey) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	n, err = restartable(t, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.store.kind() != LogStoreBolt {
		t.Fatalf("a data dir with its log in raft.db and no record took %q", n.store.kind())
	}
	if rec, err := n.store.stable.Get(logStoreKey); err != nil || string(rec) != LogStoreBolt {
		t.Fatalf("recorded %q, %v; want %q", rec, err, LogStoreBolt)
	}
	c := jobClient(n, DemoBobKey)
	for _, id := range ids {
		if _, err := c.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: id})); err != nil {
			t.Fatalf("job %s: %v", id, err)
		}
	}
}
