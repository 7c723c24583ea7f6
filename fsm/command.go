package fsm

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"

	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
)

// CommandType is the first byte of every log entry. New types are only ever
// appended: a value, once used, keeps its meaning forever.
type CommandType byte

const (
	CmdSubmit    CommandType = 1
	CmdAssign    CommandType = 2
	CmdComplete  CommandType = 3
	CmdFail      CommandType = 4
	CmdCancel    CommandType = 5
	CmdRequeue   CommandType = 6
	CmdTick      CommandType = 7
	CmdSetPolicy CommandType = 8
	CmdRedrive   CommandType = 9
	CmdSetMember CommandType = 10
	// CmdBatch carries several commands in one log entry (EncodeBatch); they
	// are applied in order, each as if it were an entry of its own at the
	// batch's index.
	CmdBatch CommandType = 11
	// CmdWebhookResult records a webhook delivery attempt (raftv1.WebhookResult).
	CmdWebhookResult CommandType = 12
	// CmdCheck decides (and charges) gateway rate-limit checks (raftv1.Check).
	CmdCheck CommandType = 13
)

func (t CommandType) String() string {
	switch t {
	case CmdSubmit:
		return "Submit"
	case CmdAssign:
		return "Assign"
	case CmdComplete:
		return "Complete"
	case CmdFail:
		return "Fail"
	case CmdCancel:
		return "Cancel"
	case CmdRequeue:
		return "Requeue"
	case CmdTick:
		return "Tick"
	case CmdSetPolicy:
		return "SetPolicy"
	case CmdRedrive:
		return "Redrive"
	case CmdSetMember:
		return "SetMember"
	case CmdBatch:
		return "Batch"
	case CmdWebhookResult:
		return "WebhookResult"
	case CmdCheck:
		return "Check"
	}
	return fmt.Sprintf("CommandType(%d)", byte(t))
}

// headerLen is the type byte plus the leader's time stamp.
const headerLen = 1 + 8

// Encode builds a log entry: the type byte, the leader's time (unix
// nanoseconds, big endian), then the protobuf payload.
func Encode(t CommandType, now int64, msg proto.Message) ([]byte, error) {
	buf := make([]byte, headerLen, headerLen+64)
	buf[0] = byte(t)
	binary.BigEndian.PutUint64(buf[1:], uint64(now))
	return proto.MarshalOptions{Deterministic: true}.MarshalAppend(buf, msg)
}

// MustEncode is Encode for messages that always marshal (all of ours).
func MustEncode(t CommandType, now int64, msg proto.Message) []byte {
	b, err := Encode(t, now, msg)
	if err != nil {
		panic(fmt.Sprintf("fsm: encode %v: %v", t, err))
	}
	return b
}

// EncodeBatch builds one log entry carrying several encoded commands (each
// made by Encode): the CmdBatch header, then each command as a uvarint
// length and its bytes. The header's time is informational: each command
// is applied at its own. A batch inside a batch is rejected when applied.
func EncodeBatch(now int64, cmds [][]byte) []byte {
	n := headerLen
	for _, c := range cmds {
		n += binary.MaxVarintLen32 + len(c)
	}
	buf := make([]byte, headerLen, n)
	buf[0] = byte(CmdBatch)
	binary.BigEndian.PutUint64(buf[1:], uint64(now))
	for _, c := range cmds {
		buf = binary.AppendUvarint(buf, uint64(len(c)))
		buf = append(buf, c...)
	}
	return buf
}

// splitBatch returns the commands of a CmdBatch entry's payload.
func splitBatch(payload []byte) ([][]byte, error) {
	var cmds [][]byte
	for len(payload) > 0 {
		n, k := binary.Uvarint(payload)
		if k <= 0 || n > uint64(len(payload)-k) {
			return nil, fmt.Errorf("fsm: batch command %d: bad length", len(cmds))
		}
		cmds = append(cmds, payload[k:k+int(n)])
		payload = payload[k+int(n):]
	}
	if len(cmds) == 0 {
		return nil, fmt.Errorf("fsm: empty batch")
	}
	return cmds, nil
}

// Decode splits a log entry into its type, time and payload message.
func Decode(data []byte) (CommandType, int64, proto.Message, error) {
	if len(data) < headerLen {
		return 0, 0, nil, fmt.Errorf("fsm: entry of %d bytes is shorter than the %d-byte header", len(data), headerLen)
	}
	t := CommandType(data[0])
	now := int64(binary.BigEndian.Uint64(data[1:headerLen]))
	msg := newCommand(t)
	if msg == nil {
		return t, now, nil, fmt.Errorf("fsm: unknown command type %d", byte(t))
	}
	if err := proto.Unmarshal(data[headerLen:], msg); err != nil {
		return t, now, nil, fmt.Errorf("fsm: decode %v: %w", t, err)
	}
	return t, now, msg, nil
}

// newCommand returns an empty message of command type t, nil for none (and
// for CmdBatch, which has no message of its own).
func newCommand(t CommandType) proto.Message {
	switch t {
	case CmdSubmit:
		return &raftv1.Submit{}
	case CmdAssign:
		return &raftv1.Assign{}
	case CmdComplete:
		return &raftv1.Complete{}
	case CmdFail:
		return &raftv1.Fail{}
	case CmdCancel:
		return &raftv1.Cancel{}
	case CmdRequeue:
		return &raftv1.Requeue{}
	case CmdTick:
		return &raftv1.Tick{}
	case CmdSetPolicy:
		return &raftv1.SetPolicy{}
	case CmdRedrive:
		return &raftv1.Redrive{}
	case CmdSetMember:
		return &raftv1.SetMember{}
	case CmdWebhookResult:
		return &raftv1.WebhookResult{}
	case CmdCheck:
		return &raftv1.Check{}
	}
	return nil
}

// commandMessages holds an empty message of each command type, by type.
var commandMessages = func() (m [256]proto.Message) {
	for t := range m {
		m[t] = newCommand(CommandType(t))
	}
	return m
}()

// commandMessage is the (shared, read-only) empty message of type t.
func commandMessage(t CommandType) proto.Message { return commandMessages[t] }

// Split returns a log entry's commands: a CmdBatch entry's, in order, or
// the entry itself.
func Split(data []byte) ([][]byte, error) {
	if len(data) >= headerLen && CommandType(data[0]) == CmdBatch {
		return splitBatch(data[headerLen:])
	}
	return [][]byte{data}, nil
}
