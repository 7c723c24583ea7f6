package gpuexec

import (
	"errors"
	"strings"
	"testing"
)

// deadLib is an NVMLLib whose Init fails with err and whose every other
// method fails the test: Discover and GPUSet must drop it after Init.
type deadLib struct {
	t   *testing.T
	err error
}

func (l deadLib) Init() error { return l.err }
func (l deadLib) called(name string) error {
	l.t.Errorf("NVML %s called after a failed Init", name)
	return errors.New("called")
}
func (l deadLib) Shutdown() error                       { return l.called("Shutdown") }
func (l deadLib) DriverVersion() (string, error)        { return "", l.called("DriverVersion") }
func (l deadLib) DeviceCount() (int, error)             { return 0, l.called("DeviceCount") }
func (l deadLib) DeviceByIndex(int) (NVMLDevice, error) { return nil, l.called("DeviceByIndex") }

func TestGPUSetDropsNVMLAfterAFailedInit(t *testing.T) {
	set, err := Discover(deadLib{t, ErrNoNVMLLibrary}, DeclaredGPUs{Count: 1, MemoryMB: 8000})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := set.Refresh()
	if err != nil || len(inv.GPUs) != 1 || inv.GPUs[0].DeviceID() != "0" {
		t.Fatalf("refresh of declared GPUs: %+v, %v", inv, err)
	}
	if err := set.Close(); err != nil {
		t.Fatal(err)
	}
	if want := "no NVIDIA driver (libnvidia-ml.so not found): using --gpus 1 --gpu-memory-mb 8000"; inv.Note != want {
		t.Fatalf("note %q, want %q", inv.Note, want)
	}
}

func TestDiscoverRejectsImpossibleDeclaredGPUs(t *testing.T) {
	for _, tc := range []struct {
		d    DeclaredGPUs
		want string
	}{
		{DeclaredGPUs{Count: -1}, "--gpus: -1 is outside 0–64"},
		{DeclaredGPUs{Count: 65}, "--gpus: 65 is outside 0–64"},
		{DeclaredGPUs{Count: 1, MemoryMB: -8}, "--gpu-memory-mb: -8 is outside 0–1048576"},
	} {
		_, err := Discover(deadLib{t, ErrNoNVMLLibrary}, tc.d)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.d, err, tc.want)
		}
	}
}
