//go:build !cgo

package gpuexec

import "errors"

// SystemNVML, in a build without cgo, is a library whose Init always fails:
// go-nvml cannot be linked, so Discover falls back to the declared GPUs.
func SystemNVML() NVMLLib { return noNVML{} }

// errNoCgo is the one-line reason Discover's note gives.
var errNoCgo = errors.New("built without cgo: NVML unavailable")

// noNVML fails Init; Discover never calls anything else after that.
type noNVML struct{}

func (noNVML) Init() error                           { return errNoCgo }
func (noNVML) Shutdown() error                       { return errNoCgo }
func (noNVML) DriverVersion() (string, error)        { return "", errNoCgo }
func (noNVML) DeviceCount() (int, error)             { return 0, errNoCgo }
func (noNVML) DeviceByIndex(int) (NVMLDevice, error) { return nil, errNoCgo }
