package main

// The gateway rate-limit targets (bench/gateway.sh): one call is one
// request to the system under test carrying one check, or -batch (-pipeline)
// of them; each check names a key drawn uniformly from -keys by the
// client's own generator.

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/sluicehq/sluice/bench/gateway"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// keyPicker draws each client's keys: client i has generator i (PCG, seeded
// from -seed and i), touched by that client only, so no lock.
type keyPicker struct {
	rngs []*rand.Rand
	keys int
}

func newKeyPicker(c config) *keyPicker {
	p := &keyPicker{rngs: make([]*rand.Rand, c.clients), keys: c.keys}
	for i := range p.rngs {
		p.rngs[i] = rand.New(rand.NewPCG(c.seed, uint64(i)))
	}
	return p
}

// id is the next key's number for client, 0..keys-1, as a string.
func (p *keyPicker) id(client int) string {
	return strconv.Itoa(p.rngs[client].IntN(p.keys))
}

// hostPort takes a base URL's host:port (a bare host:port passes).
func hostPort(addr string) string {
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		return u.Host
	}
	return addr
}

// checkCaller builds the call for a gateway target, and a function that
// releases its connections.
func checkCaller(c config) (call, func(), error) {
	switch c.target {
	case "redis-gcra", "redis-gcra-pipelined":
		return redisCaller(c)
	case "rls":
		return rlsCaller(c)
	case "sluice-check", "sluice-checkbatch":
		return sluiceCheckCaller(c)
	}
	return nil, nil, fmt.Errorf("-target: %q is not a gateway target", c.target)
}

