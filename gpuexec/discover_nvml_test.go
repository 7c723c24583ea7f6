//go:build cgo

package gpuexec

import (
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// dgxH100 is go-nvml's mock DGX H100 (8 GPUs), completed with what the mock
// leaves out: utilisation (10% × index) and free memory (1 GiB × index).
func dgxH100(t *testing.T) *server.Server {
	t.Helper()
	s := dgxh100.New()
	for i, d := range s.Devices {
		dev := d.(*server.Device)
		dev.MemoryInfo.Free = uint64(i) << 30
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: uint32(10 * i)}, nvml.SUCCESS
		}
	}
	return s
}

func device(s *server.Server, i int) *server.Device { return s.Devices[i].(*server.Device) }

func TestDiscoverFindsTheEightGPUsOfADGXH100(t *testing.T) {
	s := dgxH100(t)
	shutdowns := 0
	s.ShutdownFunc = func() nvml.Return { shutdowns++; return nvml.SUCCESS }
	set, err := Discover(FromNVML(s), DeclaredGPUs{})
	if err != nil {
		t.Fatal(err)
	}
	inv := set.Inventory()
	if inv.Source != SourceNVML || inv.Driver != "550.54.15" || inv.Note != "NVML: driver 550.54.15, 8 GPUs" || len(inv.GPUs) != 8 {
		t.Fatalf("inventory %+v", inv)
	}
	for i, g := range inv.GPUs {
		want := GPU{Index: i, UUID: device(s, i).UUID, Name: "NVIDIA H100 80GB HBM3", MemoryTotalMB: 81920,
			MemoryFreeMB: int64(i) * 1024, UtilizationPct: int32(10 * i)}
		if g != want || !strings.HasPrefix(g.UUID, "GPU-") || g.DeviceID() != g.UUID {
			t.Fatalf("GPU %d: %+v, want %+v", i, g, want)
		}
	}
	if err := set.Close(); err != nil || shutdowns != 1 {
		t.Fatalf("close: %v after %d shutdowns", err, shutdowns)
	}
	set.Close()
	if shutdowns != 1 {
		t.Fatalf("closing twice shut NVML down %d times", shutdowns)
	}
}

// withMIG puts GPU i of s in MIG mode with a 1g.10gb and a 3g.40gb GPU
// instance, each seen through NVML as one MIG device, in 7 MIG slots.
func withMIG(t *testing.T, s *server.Server, i int) {
	t.Helper()
	dev := device(s, i)
	dev.SetMigMode(nvml.DEVICE_MIG_ENABLE)
	for _, profile := range []int{nvml.GPU_INSTANCE_PROFILE_1_SLICE, nvml.GPU_INSTANCE_PROFILE_3_SLICE} {
		info, ret := dev.GetGpuInstanceProfileInfo(profile)
		if ret != nvml.SUCCESS {
			t.Fatalf("profile %d: %v", profile, ret)
		}
		if _, ret := dev.CreateGpuInstance(&info); ret != nvml.SUCCESS {
			t.Fatalf("GPU instance %d: %v", profile, ret)
		}
	}
	dev.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
	dev.GetMigDeviceHandleByIndexFunc = func(n int) (nvml.Device, nvml.Return) {
		var gis []*server.GpuInstance
		for gi := range dev.GpuInstances {
			gis = append(gis, gi)
		}
		sort.Slice(gis, func(a, b int) bool { return gis[a].Info.Id < gis[b].Info.Id })
		if n >= len(gis) {
			return nil, nvml.ERROR_NOT_FOUND
		}
		profile := dev.Config.MIGProfiles.GpuInstanceProfiles[int(gis[n].Info.ProfileId)]
		return &mock.Device{
			GetUUIDFunc: func() (string, nvml.Return) { return "MIG-" + dev.UUID[4:12] + "-" + string(rune('a'+n)), nvml.SUCCESS },
			GetNameFunc: func() (string, nvml.Return) { return dev.Config.Name + " MIG", nvml.SUCCESS },
			GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
				return nvml.Memory{Total: profile.MemorySizeMB << 20, Free: profile.MemorySizeMB << 19}, nvml.SUCCESS
			},
			GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED },
		}, nvml.SUCCESS
	}
}

