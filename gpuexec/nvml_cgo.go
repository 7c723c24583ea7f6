//go:build cgo

package gpuexec

import (
	"errors"
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// SystemNVML is the host's NVML (libnvidia-ml.so.1, loaded at Init).
func SystemNVML() NVMLLib { return FromNVML(nvml.New()) }

// FromNVML adapts a go-nvml library (the real one or go-nvml's mocks) to
// NVMLLib. It guards the library: once Init has failed, or after Shutdown,
// every call, on the library or on a device it returned, fails with an error
// and never reaches go-nvml.
func FromNVML(lib nvml.Interface) NVMLLib { return &goNVML{lib: lib} }

// goNVML's states: only in nvmlReady may go-nvml be called.
const (
	nvmlNew = iota
	nvmlReady
	nvmlInitFailed
	nvmlShutDown
)

type goNVML struct {
	lib   nvml.Interface
	mu    sync.Mutex
	state int
}

// errNVMLNotReady refuses a call made outside nvmlReady.
var errNVMLNotReady = errors.New("NVML is not initialised (Init failed, or Shutdown was called): call refused")

// do runs one go-nvml call f, only in nvmlReady; holding the lock through
// the call keeps a concurrent Shutdown from slipping in between.
func (g *goNVML) do(what string, f func() nvml.Return) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != nvmlReady {
		return errNVMLNotReady
	}
	return nvmlError(what, f())
}

func (g *goNVML) Init() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != nvmlNew {
		return fmt.Errorf("NVML init: already tried: %w", errNVMLNotReady)
	}
	ret := g.lib.Init()
	if ret == nvml.SUCCESS {
		g.state = nvmlReady
		return nil
	}
	g.state = nvmlInitFailed
	return initError(ret)
}

// initError describes a failed Init without asking NVML: Return.Error calls
// nvmlErrorString in the library, which must not be called now.
func initError(ret nvml.Return) error {
	switch ret {
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return ErrNoNVMLLibrary
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return errors.New("NVML init: the NVIDIA kernel driver is not loaded")
	case nvml.ERROR_NO_PERMISSION:
		return errors.New("NVML init: no permission to open the NVIDIA devices")
	case nvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return errors.New("NVML init: libnvidia-ml.so and the kernel driver are different versions (reload the driver or reboot)")
	}
	return fmt.Errorf("NVML init: return code %d", int(ret))
}

func (g *goNVML) Shutdown() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != nvmlReady {
		return nil // nothing to release; never call NVML outside nvmlReady
	}
	g.state = nvmlShutDown
	return nvmlError("shutdown", g.lib.Shutdown())
}

func (g *goNVML) DriverVersion() (v string, err error) {
	err = g.do("driver version", func() (ret nvml.Return) { v, ret = g.lib.SystemGetDriverVersion(); return })
	return v, err
}

func (g *goNVML) DeviceCount() (n int, err error) {
	err = g.do("device count", func() (ret nvml.Return) { n, ret = g.lib.DeviceGetCount(); return })
	return n, err
}

func (g *goNVML) DeviceByIndex(i int) (NVMLDevice, error) {
	var d nvml.Device
	if err := g.do(fmt.Sprintf("device %d", i), func() (ret nvml.Return) { d, ret = g.lib.DeviceGetHandleByIndex(i); return }); err != nil {
		return nil, err
	}
	return goNVMLDevice{g, d}, nil
}

// goNVMLDevice is a device handle whose every call goes through its
// library's guard.
type goNVMLDevice struct {
	g *goNVML
	d nvml.Device
}

func (d goNVMLDevice) UUID() (v string, err error) {
	err = d.g.do("uuid", func() (ret nvml.Return) { v, ret = d.d.GetUUID(); return })
	return v, err
}

func (d goNVMLDevice) Name() (v string, err error) {
	err = d.g.do("name", func() (ret nvml.Return) { v, ret = d.d.GetName(); return })
	return v, err
}

func (d goNVMLDevice) Memory() (total, free uint64, err error) {
	var m nvml.Memory
	err = d.g.do("memory", func() (ret nvml.Return) { m, ret = d.d.GetMemoryInfo(); return })
	return m.Total, m.Free, err
}

func (d goNVMLDevice) Utilization() (uint32, error) {
	var u nvml.Utilization
	err := d.g.do("utilisation", func() (ret nvml.Return) { u, ret = d.d.GetUtilizationRates(); return })
	return u.Gpu, err
}

func (d goNVMLDevice) MIGEnabled() (bool, error) {
	var current int
	err := d.g.do("MIG mode", func() (ret nvml.Return) { current, _, ret = d.d.GetMigMode(); return })
	return current == nvml.DEVICE_MIG_ENABLE, err
}

func (d goNVMLDevice) MaxMIGDevices() (n int, err error) {
	err = d.g.do("MIG device count", func() (ret nvml.Return) { n, ret = d.d.GetMaxMigDeviceCount(); return })
	return n, err
}

func (d goNVMLDevice) MIGDeviceByIndex(i int) (NVMLDevice, error) {
	var m nvml.Device
	if err := d.g.do(fmt.Sprintf("MIG device %d", i), func() (ret nvml.Return) { m, ret = d.d.GetMigDeviceHandleByIndex(i); return }); err != nil {
		return nil, err
	}
	return goNVMLDevice{d.g, m}, nil
}

// nvmlError turns a Return of an initialised library into an error that
// names what was asked.
func nvmlError(what string, ret nvml.Return) error {
	switch ret {
	case nvml.SUCCESS:
		return nil
	case nvml.ERROR_NOT_SUPPORTED:
		return fmt.Errorf("NVML %s: %w", what, ErrNVMLNotSupported)
	case nvml.ERROR_NOT_FOUND:
		return fmt.Errorf("NVML %s: %w", what, ErrNVMLNotFound)
	}
	return fmt.Errorf("NVML %s: %s", what, ret.Error())
}
