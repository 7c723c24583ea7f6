package node

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Gossip encryption: every pool member holds the same keys (memberlist's
// keyring, AES-GCM), read from --gossip-key-file: one base64 key of 16, 24
// or 32 bytes per line. The first line is the primary key, which encrypts;
// every key listed decrypts. The file is re-read when it changes (polled
// every second) or on ReloadKeys (SIGHUP), so keys rotate without a
// restart, and no member drops out if each step reaches every member
// before the next: add the new key as the second line everywhere, then
// make it the first everywhere, then remove the old one.

// maxGossipKeys bounds the keyring a key file may fill.
const maxGossipKeys = 16

// LoadGossipKeys reads a key file; errors name the flag, the file and the
// line.
func LoadGossipKeys(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--gossip-key-file: %w", err)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("--gossip-key-file %s: line %d: not base64: %v", path, i+1, err)
		}
		if err := memberlist.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("--gossip-key-file %s: line %d: %d bytes; a key is 16, 24 or 32 bytes", path, i+1, len(k))
		}
		for _, have := range keys {
			if bytes.Equal(have, k) {
				return nil, fmt.Errorf("--gossip-key-file %s: line %d: the key appears twice", path, i+1)
			}
		}
		keys = append(keys, k)
	}
	switch {
	case len(keys) == 0:
		return nil, fmt.Errorf("--gossip-key-file %s: no key (one base64 key per line; make one with: head -c 32 /dev/urandom | base64)", path)
	case len(keys) > maxGossipKeys:
		return nil, fmt.Errorf("--gossip-key-file %s: %d keys exceed the limit of %d", path, len(keys), maxGossipKeys)
	}
	return keys, nil
}

// setKeys makes the keyring hold exactly keys, keys[0] the primary: new
// keys go in first and the old primary leaves last, so that at no point
// does the ring lack a key a member may still use.
func setKeys(ring *memberlist.Keyring, keys [][]byte) error {
	for _, k := range keys {
		if err := ring.AddKey(k); err != nil {
			return err
		}
	}
	if err := ring.UseKey(keys[0]); err != nil {
		return err
	}
	for _, have := range ring.GetKeys() {
		listed := false
		for _, k := range keys {
			listed = listed || bytes.Equal(have, k)
		}
		if !listed {
			if err := ring.RemoveKey(have); err != nil {
				return err
			}
		}
	}
	return nil
}

// ReloadKeys re-reads the key file now; on an error the keys in use stay.
func (p *Pool) ReloadKeys() error {
	if p.cfg.KeyFile == "" {
		return errors.New("--gossip-key-file: not set; the pool is not encrypted")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reloadKeysLocked()
}

func (p *Pool) reloadKeysLocked() error {
	p.keyStamp = stampOf(p.cfg.KeyFile)
	keys, err := LoadGossipKeys(p.cfg.KeyFile)
	if err == nil {
		err = setKeys(p.ring, keys)
	}
	if err != nil {
		p.log.Error("gossip keys not reloaded; keeping the current ones", "err", err)
		return err
	}
	p.log.Info("gossip keys loaded", "file", p.cfg.KeyFile, "keys", len(keys))
	return nil
}

// watchKeys reloads the key file when it changes, until the pool closes.
func (p *Pool) watchKeys() {
	defer close(p.watchDone)
	t := time.NewTicker(certPollInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		if stampOf(p.cfg.KeyFile) != p.keyStamp {
			p.reloadKeysLocked()
		}
		p.mu.Unlock()
	}
}
