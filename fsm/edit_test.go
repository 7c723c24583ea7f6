package fsm

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// fullRecord has every field of JobRecord set (checked), so that a field
// added later is covered by the test below.
func fullRecord(t *testing.T) *raftv1.JobRecord {
	in, _ := structpb.NewStruct(map[string]any{"prompt": "a cat"})
	out, _ := structpb.NewStruct(map[string]any{"url": "s3://x"})
	r := &raftv1.JobRecord{
		Id: 7, Tenant: "alice", Tier: "free", Spec: &sluicev1.JobSpec{Model: "sdxl", Input: in},
		State: sluicev1.JobState_JOB_STATE_RUNNING, Attempt: 2, Executor: "e1", CreatedNs: 1, StartedNs: 2,
		FinishedNs: 3, ReadyNs: 4, QueueDeadlineNs: 5, RunDeadlineNs: 6,
		Transitions: []*raftv1.TransitionRecord{{State: sluicev1.JobState_JOB_STATE_QUEUED, AtNs: 1}, {State: sluicev1.JobState_JOB_STATE_RUNNING, AtNs: 2}},
		Output:      out, Error: &sluicev1.JobError{Code: "x"}, QueueSeq: 8, Gpus: []string{"0", "1"}, MaxAttempts: 3,
		RunTimeoutNs: 9, Charge: &raftv1.Charge{Model: "sdxl", Cost: 5}, Admission: &sluicev1.Admission{ReservedCost: 5}, RanNs: 10,
		Deliveries: []*raftv1.Delivery{{Seq: 1, Event: policy.EventQueued, State: DeliveryPending}},
	}
	fields := r.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); !r.ProtoReflect().Has(fd) {
			t.Fatalf("fullRecord leaves %s unset: set it", fd.Name())
		}
	}
	return r
}

// TestEditCopiesShallowly: edit's copy equals the record, shares its
// sub-messages, and has lists of its own, so that changing the copy as the
// state machine does (setting fields, appending transitions, replacing
// sub-messages) leaves the original as it was.
func TestEditCopiesShallowly(t *testing.T) {
	orig := fullRecord(t)
	want := proto.Clone(orig)
	f := New()
	f.jobs[orig.Id] = orig
	c := f.edit(orig)
	if f.jobs[orig.Id] != c || c == orig {
		t.Fatal("edit did not put a new record in the map")
	}
	if !proto.Equal(c, orig) {
		t.Fatal("the copy differs from the record")
	}
	if c.Spec != orig.Spec || c.Output != orig.Output || c.Transitions[0] != orig.Transitions[0] {
		t.Fatal("the copy does not share the sub-messages")
	}
	c.State = sluicev1.JobState_JOB_STATE_SUCCEEDED
	c.Transitions = append(c.Transitions, &raftv1.TransitionRecord{Reason: "done"})
	c.Transitions[1] = &raftv1.TransitionRecord{Reason: "replaced"}
	c.Gpus[0] = "9"
	c.Error = nil
	if !proto.Equal(orig, want) {
		t.Fatal("changing the copy changed the original")
	}
	// A record with unknown fields (from a newer build's snapshot) keeps them.
	orig.ProtoReflect().SetUnknown(protoreflect.RawFields{0x98, 0x06, 0x01}) // field 99, varint 1
	if got := shallowCopy(orig).ProtoReflect().GetUnknown(); string(got) != string(orig.ProtoReflect().GetUnknown()) {
		t.Fatal("unknown fields lost")
	}
}

// BenchmarkEdit: the copy a change to a job costs, against a deep copy, for
// a record whose input is about 60 KiB.
func BenchmarkEdit(b *testing.B) {
	big := make(map[string]any, 1000)
	for i := range 1000 {
		big[string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('0'+i/676))] = "0123456789012345678901234567890123456789012345678901"
	}
	in, _ := structpb.NewStruct(big)
	r := &raftv1.JobRecord{Id: 1, Spec: &sluicev1.JobSpec{Model: "sdxl", Input: in},
		Transitions: []*raftv1.TransitionRecord{{Reason: "submitted"}, {Reason: "assigned"}}}
	b.Logf("input: %d bytes", proto.Size(in))
	b.Run("shallow", func(b *testing.B) {
		for b.Loop() {
			shallowCopy(r)
		}
	})
	b.Run("deep", func(b *testing.B) {
		for b.Loop() {
			proto.CloneOf(r)
		}
	})
}

