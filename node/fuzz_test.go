package node

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// FuzzValidateSubmit feeds arbitrary bytes through both wire decoders of a
// SubmitRequest (binary protobuf and JSON), the edge validation, and for
// accepted specs the state machine itself. Nothing may panic, and a spec
// that passes validation must be admitted.
func FuzzValidateSubmit(f *testing.F) {
	f.Add([]byte(`{"spec":{"model":"sdxl","input":{"prompt":"a cat","steps":30},"priority":5}}`))
	f.Add([]byte(`{"spec":{"model":"llama-8b","notBefore":"2030-01-01T00:00:00Z","queueTimeout":"30s","labels":{"a":"b"}}}`))
	f.Add([]byte(`{"spec":{"model":"sdxl","priority":12}}`))
	f.Add([]byte(`{"spec":{"model":`))
	b, _ := proto.Marshal(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", MaxAttempts: 2, Gpus: 1, IdempotencyKey: "k"}})
	f.Add(b)
	models := map[string]bool{"sdxl": true, "llama-8b": true}
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, decode := range []func([]byte, proto.Message) error{proto.Unmarshal, protojson.Unmarshal} {
			req := &sluicev1.SubmitRequest{}
			if decode(data, req) != nil {
				continue
			}
			if ValidateSpec(req.Spec, models, now) != nil {
				continue
			}
			m := fsm.New()
			m.Apply(1, fsm.MustEncode(fsm.CmdSetPolicy, now.UnixNano(), &raftv1.SetPolicy{Policy: DemoPolicy()}))
			res := m.Apply(2, fsm.MustEncode(fsm.CmdSubmit, now.UnixNano(), &raftv1.Submit{Tenant: "alice", Spec: req.Spec}))
			if res.Err != nil {
				t.Fatalf("valid spec %v refused by the state machine: %v", req.Spec, res.Err)
			}
			if _, ok := m.Reads().View(res.JobID); !ok {
				t.Fatal("admitted job missing")
			}
		}
	})
}

// FuzzParsePolicy checks that the policy loader never panics and that
// whatever it accepts the state machine accepts too.
func FuzzParsePolicy(f *testing.F) {
	demo, _ := protojson.Marshal(DemoPolicy())
	f.Add(demo)
	f.Add([]byte("tiers:\n- name: free\n  weight: 1\ntenants:\n- name: a\n  tier: free\nmodels:\n- name: m\n  defaultDuration: 2s\n"))
	f.Add([]byte("tenants:\n- name: a\n  tier: gold\n"))
	f.Add([]byte("models: [{name: m, default_duration: -1s}]"))
	f.Add([]byte("{\"adminTokenSha256\": \"zz\"}"))
	f.Add([]byte(": : :"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := policy.Parse(data)
		if err != nil {
			return
		}
		m := fsm.New()
		if res := m.Apply(1, fsm.MustEncode(fsm.CmdSetPolicy, 1, &raftv1.SetPolicy{Policy: p})); res.Err != nil {
			t.Fatalf("loader accepted a policy the state machine refuses: %v", res.Err)
		}
	})
}
