package node

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// MaxCredentialBytes bounds the bearer token we are willing to hash.
const MaxCredentialBytes = 512

func bearer(h http.Header) (string, *connect.Error) {
	return bearerKey(h.Get("Authorization"))
}

// bearerKey is the key in an Authorization header's value v.
func bearerKey(v string) (string, *connect.Error) {
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
	return n.callerWith(h.Get("Authorization"))
}

// callerWith is caller for the Authorization header's value authorization.
func (n *Node) callerWith(authorization string) (*sluicev1.Tenant, string, error) {
	key, err := bearerKey(authorization)
	if err != nil {
		return nil, "", err
	}
	hash := policy.HashKey(key)
	t, ok := n.fsm.TenantByKeyHash(hash)
	if !ok {
		if !n.duty.canJudgeKeys() {
			return nil, "", n.duty.notCaughtUpError()
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
	if want == "" || subtle.ConstantTimeCompare([]byte(policy.HashKey(tok)), []byte(want)) != 1 {
		if !n.duty.canJudgeKeys() {
			return n.duty.notCaughtUpError()
		}
		return connect.NewError(connect.CodePermissionDenied, errors.New("authorization: not the admin token"))
	}
	return nil
}

// certExecutorKey holds, in a call's context, the executor name that a
// client certificate proved (for forward to pass on to the leader).
type certExecutorKey struct{}

// executor checks that the caller may act as the executor named name: a
// client certificate from the executor CA that names it (or a peer that
// forwards such a call), or else the executor token (the admin token when
// the policy names no executor token). The token lets its holder act as any
// executor; a certificate only as its own. The returned context carries the
// name a certificate proved.
func (n *Node) executor(ctx context.Context, h http.Header, name string) (context.Context, error) {
	if c := callerCertOf(ctx); len(c.executorNames) > 0 {
		if !slices.Contains(c.executorNames, name) {
			return ctx, connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
				"executor name %q: the client certificate is for %q; an executor acts only under its own name", name, strings.Join(c.executorNames, ", ")))
		}
		return context.WithValue(ctx, certExecutorKey{}, name), nil
	}
	tok, err := bearer(h)
	if err != nil {
		return ctx, err
	}
	p := n.fsm.Policy()
	if p.GetExecutorTokenSha256() == "" && p.GetAdminTokenSha256() == "" {
		// A node that has not joined a cluster yet has no policy.
		return ctx, connect.NewError(connect.CodeUnavailable, errors.New("this node has no policy yet (has it joined the cluster?); retry shortly"))
	}
	hash := policy.HashKey(tok)
	for _, want := range []string{p.GetExecutorTokenSha256(), p.GetAdminTokenSha256()} {
		if want != "" && subtle.ConstantTimeCompare([]byte(hash), []byte(want)) == 1 {
			return ctx, nil
		}
	}
	if !n.duty.canJudgeKeys() {
		return ctx, n.duty.notCaughtUpError()
	}
	return ctx, connect.NewError(connect.CodePermissionDenied, errors.New("authorization: not the executor token"))
}
