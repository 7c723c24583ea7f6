package gpuexec

import "errors"

// NVMLLib is the part of NVIDIA's management library (NVML) that discovery
// uses, in Sluice's own types: go-nvml needs cgo, and this package must build
// without it. SystemNVML returns the host's library; in cgo builds FromNVML
// adapts any go-nvml nvml.Interface, the real one or go-nvml's mocks.
//
// After Init fails, no other method may be called: go-nvml calls into a
// library it may have failed to load, which kills the process. Discover and
// FromNVML both make such a call impossible.
type NVMLLib interface {
	Init() error
	Shutdown() error
	DriverVersion() (string, error)
	DeviceCount() (int, error)
	DeviceByIndex(i int) (NVMLDevice, error)
}

// NVMLDevice is a handle on one GPU, or on one MIG device of a GPU.
type NVMLDevice interface {
	UUID() (string, error)
	Name() (string, error)
	// Memory is in bytes.
	Memory() (total, free uint64, err error)
	// Utilization is the percentage of the last sample period in which a
	// kernel ran; MIG devices have none (ErrNVMLNotSupported).
	Utilization() (uint32, error)
	MIGEnabled() (bool, error)
	MaxMIGDevices() (int, error)
	// MIGDeviceByIndex returns ErrNVMLNotFound for an empty MIG slot.
	MIGDeviceByIndex(i int) (NVMLDevice, error)
}

var (
	// ErrNoNVMLLibrary is Init's error when libnvidia-ml.so cannot be
	// loaded: the host has no NVIDIA driver.
	ErrNoNVMLLibrary = errors.New("libnvidia-ml.so not found")
	// ErrNVMLNotSupported is a device's answer to a query it cannot
	// answer (utilisation of a MIG device, MIG mode of a GPU without MIG).
	ErrNVMLNotSupported = errors.New("not supported by this device")
	// ErrNVMLNotFound is the answer for an empty MIG slot.
	ErrNVMLNotFound = errors.New("not found")
)
