package gpuexec

import (
	"os"
	"strings"
	"testing"
)

// TestNVMLOnRealHardware discovers the host's GPUs through the real
// libnvidia-ml.so and logs them, for comparison with `nvidia-smi -L`. It runs
// only with SLUICE_NVML_REAL=1 (scripts/nvml-discover.sh sets it), and then
// fails if NVML cannot be initialised.
func TestNVMLOnRealHardware(t *testing.T) {
	if os.Getenv("SLUICE_NVML_REAL") != "1" {
		t.Skip("needs an NVIDIA driver: run scripts/nvml-discover.sh (SLUICE_NVML_REAL=1) on a GPU host")
	}
	set, err := Discover(SystemNVML(), DeclaredGPUs{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := set.Close(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	inv := set.Inventory()
	t.Logf("source %s, driver %q: %s", inv.Source, inv.Driver, inv.Note)
	if inv.Source != SourceNVML {
		t.Fatalf("NVML was not used: %s", inv.Note)
	}
	if len(inv.GPUs) == 0 {
		t.Fatal("NVML initialised but found no GPUs")
	}
	log := func(when string, gs []GPU) {
		for _, g := range gs {
			t.Logf("%s: index %d (MIG %v, MIG index %d, parent %q) %s %s: memory %d MB total, %d MB free; utilisation %d%%",
				when, g.Index, g.MIG, g.MIGIndex, g.ParentUUID, g.Name, g.UUID, g.MemoryTotalMB, g.MemoryFreeMB, g.UtilizationPct)
		}
	}
	log("discovered", inv.GPUs)
	for _, g := range inv.GPUs {
		if !strings.HasPrefix(g.UUID, "GPU-") && !strings.HasPrefix(g.UUID, "MIG-") || g.Name == "" ||
			g.MemoryTotalMB <= 0 || g.MemoryFreeMB > g.MemoryTotalMB {
			t.Errorf("implausible GPU %+v", g)
		}
	}
	refreshed, err := set.Refresh()
	if err != nil {
		t.Errorf("refresh: %v", err)
	}
	log("refreshed", refreshed.GPUs)
}