func TestDiscoverListsMIGDevicesInsteadOfTheirGPU(t *testing.T) {
	s := dgxH100(t)
	withMIG(t, s, 3)
	set, err := Discover(FromNVML(s), DeclaredGPUs{})
	if err != nil {
		t.Fatal(err)
	}
	inv := set.Inventory()
	if len(inv.GPUs) != 9 || inv.Note != "NVML: driver 550.54.15, 7 GPUs and 2 MIG devices" {
		t.Fatalf("%d slots, note %q", len(inv.GPUs), inv.Note)
	}
	parent := device(s, 3).UUID
	var migs []GPU
	for _, g := range inv.GPUs {
		if g.UUID == parent {
			t.Fatal("a GPU in MIG mode is listed as a slot of its own")
		}
		if g.MIG {
			migs = append(migs, g)
		}
	}
	want := []GPU{
		{Index: 3, MIGIndex: 0, UUID: "MIG-" + parent[4:12] + "-a", Name: "NVIDIA H100 80GB HBM3 MIG", MemoryTotalMB: 10240, MemoryFreeMB: 5120, UtilizationPct: -1, MIG: true, ParentUUID: parent},
		{Index: 3, MIGIndex: 1, UUID: "MIG-" + parent[4:12] + "-b", Name: "NVIDIA H100 80GB HBM3 MIG", MemoryTotalMB: 40960, MemoryFreeMB: 20480, UtilizationPct: -1, MIG: true, ParentUUID: parent},
	}
	if !reflect.DeepEqual(migs, want) {
		t.Fatalf("MIG slots\n%+v\nwant\n%+v", migs, want)
	}
}

func TestRefreshRereadsFreeMemoryAndUtilisation(t *testing.T) {
	s := dgxH100(t)
	set, err := Discover(FromNVML(s), DeclaredGPUs{Count: 2, MemoryMB: 24000})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if note := set.Inventory().Note; !strings.HasSuffix(note, "; --gpus 2 --gpu-memory-mb 24000 ignored: NVML knows better") {
		t.Fatalf("note %q should say the declared GPUs were ignored", note)
	}
	device(s, 1).MemoryInfo.Free = 70 << 30
	device(s, 1).GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 97}, nvml.SUCCESS }
	device(s, 5).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
	before := set.Inventory()
	inv, err := set.Refresh()
	if err == nil || !strings.Contains(err.Error(), device(s, 5).UUID) {
		t.Fatalf("refresh error %v should name the lost GPU", err)
	}
	if g := inv.GPUs[1]; g.MemoryFreeMB != 70*1024 || g.UtilizationPct != 97 {
		t.Fatalf("GPU 1 after refresh: %+v", g)
	}
	if inv.GPUs[5] != before.GPUs[5] {
		t.Fatalf("an unreadable GPU lost its last values: %+v", inv.GPUs[5])
	}
	inv.GPUs[0].Name = "changed by a caller"
	if set.Inventory().GPUs[0].Name == "changed by a caller" {
		t.Fatal("Inventory shares its slice with the set")
	}
}

// refuseAllBut sets every function of m except keep to one that fails the
// test: the mock of a library that must not be called.
func refuseAllBut(t *testing.T, m any, keep string) *[]string {
	var mu sync.Mutex
	var calls []string
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		if f.Kind() != reflect.Func || !f.CanSet() || name == keep {
			continue
		}
		f.Set(reflect.MakeFunc(f.Type(), func(args []reflect.Value) []reflect.Value {
			mu.Lock()
			calls = append(calls, name)
			mu.Unlock()
			t.Errorf("NVML %s called after a failed Init", strings.TrimSuffix(name, "Func"))
			out := make([]reflect.Value, f.Type().NumOut())
			for o := range out {
				out[o] = reflect.Zero(f.Type().Out(o))
			}
			return out
		}))
	}
	return &calls
}

