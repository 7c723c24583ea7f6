package node

import (
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
	"go.etcd.io/bbolt"
)

// Where the raft log lives (Config.RaftLogStore, --raft-log-store).
const (
	// LogStoreWAL keeps the log in hashicorp/raft-wal's append-only segment files under
	// <data>/wal: one fsync per append. Consul replaced its bolt log store with it.
	LogStoreWAL = "wal"
	// LogStoreBolt keeps the log inside raft.db with raft-boltdb: a bolt commit per append,
	// which is two fsyncs (the pages, then the meta page).
	LogStoreBolt = "bolt"
)

// stores are a node's raft storage: the stable store (current term, vote) is always raft.db
// (raft-boltdb); the log is either that same bolt store or a raft-wal.
type stores struct {
	stable *raftboltdb.BoltStore
	log    raft.LogStore
	kind   string
	wal    *raftwal.WAL // nil with the bolt log
}

func (s *stores) Close() error {
	var errs []error
	if s.wal != nil {
		errs = append(errs, s.wal.Close())
	}
	return errors.Join(append(errs, s.stable.Close())...)
}

// openStores opens raft.db and the log store that choice names. An empty choice keeps
// whichever store already holds this data dir's log (a data dir written before raft-wal
// stays on bolt) and takes the WAL for a new one. Naming the other store than the one that
// holds the log is refused: the node would start with an empty log and drop entries it
// acknowledged.
func openStores(dir, choice string, segmentSize int, logger hclog.Logger) (*stores, error) {
	if choice != "" && choice != LogStoreWAL && choice != LogStoreBolt {
		return nil, fmt.Errorf("node: raft log store (--raft-log-store) %q: must be %q or %q", choice, LogStoreWAL, LogStoreBolt)
	}
	if segmentSize < 0 || segmentSize > math.MaxInt32 {
		return nil, fmt.Errorf("node: WAL segment size (--raft-wal-segment-mib) %d bytes: must be between 1 byte and %d (2 GiB)", segmentSize, math.MaxInt32)
	}
	// The free-page list is not written with every commit (etcd does the same): bolt rebuilds
	// it from the pages when it opens the file. A commit then writes the log's pages and its
	// meta page only. The timeout makes a second process on the same data dir fail instead of
	// waiting for the file lock forever.
	path := filepath.Join(dir, "raft.db")
	stable, err := raftboltdb.New(raftboltdb.Options{
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
	s := &stores{stable: stable}
	boltLast, err := stable.LastIndex()
	if err != nil {
		stable.Close()
		return nil, fmt.Errorf("node: read %s: %w", path, err)
	}
	walDir := filepath.Join(dir, "wal")
	_, statErr := os.Stat(walDir)
	walExists := statErr == nil
	switch {
	case choice == LogStoreWAL && boltLast > 0:
		stable.Close()
		return nil, fmt.Errorf("node: --raft-log-store=wal, but the raft log of %s is in %s (entries up to %d): start with --raft-log-store=bolt, or leave the flag out", dir, path, boltLast)
	case choice == LogStoreBolt && walExists:
		stable.Close()
		return nil, fmt.Errorf("node: --raft-log-store=bolt, but the raft log of %s is in %s: start with --raft-log-store=wal, or leave the flag out", dir, walDir)
	case choice == LogStoreBolt || (choice == "" && boltLast > 0):
		s.log, s.kind = stable, LogStoreBolt
		return s, nil
	}
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		stable.Close()
		return nil, fmt.Errorf("node: raft log dir: %w", err)
	}
	if segmentSize <= 0 {
		segmentSize = raftwal.DefaultSegmentSize
	}
	w, err := raftwal.Open(walDir, raftwal.WithLogger(logger.Named("wal")), raftwal.WithSegmentSize(segmentSize))
	if err != nil {
		stable.Close()
		return nil, fmt.Errorf("node: open raft log %s: %w", walDir, err)
	}
	s.log, s.kind, s.wal = w, LogStoreWAL, w
	return s, nil
}
