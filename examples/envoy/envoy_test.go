// Package envoy_test checks examples/envoy: that envoy.yaml is a valid
// Envoy bootstrap (parsed and validated with Envoy's own API types), and
// that the requests its rate limit actions make, sent to a Sluice node
// running policy.yaml over gRPC as Envoy sends them, get the answers the
// comments promise. (No Envoy binary is installable here from the
// registries; the actions are applied by a small reading of the config.)
package envoy_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/node"
	"github.com/sluicehq/sluice/policy"
)

func loadBootstrap(t *testing.T) *bootstrapv3.Bootstrap {
	t.Helper()
	y, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatal(err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(j, b); err != nil {
		t.Fatalf("envoy.yaml is not an Envoy v3 bootstrap: %v", err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("envoy.yaml fails Envoy's validation: %v", err)
	}
	return b
}

// gateway is what the example's Envoy would do: its routes and its rate
// limit filter's settings.
type gateway struct {
	hcm    *hcmv3.HttpConnectionManager
	filter *ratelimitv3.RateLimit
}

func readGateway(t *testing.T, b *bootstrapv3.Bootstrap) gateway {
	t.Helper()
	var g gateway
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().UnmarshalTo(hcm) == nil {
					g.hcm = hcm
				}
			}
		}
	}
	if g.hcm == nil {
		t.Fatal("no http_connection_manager in envoy.yaml")
	}
	for _, f := range g.hcm.GetHttpFilters() {
		rl := &ratelimitv3.RateLimit{}
		if f.GetTypedConfig().UnmarshalTo(rl) == nil {
			g.filter = rl
		}
	}
	if g.filter == nil || g.filter.GetRateLimitService().GetGrpcService().GetEnvoyGrpc().GetClusterName() != "sluice" {
		t.Fatalf("no ratelimit filter calling the sluice cluster: %v", g.filter)
	}
	return g
}

// request is what the actions of the route matching path make, as Envoy
// makes them: a descriptor per rate_limits entry, skipped when a header
// it reads is absent.
func (g gateway) request(path, ip string, headers map[string]string) *rlsv3.RateLimitRequest {
	req := &rlsv3.RateLimitRequest{Domain: g.filter.GetDomain()}
	var route *routev3.Route
	for _, r := range g.hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes() {
		if strings.HasPrefix(path, r.GetMatch().GetPrefix()) {
			route = r
			break
		}
	}
	headers = map[string]string{":path": path, "x-api-key": headers["x-api-key"]}
next:
	for _, rl := range route.GetRoute().GetRateLimits() {
		d := &rlcommon.RateLimitDescriptor{}
		for _, a := range rl.GetActions() {
			var k, v string
			switch {
			case a.GetRemoteAddress() != nil:
				k, v = "remote_address", ip
			case a.GetRequestHeaders() != nil:
				h := a.GetRequestHeaders()
				if headers[h.GetHeaderName()] == "" {
					continue next
				}
				k, v = h.GetDescriptorKey(), headers[h.GetHeaderName()]
			case a.GetGenericKey() != nil:
				k, v = a.GetGenericKey().GetDescriptorKey(), a.GetGenericKey().GetDescriptorValue()
				if k == "" {
					k = "generic_key"
				}
			}
			d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: k, Value: v})
		}
		req.Descriptors = append(req.Descriptors, d)
	}
	return req
}

func TestEnvoyExampleAgainstSluice(t *testing.T) {
	g := readGateway(t, loadBootstrap(t))
	pol, err := policy.Load("policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(node.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Bootstrap: true, Policy: pol,
		Logger: slog.New(slog.DiscardHandler), RaftLog: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	for deadline := time.Now().Add(10 * time.Second); !n.Leading(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("node not leading after 10s")
		}
	}
	conn, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rls := rlsv3.NewRateLimitServiceClient(conn)
	ctx := context.Background()
	for _, md := range g.filter.GetRateLimitService().GetGrpcService().GetInitialMetadata() {
		ctx = metadata.AppendToOutgoingContext(ctx, md.GetKey(), md.GetValue())
	}
	ask := func(path, ip, key string) *rlsv3.RateLimitResponse {
		t.Helper()
		res, err := rls.ShouldRateLimit(ctx, g.request(path, ip, map[string]string{"x-api-key": key}))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// alice (free): 5 image generations a minute, then 429 with the reason.
	for i := range 5 {
		if r := ask("/v1/images/generations", "198.51.100.1", "dev-alice"); r.OverallCode != rlsv3.RateLimitResponse_OK || len(r.Statuses) != 3 {
			t.Fatalf("alice's image %d: %v", i+1, r)
		}
	}
	r := ask("/v1/images/generations", "198.51.100.1", "dev-alice")
	if r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || r.Statuses[1].Code != rlsv3.RateLimitResponse_OVER_LIMIT ||
		r.Statuses[1].GetCurrentLimit().GetName() != "free-images" || !strings.Contains(string(r.RawBody), `rule "free-images"`) {
		t.Fatalf("alice's sixth image: %v", r)
	}
	// bob (pro) on the same endpoint, from the same IP, is not held back by her.
	if r := ask("/v1/images/generations", "198.51.100.1", "dev-bob"); r.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Fatalf("bob: %v", r)
	}
	// Other paths only count per IP: 20 at once from one address (six so far:
	// alice's refused request charged nothing), then 429.
	for i := range 20 - 6 {
		if r := ask("/v1/models", "198.51.100.1", ""); r.OverallCode != rlsv3.RateLimitResponse_OK || len(r.Statuses) != 1 {
			t.Fatalf("request %d from 198.51.100.1: %v", i+7, r)
		}
	}
	if r := ask("/v1/models", "198.51.100.1", ""); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || r.Statuses[0].GetCurrentLimit().GetName() != "per-ip" {
		t.Fatalf("the 21st request from one address: %v", r)
	}
	if r := ask("/v1/models", "198.51.100.2", ""); r.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Fatalf("another address: %v", r)
	}
}