func TestDiscoverFallsBackAndNeverCallsNVMLAfterAFailedInit(t *testing.T) {
	for _, tc := range []struct {
		ret  nvml.Return
		note string
	}{
		{nvml.ERROR_LIBRARY_NOT_FOUND, "no NVIDIA driver (libnvidia-ml.so not found): using --gpus 2 --gpu-memory-mb 24000"},
		{nvml.ERROR_DRIVER_NOT_LOADED, "NVML init: the NVIDIA kernel driver is not loaded: using --gpus 2 --gpu-memory-mb 24000"},
		{nvml.ERROR_UNKNOWN, "NVML init: return code 999: using --gpus 2 --gpu-memory-mb 24000"},
	} {
		m := &mock.Interface{InitFunc: func() nvml.Return { return tc.ret }}
		calls := refuseAllBut(t, m, "InitFunc")
		lib := FromNVML(m)
		set, err := Discover(lib, DeclaredGPUs{Count: 2, MemoryMB: 24000})
		if err != nil {
			t.Fatal(err)
		}
		want := Inventory{Source: SourceDeclared, Note: tc.note, GPUs: []GPU{
			{Index: 0, Name: "declared", MemoryTotalMB: 24000, MemoryFreeMB: 24000, UtilizationPct: -1},
			{Index: 1, Name: "declared", MemoryTotalMB: 24000, MemoryFreeMB: 24000, UtilizationPct: -1},
		}}
		if inv := set.Inventory(); !reflect.DeepEqual(inv, want) || inv.GPUs[1].DeviceID() != "1" {
			t.Fatalf("%v: inventory\n%+v\nwant\n%+v", tc.ret, inv, want)
		}
		set.Refresh()
		set.Close()
		// The guard holds even for a caller that kept the library.
		if _, err := lib.DeviceCount(); err == nil {
			t.Fatal("the library answered DeviceCount after a failed Init")
		}
		lib.Shutdown()
		if lib.Init() == nil {
			t.Fatal("a second Init was let through")
		}
		if len(*calls) != 0 || len(m.InitCalls()) != 1 {
			t.Fatalf("%v: after a failed Init, NVML got %v and %d Inits", tc.ret, *calls, len(m.InitCalls()))
		}
	}
}

func TestNVMLIsNotCalledAfterClose(t *testing.T) {
	s := dgxH100(t)
	lib := FromNVML(s)
	set, err := Discover(lib, DeclaredGPUs{})
	if err != nil {
		t.Fatal(err)
	}
	set.Close()
	reads := len(device(s, 0).GetMemoryInfoCalls())
	if _, err := set.Refresh(); err != nil {
		t.Fatal(err)
	}
	if _, err := lib.DeviceCount(); err == nil {
		t.Fatal("the library answered after Shutdown")
	}
	if n := len(device(s, 0).GetMemoryInfoCalls()); n != reads || len(s.DeviceGetCountCalls()) != 1 {
		t.Fatalf("NVML called after Shutdown: %d memory reads (was %d), %d device counts", n, reads, len(s.DeviceGetCountCalls()))
	}
}

func TestDiscoverShutsDownWhenNVMLCannotListGPUs(t *testing.T) {
	s := dgxH100(t)
	shutdowns := 0
	s.ShutdownFunc = func() nvml.Return { shutdowns++; return nvml.SUCCESS }
	device(s, 2).GetUUIDFunc = func() (string, nvml.Return) { return "", nvml.ERROR_GPU_IS_LOST }
	_, err := Discover(FromNVML(s), DeclaredGPUs{Count: 8})
	if err == nil || !strings.HasPrefix(err.Error(), "GPU 2: NVML uuid: ") || shutdowns != 1 {
		t.Fatalf("error %v after %d shutdowns", err, shutdowns)
	}
}
