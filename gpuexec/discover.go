package gpuexec

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
)

// GPU is one slot a job can be pinned to: a whole GPU, or one MIG device of
// a GPU in MIG mode (such a GPU is then not itself a slot: its memory and
// compute belong to its MIG devices).
type GPU struct {
	// Index is the GPU's NVML index; a MIG device's is its parent's.
	Index int
	// MIGIndex is a MIG device's index among its parent's; 0 for a whole GPU.
	MIGIndex int
	// UUID is NVML's ("GPU-…", or "MIG-…" for a MIG device); empty for a
	// declared GPU.
	UUID          string
	Name          string
	MemoryTotalMB int64
	MemoryFreeMB  int64
	// UtilizationPct is the share of NVML's last sample period in which a
	// kernel ran; -1 where there is none (MIG devices, declared GPUs).
	UtilizationPct int32
	MIG            bool
	// ParentUUID is a MIG device's GPU.
	ParentUUID string
}

// DeviceID names the slot in CUDA_VISIBLE_DEVICES (Assignment.GPUs): its
// UUID, which survives reboots and is a MIG device's only name, or, for a
// declared GPU, its index.
func (g GPU) DeviceID() string {
	if g.UUID != "" {
		return g.UUID
	}
	return strconv.Itoa(g.Index)
}

// Inventory is what an executor knows of its GPUs at one moment.
type Inventory struct {
	GPUs []GPU
	// Source is SourceNVML or SourceDeclared.
	Source string
	// Driver is the NVIDIA driver version (NVML only).
	Driver string
	// Note says in one line where the GPUs came from, and why: the line an
	// operator reads when an executor reports other GPUs than expected.
	Note string
}

// Inventory sources.
const (
	SourceNVML     = "nvml"
	SourceDeclared = "declared"
)

// DeclaredGPUs is what the operator says the host has (the executor's
// --gpus and --gpu-memory-mb flags); Discover uses it only when NVML is
// unavailable.
type DeclaredGPUs struct {
	Count    int
	MemoryMB int64
}

// Bounds on DeclaredGPUs, far above any real host, to catch typos.
const (
	MaxDeclaredGPUs        = 64
	MaxDeclaredGPUMemoryMB = 1 << 20 // 1 TiB
)

func (d DeclaredGPUs) validate() error {
	if d.Count < 0 || d.Count > MaxDeclaredGPUs {
		return fmt.Errorf("--gpus: %d is outside 0–%d", d.Count, MaxDeclaredGPUs)
	}
	if d.MemoryMB < 0 || d.MemoryMB > MaxDeclaredGPUMemoryMB {
		return fmt.Errorf("--gpu-memory-mb: %d is outside 0–%d", d.MemoryMB, MaxDeclaredGPUMemoryMB)
	}
	return nil
}

// inventory is the declared GPUs, with why NVML was not used.
func (d DeclaredGPUs) inventory(why error) Inventory {
	reason := why.Error()
	if errors.Is(why, ErrNoNVMLLibrary) {
		reason = "no NVIDIA driver (libnvidia-ml.so not found)"
	}
	inv := Inventory{Source: SourceDeclared,
		Note: fmt.Sprintf("%s: using --gpus %d --gpu-memory-mb %d", reason, d.Count, d.MemoryMB)}
	for i := range d.Count {
		inv.GPUs = append(inv.GPUs, GPU{Index: i, Name: "declared", MemoryTotalMB: d.MemoryMB, MemoryFreeMB: d.MemoryMB, UtilizationPct: -1})
	}
	return inv
}

// GPUSet is an executor's GPUs for its lifetime: found once by Discover,
// re-read by Refresh, released by Close. Its methods are safe to call from
// several goroutines.
type GPUSet struct {
	mu sync.Mutex
	// lib is set only between a successful Init and Close: after a failed
	// Init the set never had it, so nothing can call into NVML then.
	lib     NVMLLib
	devices []NVMLDevice // one per inv.GPUs entry, while lib is set
	inv     Inventory
}

// Discover finds the host's GPUs through NVML: every GPU, or, for a GPU in
// MIG mode, each of its MIG devices. If NVML cannot be initialised (no
// driver, a build without cgo, any Init failure) it falls back to the
// declared GPUs, and the inventory's Note says why; NVML is not touched
// again. An error means bad declared values, or a driver that initialises
// but cannot list its GPUs: a broken host, not one without GPUs.
func Discover(lib NVMLLib, declared DeclaredGPUs) (*GPUSet, error) {
	if err := declared.validate(); err != nil {
		return nil, err
	}
	if err := lib.Init(); err != nil {
		return &GPUSet{inv: declared.inventory(err)}, nil
	}
	inv, devices, err := enumerate(lib)
	if err != nil {
		return nil, errors.Join(err, lib.Shutdown())
	}
	if declared != (DeclaredGPUs{}) {
		inv.Note += fmt.Sprintf("; --gpus %d --gpu-memory-mb %d ignored: NVML knows better", declared.Count, declared.MemoryMB)
	}
	return &GPUSet{lib: lib, devices: devices, inv: inv}, nil
}

