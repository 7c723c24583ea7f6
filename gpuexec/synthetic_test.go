package gpuexec

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

func TestSyntheticEchoesInputAfterDuration(t *testing.T) {
	s := &Synthetic{Name: "synth-1", Durations: map[string]time.Duration{"sdxl": time.Hour}}
	in, _ := structpb.NewStruct(map[string]any{"prompt": "a fox", "duration_ms": 20})
	var steps int
	start := time.Now()
	res := s.Run(context.Background(), Assignment{JobID: "7", Attempt: 1, Model: "sdxl", Input: in}, func(f float64, _ string) { steps++ })
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("returned before input.duration_ms")
	}
	out := res.Output.AsMap()
	if out["executor"] != "synth-1" || out["input"].(map[string]any)["prompt"] != "a fox" || steps != 10 {
		t.Fatalf("output %v, %d progress steps", out, steps)
	}
}

func TestSyntheticStopsOnCancel(t *testing.T) {
	s := &Synthetic{Name: "s", Durations: map[string]time.Duration{"m": time.Hour}}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	start := time.Now()
	res := s.Run(ctx, Assignment{JobID: "1", Attempt: 1, Model: "m"}, nil)
	if res.Err == nil || res.Err.Code != "canceled" || time.Since(start) > 5*time.Second {
		t.Fatalf("canceled run: %v after %v", res.Err, time.Since(start))
	}
}

func TestSyntheticRejectsBadDuration(t *testing.T) {
	s := &Synthetic{Name: "s"}
	in, _ := structpb.NewStruct(map[string]any{"duration_ms": "soon"})
	res := s.Run(context.Background(), Assignment{JobID: "1", Attempt: 1, Model: "m", Input: in}, nil)
	if res.Err == nil || res.Err.Retryable || res.Err.Code != "bad_input" {
		t.Fatalf("bad duration: %+v", res.Err)
	}
}

func TestSyntheticFailureRateIsDeterministic(t *testing.T) {
	s := &Synthetic{Name: "s", FailureRate: 0.5}
	in, _ := structpb.NewStruct(map[string]any{"duration_ms": 0})
	fails := 0
	for i := 0; i < 200; i++ {
		a := Assignment{JobID: string(rune('a'+i%26)) + string(rune('a'+i/26)), Attempt: 1, Model: "m", Input: in}
		r1 := s.Run(context.Background(), a, nil)
		r2 := s.Run(context.Background(), a, nil)
		if (r1.Err == nil) != (r2.Err == nil) {
			t.Fatal("same attempt failed once and succeeded once")
		}
		if r1.Err != nil {
			fails++
		}
	}
	if fails < 60 || fails > 140 {
		t.Fatalf("%d of 200 attempts failed at rate 0.5", fails)
	}
}
