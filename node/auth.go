package node

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/fsm"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// MaxCredentialBytes bounds the bearer token we are willing to hash.
const MaxCredentialBytes = 512

func bearer(h http.Header) (string, *connect.Error) {
	v := h.Get("Authorization")
	if v == "" {
		return "", connect.NewError(connect.CodeUnauthenticated, errors.New("authorization: missing; send \"Authorization: Bearer <api key>\""))
	}
	tok, ok := strings.CutPrefix(v, "Bearer ")
	if !ok || tok == "" {
		return "", connect.NewError(connect.CodeUnauthenticated, errors.New("authorization: must be \"Bearer <api key>\""))
	}
	if len(tok) > MaxCredentialBytes {
		return "", connect.NewError(connect.CodeUnauthenticated, errors.New("authorization: key longer than 512 bytes"))
	}
	return strings.TrimSpace(tok), nil
}

// tenant maps the caller's API key to its tenant.
func (n *Node) tenant(h http.Header) (*sluicev1.Tenant, error) {
	t, _, err := n.caller(h)
	return t, err
}

// caller maps the caller's API key to its tenant and the key's hash.
func (n *Node) caller(h http.Header) (*sluicev1.Tenant, string, error) {
	key, err := bearer(h)
	if err != nil {
		return nil, "", err
	}
	hash := fsm.HashKey(key)
	t, ok := n.fsm.TenantByKeyHash(hash)
	if !ok {
		if !n.canJudgeKeys() {
			return nil, "", n.notCaughtUpError()
		}
		return nil, "", connect.NewError(connect.CodeUnauthenticated, errors.New("authorization: unknown API key"))
	}
	return t, hash, nil
}

// admin checks the caller's admin token.
func (n *Node) admin(h http.Header) error {
	tok, err := bearer(h)
	if err != nil {
		return err
	}
	want := n.fsm.Policy().GetAdminTokenSha256()
	if want == "" || subtle.ConstantTimeCompare([]byte(fsm.HashKey(tok)), []byte(want)) != 1 {
		if !n.canJudgeKeys() {
			return n.notCaughtUpError()
		}
		return connect.NewError(connect.CodePermissionDenied, errors.New("authorization: not the admin token"))
	}
	return nil
}

// executor checks the caller's executor token (the admin token when the
// policy names no executor token).
func (n *Node) executor(h http.Header) error {
	tok, err := bearer(h)
	if err != nil {
		return err
	}
	p := n.fsm.Policy()
	if p.GetExecutorTokenSha256() == "" && p.GetAdminTokenSha256() == "" {
		// A node that has not joined a cluster yet has no policy.
		return connect.NewError(connect.CodeUnavailable, errors.New("this node has no policy yet (has it joined the cluster?); retry shortly"))
	}
	hash := fsm.HashKey(tok)
	for _, want := range []string{p.GetExecutorTokenSha256(), p.GetAdminTokenSha256()} {
		if want != "" && subtle.ConstantTimeCompare([]byte(hash), []byte(want)) == 1 {
			return nil
		}
	}
	if !n.canJudgeKeys() {
		return n.notCaughtUpError()
	}
	return connect.NewError(connect.CodePermissionDenied, errors.New("authorization: not the executor token"))
}