// enumerate lists the slots of an initialised NVML.
func enumerate(lib NVMLLib) (Inventory, []NVMLDevice, error) {
	inv := Inventory{Source: SourceNVML}
	inv.Driver, _ = lib.DriverVersion() // only informative
	n, err := lib.DeviceCount()
	if err != nil {
		return inv, nil, err
	}
	var devices []NVMLDevice
	whole, migs := 0, 0
	for i := range n {
		d, err := lib.DeviceByIndex(i)
		if err != nil {
			return inv, nil, err
		}
		g, err := readGPU(d, i)
		if err != nil {
			return inv, nil, fmt.Errorf("GPU %d: %w", i, err)
		}
		mig, err := d.MIGEnabled()
		if err != nil && !errors.Is(err, ErrNVMLNotSupported) {
			return inv, nil, fmt.Errorf("GPU %d: %w", i, err)
		}
		if !mig {
			inv.GPUs, devices = append(inv.GPUs, g), append(devices, d)
			whole++
			continue
		}
		slots, err := d.MaxMIGDevices()
		if err != nil {
			return inv, nil, fmt.Errorf("GPU %d: %w", i, err)
		}
		for j := range slots {
			md, err := d.MIGDeviceByIndex(j)
			if errors.Is(err, ErrNVMLNotFound) {
				continue // a slot with no MIG device configured
			}
			if err != nil {
				return inv, nil, fmt.Errorf("GPU %d: %w", i, err)
			}
			mg, err := readGPU(md, i)
			if err != nil {
				return inv, nil, fmt.Errorf("GPU %d MIG device %d: %w", i, j, err)
			}
			mg.MIG, mg.MIGIndex, mg.ParentUUID = true, j, g.UUID
			inv.GPUs, devices = append(inv.GPUs, mg), append(devices, md)
			migs++
		}
	}
	inv.Note = fmt.Sprintf("NVML: driver %s, %d GPUs", inv.Driver, whole)
	if migs > 0 {
		inv.Note += fmt.Sprintf(" and %d MIG devices", migs)
	}
	return inv, devices, nil
}

// readGPU reads one device's identity, memory and utilisation.
func readGPU(d NVMLDevice, index int) (GPU, error) {
	g := GPU{Index: index}
	var err error
	if g.UUID, err = d.UUID(); err != nil {
		return g, err
	}
	if g.Name, err = d.Name(); err != nil {
		return g, err
	}
	return g, readUsage(d, &g)
}

// readUsage re-reads what changes while a GPU works: free memory and
// utilisation.
func readUsage(d NVMLDevice, g *GPU) error {
	total, free, err := d.Memory()
	if err != nil {
		return err
	}
	g.MemoryTotalMB, g.MemoryFreeMB = int64(total>>20), int64(free>>20)
	util, err := d.Utilization()
	switch {
	case errors.Is(err, ErrNVMLNotSupported):
		g.UtilizationPct = -1
	case err != nil:
		return err
	default:
		g.UtilizationPct = int32(min(util, 100))
	}
	return nil
}

// Inventory is the set's GPUs as last read.
func (s *GPUSet) Inventory() Inventory {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshot()
}

// snapshot copies the inventory, so that callers cannot change the set's.
func (s *GPUSet) snapshot() Inventory {
	inv := s.inv
	inv.GPUs = append([]GPU(nil), s.inv.GPUs...)
	return inv
}

// Refresh re-reads free memory and utilisation, for the executor's
// periodic report. A GPU that cannot be read keeps its last values, and the
// error names it. Declared GPUs, and a closed set, have nothing to re-read.
func (s *GPUSet) Refresh() (Inventory, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lib == nil {
		return s.snapshot(), nil
	}
	var errs []error
	for i, d := range s.devices {
		g := s.inv.GPUs[i]
		if err := readUsage(d, &g); err != nil {
			errs = append(errs, fmt.Errorf("GPU %s: %w", s.inv.GPUs[i].DeviceID(), err))
			continue
		}
		s.inv.GPUs[i] = g
	}
	return s.snapshot(), errors.Join(errs...)
}

// Close shuts NVML down; the set's inventory stays readable. Closing again
// does nothing.
func (s *GPUSet) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lib == nil {
		return nil
	}
	lib := s.lib
	s.lib, s.devices = nil, nil
	return lib.Shutdown()
}
