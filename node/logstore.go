package node

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/segment"
	"go.etcd.io/bbolt"
)

// Where the raft log lives (Config.RaftLogStore, --raft-log-store).
const (
	// LogStoreWAL keeps the log in hashicorp/raft-wal's append-only segment files under
	// <data>/wal: one fsync per append. Consul ships it as its "wal" log-store backend.
	LogStoreWAL = "wal"
	// LogStoreBolt keeps the log inside raft.db with raft-boltdb: a bolt commit per append,
	// which is two fsyncs (the pages, then the meta page).
	LogStoreBolt = "bolt"
)

// stores are a node's raft storage: the stable store (current term, vote) is always raft.db
// (raft-boltdb); the log is either that same bolt store or a raft-wal.
type stores struct {
	stable boltStore
	log    raft.LogStore
	wal    *raftwal.WAL // nil with the bolt log
}

// kind is the store that holds the log: LogStoreWAL or LogStoreBolt.
func (s *stores) kind() string {
	if s.wal != nil {
		return LogStoreWAL
	}
	return LogStoreBolt
}

func (s *stores) Close() error {
	var errs []error
	if s.wal != nil {
		errs = append(errs, s.wal.Close())
	}
	return errors.Join(append(errs, s.stable.Close())...)
}

// logStoreKey is where raft.db records which store holds the log, so that a node never
// takes a missing or emptied log for a new one.
var logStoreKey = []byte("sluice_log_store")

// raft-wal can drop only a prefix or a suffix of the log. After installing a snapshot,
// hashicorp/raft drops the whole log (instead of all but the trailing entries) only on a
// store that says it is monotonic; raft.NewLogCache passes that on. A wrapper that hid it
// would leave raft-wal refusing the next append (found by the catch-up test).
var _ raft.MonotonicLogStore = (*raftwal.WAL)(nil)

// openStores opens raft.db and the log store. The store that holds the log is the one
// raft.db records; a data dir from before that record keeps its log in raft.db, and a new
// one takes choice, or the WAL. choice naming the other store than the one holding the log
// is refused, and so is a data dir whose recorded log is missing or whose two stores both
// hold entries: the node would start on an empty or wrong log and forget entries it had
// acknowledged. d is where the files are (osDisk outside tests).
func openStores(d disk, dir, choice string, segmentSize int, logger hclog.Logger) (_ *stores, err error) {
	if choice != "" && choice != LogStoreWAL && choice != LogStoreBolt {
		return nil, fmt.Errorf("node: raft log store (--raft-log-store) %q: must be %q or %q", choice, LogStoreWAL, LogStoreBolt)
	}
	if segmentSize < 0 || segmentSize > math.MaxInt32 {
		return nil, fmt.Errorf("node: WAL segment size (--raft-wal-segment-mib) %d bytes: must be at most %d (2 GiB; 0 takes the default, 64 MiB)", segmentSize, math.MaxInt32)
	}
	// The free-page list is not written with every commit (etcd does the same): bolt rebuilds
	// it from the pages when it opens the file. A commit then writes the log's pages and its
	// meta page only. The timeout makes a second process on the same data dir fail instead of
	// waiting for the file lock forever.
	path := filepath.Join(dir, "raft.db")
	stable, err := d.openStable(raftboltdb.Options{
		Path: path,
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true,
			FreelistType: bbolt.FreelistMapType},
	})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("node: open %s: locked by another process (is a node already running on --data %s?): %w", path, dir, err)
		}
		return nil, fmt.Errorf("node: open %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			stable.Close()
		}
	}()
	kind, recorded, err := logStoreOf(dir, stable)
	if err != nil {
		return nil, err
	}
	if kind == "" {
		kind = cmp.Or(choice, LogStoreWAL)
	}
	if choice != "" && choice != kind {
		return nil, fmt.Errorf("node: --raft-log-store=%s, but the raft log of %s is in the %s store: start with --raft-log-store=%s, or leave the flag out", choice, dir, kind, kind)
	}
	s := &stores{stable: stable, log: stable}
	if kind == LogStoreWAL {
		walDir := filepath.Join(dir, "wal")
		if err := os.MkdirAll(walDir, 0o755); err != nil {
			return nil, fmt.Errorf("node: raft log dir: %w", err)
		}
		s.wal, err = raftwal.Open(walDir, raftwal.WithLogger(logger.Named("wal")),
			raftwal.WithSegmentSize(cmp.Or(segmentSize, raftwal.DefaultSegmentSize)),
			raftwal.WithSegmentFiler(segment.NewFiler(walDir, d.walFiles())), raftwal.WithMetaStore(d.walMeta()))
		if err != nil {
			return nil, fmt.Errorf("node: open raft log %s: %w", walDir, err)
		}
		s.log = s.wal
	}
	if !recorded {
		if err := stable.Set(logStoreKey, []byte(kind)); err != nil {
			if s.wal != nil {
				s.wal.Close()
			}
			return nil, fmt.Errorf("node: record the log store in %s: %w", path, err)
		}
	}
	return s, nil
}

// logStoreOf tells which store holds the data dir's log ("" for a new data dir) and whether
// raft.db records it.
func logStoreOf(dir string, stable boltStore) (kind string, recorded bool, err error) {
	path, walDir := filepath.Join(dir, "raft.db"), filepath.Join(dir, "wal")
	rec, err := stable.Get(logStoreKey)
	if err != nil && !errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return "", false, fmt.Errorf("node: read %s: %w", path, err)
	}
	boltLast, err := stable.LastIndex()
	if err != nil {
		return "", false, fmt.Errorf("node: read %s: %w", path, err)
	}
	_, err = os.Stat(walDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("node: raft log dir: %w", err)
	}
	walExists := err == nil
	both := boltLast > 0 && walExists
	errBoth := func() error {
		return fmt.Errorf("node: both %s (entries up to %d) and %s hold a raft log (was this data dir run by a build from before the WAL?); "+
			"the node cannot tell which is current: remove it from the cluster (sluice admin remove), empty its data dir and join it again", path, boltLast, walDir)
	}
	switch string(rec) {
	case LogStoreWAL:
		if !walExists {
			return "", false, fmt.Errorf("node: %s records the raft log in %s, which is missing: the entries after the last snapshot are gone from this node; "+
				"remove it from the cluster (sluice admin remove), empty its data dir and join it again", path, walDir)
		}
		if both {
			return "", false, errBoth()
		}
		return LogStoreWAL, true, nil
	case LogStoreBolt:
		if walExists {
			return "", false, fmt.Errorf("node: %s records the raft log in itself, but %s exists too: remove %s if nothing else put it there", path, walDir, walDir)
		}
		return LogStoreBolt, true, nil
	case "":
	default:
		return "", false, fmt.Errorf("node: %s records the raft log store %q, which this build does not know", path, rec)
	}
	switch {
	case both:
		return "", false, errBoth()
	case boltLast > 0: // written before raft.db recorded the store: always bolt
		return LogStoreBolt, false, nil
	case walExists: // the first start stopped after creating wal/, before recording it
		return LogStoreWAL, false, nil
	}
	return "", false, nil
}
