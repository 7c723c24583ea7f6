package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ListenError is a listener that could not be opened: What is "http",
// "raft" or "gossip", the address a node was given for it.
type ListenError struct {
	What, Addr string
	Err        error
}

func (e *ListenError) Error() string {
	if e.InUse() {
		return fmt.Sprintf("%s address %s: in use by another process; give a free one", e.What, e.Addr)
	}
	return fmt.Sprintf("%s address %s: %v", e.What, e.Addr, e.Err)
}

// InUse reports whether another process holds the address.
func (e *ListenError) InUse() bool {
	// memberlist formats the bind error with %v: look at its words too.
	return errors.Is(e.Err, syscall.EADDRINUSE) || strings.Contains(e.Err.Error(), "address already in use")
}

func (e *ListenError) Unwrap() error { return e.Err }

// raftAddrFile records, in the data dir, the raft address a node bound: the
// other servers know it by that address, so a node restarted without one
// (port 0, "pick any") takes it again rather than a new random port.
const raftAddrFile = "raft-address"

// recordedRaftAddr is the address to bind raft on: the one given, unless it
// asks for any port and the data dir recorded one.
func recordedRaftAddr(dataDir, given string) string {
	host, port, err := net.SplitHostPort(given)
	if err != nil || port != "0" {
		return given
	}
	b, err := os.ReadFile(filepath.Join(dataDir, raftAddrFile))
	if err != nil {
		return given
	}
	rec := strings.TrimSpace(string(b))
	if recHost, _, err := net.SplitHostPort(rec); err != nil || recHost != host {
		return given // asked for another host: any port there
	}
	return rec
}

func recordRaftAddr(dataDir, addr string) error {
	path := filepath.Join(dataDir, raftAddrFile)
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == addr {
		return nil
	}
	// Written aside, synced, renamed over and the directory synced: a power cut leaves the
	// old address or the new one, never an empty file (the node would then take a new port
	// its peers do not know).
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err == nil {
		_, err = f.WriteString(addr + "\n")
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dataDir)
	}
	if err != nil {
		return fmt.Errorf("node: record the raft address: %w", err)
	}
	return nil
}