// TestCaptureEncodesBesideApply encodes captures on other goroutines while
// jobs are assigned, completed, canceled and submitted (run it with -race):
// each gives the snapshot taken at its point.
func TestCaptureEncodesBesideApply(t *testing.T) {
	m := newMachine(t)
	var ids []uint64
	for i := range 200 {
		ids = append(ids, m.submit(t, int64(i), []string{"alice", "bob"}[i%2], &sluicev1.JobSpec{Model: "llama-8b"}))
	}
	type result struct {
		got, want []byte
	}
	results := make(chan result, len(ids))
	for i, id := range ids {
		c, want := m.f.Capture(), m.f.Snapshot()
		go func() { results <- result{c.Encode(), want} }()
		now := int64(1000 + i)
		switch i % 3 {
		case 0:
			if r := m.apply(CmdAssign, now, &raftv1.Assign{JobId: id, Executor: "e1", Attempt: 1}); r.Err != nil {
				t.Fatal(r.Err)
			}
			if r := m.apply(CmdComplete, now, &raftv1.Complete{JobId: id, Attempt: 1}); r.Err != nil {
				t.Fatal(r.Err)
			}
		case 1:
			if r := m.apply(CmdCancel, now, &raftv1.Cancel{JobId: id, Tenant: m.job(t, id).Tenant}); r.Err != nil {
				t.Fatal(r.Err)
			}
		default:
			m.submit(t, now, "bob", &sluicev1.JobSpec{Model: "sdxl"})
		}
	}
	for range ids {
		r := <-results
		if !bytes.Equal(r.got, r.want) {
			t.Fatal("a capture encoded beside Apply differs from the snapshot at its point")
		}
	}
}

// chunkWriter records each Write; after failAfter writes it fails.
type chunkWriter struct {
	writes    [][]byte
	failAfter int
}

var errSinkFull = errors.New("sink full")

func (w *chunkWriter) Write(b []byte) (int, error) {
	if w.failAfter > 0 && len(w.writes) == w.failAfter {
		return 0, errSinkFull
	}
	w.writes = append(w.writes, bytes.Clone(b))
	return len(b), nil
}

