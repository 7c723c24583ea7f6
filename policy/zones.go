package policy

import (
	"archive/zip"
	"bytes"
	_ "embed"
	"fmt"
	"io"
	"sync"
	"time"
)

// Quota periods start at midnight in a rule's time zone, so every replica
// must read the same zone rules: zones come only from the IANA database
// embedded here (tzdata/zoneinfo.zip, Go's copy, with its README), never from
// the host's zoneinfo or $ZONEINFO, which differ between machines and with
// their updates. A newer database is a code change, rolled out like one.

//go:embed tzdata/zoneinfo.zip
var zoneinfoZip []byte

var (
	zonesOnce sync.Once
	zones     map[string]*zip.File
	zonesErr  error
	zoneCache sync.Map // name → *time.Location
)

// LoadZone returns the IANA time zone name from the embedded database.
func LoadZone(name string) (*time.Location, error) {
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	if loc, ok := zoneCache.Load(name); ok {
		return loc.(*time.Location), nil
	}
	data, err := ZoneData(name)
	if err != nil {
		return nil, err
	}
	loc, err := time.LoadLocationFromTZData(name, data)
	if err != nil {
		return nil, err
	}
	zoneCache.Store(name, loc)
	return loc, nil
}

// ZoneData is the embedded database's file for zone name.
func ZoneData(name string) ([]byte, error) {
	zonesOnce.Do(func() {
		r, err := zip.NewReader(bytes.NewReader(zoneinfoZip), int64(len(zoneinfoZip)))
		if err != nil {
			zonesErr = fmt.Errorf("embedded zoneinfo: %w", err)
			return
		}
		zones = make(map[string]*zip.File, len(r.File))
		for _, f := range r.File {
			zones[f.Name] = f
		}
	})
	if zonesErr != nil {
		return nil, zonesErr
	}
	f, ok := zones[name]
	if !ok {
		return nil, fmt.Errorf("unknown time zone %s", name)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}
