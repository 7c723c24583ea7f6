//go:build !cgo

package gpuexec

import "testing"

func TestWithoutCgoDiscoverUsesTheDeclaredGPUs(t *testing.T) {
	set, err := Discover(SystemNVML(), DeclaredGPUs{Count: 2, MemoryMB: 24000})
	if err != nil {
		t.Fatal(err)
	}
	inv := set.Inventory()
	if want := "built without cgo: NVML unavailable: using --gpus 2 --gpu-memory-mb 24000"; inv.Note != want || inv.Source != SourceDeclared || len(inv.GPUs) != 2 {
		t.Fatalf("inventory %+v, want note %q", inv, want)
	}
}