// TestSnapshotIsWrittenInChunksAsTheMessagesEncoding: WriteTo streams the
// deterministic encoding of the whole raftv1.Snapshot message (the bytes
// replicas compare, and Restore reads), a job at a time, in chunks of about
// snapshotChunk; a failing writer's error comes back.
func TestSnapshotIsWrittenInChunksAsTheMessagesEncoding(t *testing.T) {
	m := newMachine(t)
	out, err := structpb.NewStruct(map[string]any{"image": strings.Repeat("x", 300)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1500 {
		id := m.submit(t, int64(i), []string{"alice", "bob"}[i%2], &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: fmt.Sprint("k", i)})
		switch i % 5 {
		case 0:
			m.apply(CmdAssign, int64(i), &raftv1.Assign{JobId: id, Executor: "e1", Attempt: 1})
			if r := m.apply(CmdComplete, int64(i), &raftv1.Complete{JobId: id, Attempt: 1, Output: out}); r.Err != nil {
				t.Fatal(r.Err)
			}
		case 1:
			m.apply(CmdCancel, int64(i), &raftv1.Cancel{JobId: id, Tenant: m.job(t, id).Tenant})
		}
	}
	m.apply(CmdSetMember, 2000, &raftv1.SetMember{Id: "n2", HttpAddress: "127.0.0.1:7702"})
	c := m.f.Capture()

	full := shallowCopy(c.s)
	q, err := c.queue.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	full.Queue = q
	full.Limiter = c.limiter(nil)
	full.Jobs = slices.SortedFunc(slices.Values(c.jobs), func(a, b *raftv1.JobRecord) int { return cmp.Compare(a.Id, b.Id) })
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Members) != 1 || full.Policy == nil || len(full.Jobs) != 1500 {
		t.Fatalf("the state to encode lacks members, policy or jobs: %d members, %d jobs", len(full.Members), len(full.Jobs))
	}

	var w chunkWriter
	n, err := c.WriteTo(&w)
	if err != nil {
		t.Fatal(err)
	}
	got := bytes.Join(w.writes, nil)
	if !bytes.Equal(got, want) || n != int64(len(want)) {
		t.Fatalf("WriteTo wrote %d bytes (reported %d), not the %d of the message's deterministic encoding", len(got), n, len(want))
	}
	if !bytes.Equal(c.Encode(), want) || !bytes.Equal(m.f.Snapshot(), want) {
		t.Fatal("Encode or Snapshot differs from the message's encoding")
	}
	if len(w.writes) < len(want)/snapshotChunk {
		t.Fatalf("%d bytes came in %d writes; want chunks of about %d", len(want), len(w.writes), snapshotChunk)
	}
	for i, b := range w.writes[:len(w.writes)-1] {
		if len(b) < snapshotChunk || len(b) > snapshotChunk+4096 {
			t.Fatalf("write %d has %d bytes; want %d plus at most one job", i, len(b), snapshotChunk)
		}
	}

	fail := chunkWriter{failAfter: 1}
	if _, err := c.WriteTo(&fail); !errors.Is(err, errSinkFull) {
		t.Fatalf("WriteTo to a failing writer: %v, want %v", err, errSinkFull)
	}

	// An empty state streams as the whole message's encoding too.
	empty := New().Capture()
	want, err = proto.MarshalOptions{Deterministic: true}.Marshal(&raftv1.Snapshot{Policy: empty.s.Policy, Limiter: empty.limiter(nil), Queue: mustQueueBinary(t, empty)})
	if err != nil {
		t.Fatal(err)
	}
	if got := empty.Encode(); !bytes.Equal(got, want) {
		t.Fatalf("an empty state streamed as %x, want %x", got, want)
	}

	// WriteTo writes raftv1.Snapshot's fields numbered below the jobs' before
	// them (the ones it copies into its head by name) and every other field after.
	fields := (&raftv1.Snapshot{}).ProtoReflect().Descriptor().Fields()
	if jobs := fields.ByName("jobs"); jobs == nil || jobs.Number() != snapshotJobsField {
		t.Fatalf("raftv1.Snapshot's jobs field is not number %d", snapshotJobsField)
	}
	var below []string
	for i := range fields.Len() {
		if f := fields.Get(i); f.Number() < snapshotJobsField {
			below = append(below, string(f.Name()))
		}
	}
	if strings.Join(below, ",") != "now_ns,next_queue_seq,policy" {
		t.Fatalf("fields below jobs are %v; WriteTo's head copies now_ns, next_queue_seq and policy", below)
	}
}

func mustQueueBinary(t *testing.T, c *Capture) []byte {
	t.Helper()
	q, err := c.queue.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestCopiesCoverEveryField: the hand-written copies of a charge and an
// admission copy every field (a field added to the message and not to the
// copy fails here).
func TestCopiesCoverEveryField(t *testing.T) {
	full := func(m proto.Message) proto.Message {
		r := m.ProtoReflect()
		fields := r.Descriptor().Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			switch fd.Kind() {
			case protoreflect.BoolKind:
				r.Set(fd, protoreflect.ValueOfBool(true))
			case protoreflect.Int64Kind:
				r.Set(fd, protoreflect.ValueOfInt64(int64(i+1)))
			case protoreflect.StringKind:
				r.Set(fd, protoreflect.ValueOfString(string(fd.Name())))
			default:
				t.Fatalf("%s: a %v field; teach this test to set it", fd.FullName(), fd.Kind())
			}
		}
		return m
	}
	c := full(&raftv1.Charge{}).(*raftv1.Charge)
	if got := copyCharge(c); !proto.Equal(got, c) {
		t.Fatalf("copyCharge misses a field: %v, want %v", got, c)
	}
	a := full(&sluicev1.Admission{}).(*sluicev1.Admission)
	if got := copyAdmission(a); !proto.Equal(got, a) {
		t.Fatalf("copyAdmission misses a field: %v, want %v", got, a)
	}
}