// redisCaller: EVALSHA of bench/gateway/gcra.lua on the key
// "gcra:<descriptor>=<id>", one a call (redis-gcra) or -pipeline of them in
// one pipeline (redis-gcra-pipelined). One go-redis
// client, its pool sized to the clients, pipelines on that pool (not
// go-redis's separate pipeline pool): each client holds one connection.
func redisCaller(c config) (call, func(), error) {
	rdb := redis.NewClient(&redis.Options{
		Addr:                     hostPort(c.addrs[0]),
		PoolSize:                 c.clients,
		MinIdleConns:             c.clients,
		MaxActiveConns:           c.clients,
		PipelinePoolSize:         -1,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	ctx := context.Background()
	sha, err := rdb.ScriptLoad(ctx, gateway.GCRA).Result()
	if err != nil {
		rdb.Close()
		return nil, nil, fmt.Errorf("redis: SCRIPT LOAD: %w", err)
	}
	if sha != gcraSHA() {
		rdb.Close()
		return nil, nil, fmt.Errorf("redis: SCRIPT LOAD answered %s, not the script's SHA-1", sha)
	}
	args := []any{c.gcraBurst, c.gcraRate, c.gcraPeriod.Milliseconds(), 1}
	keys := newKeyPicker(c)
	prefix := "gcra:" + c.descriptor + "="
	key := func(client int) []string { return []string{prefix + keys.id(client)} }
	if c.target == "redis-gcra" {
		return func(ctx context.Context, client, _ int) (int, int, error) {
			v, err := rdb.EvalSha(ctx, sha, key(client), args...).Slice()
			if err != nil {
				return 0, 0, err
			}
			allowed, err := gcraAllowed(v)
			if err != nil {
				return 0, 0, err
			}
			return 1, b2i(!allowed), nil
		}, func() { rdb.Close() }, nil
	}
	return func(ctx context.Context, client, _ int) (int, int, error) {
		pipe := rdb.Pipeline()
		cmds := make([]*redis.Cmd, c.pipeline)
		for i := range cmds {
			cmds[i] = pipe.EvalSha(ctx, sha, key(client), args...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return 0, 0, err
		}
		refused := 0
		for _, cmd := range cmds {
			v, err := cmd.Slice()
			if err != nil {
				return 0, 0, err
			}
			allowed, err := gcraAllowed(v)
			if err != nil {
				return 0, 0, err
			}
			refused += b2i(!allowed)
		}
		return len(cmds), refused, nil
	}, func() { rdb.Close() }, nil
}

// gcraSHA is gcra.lua's SHA-1, its name for EVALSHA.
func gcraSHA() string {
	sum := sha1.Sum([]byte(gateway.GCRA))
	return hex.EncodeToString(sum[:])
}

// gcraAllowed reads gcra.lua's {allowed, remaining, retry_ms, reset_ms}.
func gcraAllowed(v []any) (bool, error) {
	if len(v) != 4 {
		return false, fmt.Errorf("gcra.lua answered %v, not 4 integers", v)
	}
	a, ok := v[0].(int64)
	if !ok {
		return false, fmt.Errorf("gcra.lua answered %v, not 4 integers", v)
	}
	return a == 1, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// rlsCaller: envoy.service.ratelimit.v3 ShouldRateLimit with grpc-go over
// h2c (as Envoy's gRPC client speaks to a rate limit service), -conns
// shared connections (client i uses connection i mod conns), one descriptor
// [(-descriptor, id)] in -domain, and the gateway token in the authorization
// metadata (envoyproxy/ratelimit ignores it).
func rlsCaller(c config) (call, func(), error) {
	conns := make([]*grpc.ClientConn, c.conns)
	rls := make([]rlsv3.RateLimitServiceClient, c.conns)
	closeAll := func() {
		for _, cc := range conns {
			if cc != nil {
				cc.Close()
			}
		}
	}
	for i := range conns {
		cc, err := grpc.NewClient(hostPort(c.addrs[0]), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		conns[i], rls[i] = cc, rlsv3.NewRateLimitServiceClient(cc)
	}
	var md metadata.MD
	if c.token != "" {
		md = metadata.Pairs("authorization", "Bearer "+c.token)
	}
	keys := newKeyPicker(c)
	return func(ctx context.Context, client, _ int) (int, int, error) {
		if md != nil {
			ctx = metadata.NewOutgoingContext(ctx, md)
		}
		req := &rlsv3.RateLimitRequest{Domain: c.domain, Descriptors: []*rlcommon.RateLimitDescriptor{{
			Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: c.descriptor, Value: keys.id(client)}},
		}}}
		res, err := rls[client%len(rls)].ShouldRateLimit(ctx, req)
		if err != nil {
			return 0, 0, err
		}
		switch res.GetOverallCode() {
		case rlsv3.RateLimitResponse_OK:
			return 1, 0, nil
		case rlsv3.RateLimitResponse_OVER_LIMIT:
			return 1, 1, nil
		}
		return 0, 0, fmt.Errorf("ShouldRateLimit answered overall_code %v", res.GetOverallCode())
	}, closeAll, nil
}

// sluiceCheckCaller: LimitService.Check (sluice-check) or CheckBatch of
// -batch checks (sluice-checkbatch) with connect-go, each check with key
// "<descriptor>=<id>" (what the rls target's descriptor becomes in Sluice),
// -proto connect (Connect over HTTP/1.1, a keep-alive connection per
// client: connect-go's default, as the sluice CLI and Go clients use it) or
// grpc (gRPC over h2c, the clients multiplexed on shared connections).
func sluiceCheckCaller(c config) (call, func(), error) {
	var opts []connect.ClientOption
	switch c.proto {
	case "connect":
	case "grpc":
		opts = append(opts, connect.WithGRPC())
	default:
		return nil, nil, fmt.Errorf("-proto: %q is not connect or grpc for %s", c.proto, c.target)
	}
	if !c.gzip {
		opts = append(opts, connect.WithAcceptCompression("gzip", nil, nil))
	}
	hc := transport(c.proto == "grpc", c.clients)
	ls := sluicev1connect.NewLimitServiceClient(hc, strings.TrimSuffix(c.addrs[0], "/"), opts...)
	auth := "Bearer " + c.token
	keys := newKeyPicker(c)
	prefix := c.descriptor + "="
	done := func() { hc.CloseIdleConnections() }
	if c.target == "sluice-check" {
		return func(ctx context.Context, client, _ int) (int, int, error) {
			req := connect.NewRequest(&sluicev1.CheckRequest{Key: prefix + keys.id(client)})
			req.Header().Set("Authorization", auth)
			res, err := ls.Check(ctx, req)
			if err != nil {
				return 0, 0, err
			}
			refused, err := refusedVerdict(res.Msg.GetVerdict())
			if err != nil {
				return 0, 0, err
			}
			return 1, b2i(refused), nil
		}, done, nil
	}
	return func(ctx context.Context, client, _ int) (int, int, error) {
		checks := make([]*sluicev1.CheckRequest, c.batch)
		for i := range checks {
			checks[i] = &sluicev1.CheckRequest{Key: prefix + keys.id(client)}
		}
		req := connect.NewRequest(&sluicev1.CheckBatchRequest{Checks: checks})
		req.Header().Set("Authorization", auth)
		res, err := ls.CheckBatch(ctx, req)
		if err != nil {
			return 0, 0, err
		}
		if n := len(res.Msg.GetResults()); n != len(checks) {
			return 0, 0, fmt.Errorf("CheckBatch of %d checks answered %d results", len(checks), n)
		}
		n := 0
		for _, r := range res.Msg.GetResults() {
			refused, err := refusedVerdict(r.GetVerdict())
			if err != nil {
				return 0, 0, err
			}
			n += b2i(refused)
		}
		return len(checks), n, nil
	}, done, nil
}

// refusedVerdict: a check that was answered but does not go ahead now
// (refused, degraded or delayed); no verdict at all is an error.
func refusedVerdict(v sluicev1.CheckVerdict) (bool, error) {
	switch v {
	case sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED:
		return false, nil
	case sluicev1.CheckVerdict_CHECK_VERDICT_UNSPECIFIED:
		return false, errors.New("a check answered without a verdict")
	}
	return true, nil
}
