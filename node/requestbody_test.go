package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// rawPost sends body to path as curl would, with the given Content-Type
// ("" for none), and returns the status and the body.
func rawPost(t *testing.T, n *Node, key, path, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, baseURL(n)+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// connectError decodes a Connect error body.
func connectError(t *testing.T, body string) (code, message string) {
	t.Helper()
	var e struct{ Code, Message string }
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("not a Connect error body: %q", body)
	}
	return e.Code, e.Message
}

func TestUnknownJSONFieldIsRefusedOnEveryService(t *testing.T) {
	n := startNode(t, 0)
	for _, tc := range []struct {
		key, path, body, field string
	}{
		{DemoBobKey, sluicev1connect.JobServiceSubmitProcedure, `{"spec":{"model":"sdxl","priorty":9}}`, "priorty"},
		{DemoBobKey, sluicev1connect.JobServiceGetUsageProcedure, `{"tenant":"bob"}`, "tenant"},
		{DemoAdminToken, sluicev1connect.AdminServiceGetClusterStatusProcedure, `{"verbose":true}`, "verbose"},
		{DemoExecutorToken, sluicev1connect.ExecutorServiceHeartbeatProcedure, `{"executor":"e1","runing":[]}`, "runing"},
	} {
		for _, ct := range []string{"application/json", "application/json; charset=utf-8"} {
			status, body := rawPost(t, n, tc.key, tc.path, ct, tc.body)
			code, msg := connectError(t, body)
			if status != http.StatusBadRequest || code != "invalid_argument" || !strings.Contains(msg, `unknown field "`+tc.field+`"`) {
				t.Errorf("POST %s %s (%s): %d %s %q; want 400 invalid_argument naming %q", tc.path, tc.body, ct, status, code, msg, tc.field)
			}
		}
	}
	t.Logf("e.g. %s", func() string {
		_, b := rawPost(t, n, DemoBobKey, sluicev1connect.JobServiceSubmitProcedure, "application/json", `{"spec":{"model":"sdxl","priorty":9}}`)
		return b
	}())
	// Spelt right, the same request is served with its priority.
	status, body := rawPost(t, n, DemoBobKey, sluicev1connect.JobServiceSubmitProcedure, "application/json", `{"spec":{"model":"sdxl","priority":9}}`)
	if status != http.StatusOK || !strings.Contains(body, `"priority":9`) {
		t.Fatalf("submit with priority: %d %s", status, body)
	}
	// Binary protobuf keeps accepting fields it does not know: a newer
	// client's field 99 does not stop an older server.
	spec := &sluicev1.JobSpec{Model: "sdxl"}
	spec.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 7))
	if _, err := jobClient(n, DemoBobKey).Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec})); err != nil {
		t.Fatalf("binary submit with an unknown field: %v", err)
	}
}

func TestOversizedBodyIsInvalidArgumentNamingSizeAndLimit(t *testing.T) {
	n := startNode(t, 0)
	const limit = "exceed the 1048576-byte limit"

	// Connect JSON with a Content-Length, as curl sends it: 400, size and limit.
	body := `{"spec":{"model":"sdxl","input":{"p":"` + strings.Repeat("y", 1200000-len(`{"spec":{"model":"sdxl","input":{"p":""}}}`)) + `"}}}`
	status, res := rawPost(t, n, DemoBobKey, sluicev1connect.JobServiceSubmitProcedure, "application/json", body)
	code, msg := connectError(t, res)
	if status != http.StatusBadRequest || code != "invalid_argument" || msg != "request: 1200000 bytes "+limit {
		t.Fatalf("1200000-byte JSON body: %d %s %q", status, code, msg)
	}
	t.Logf("Connect JSON: %d %s", status, res)

	huge := &sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Input: input(t, map[string]any{"p": strings.Repeat("y", 1200000)})}}
	for _, tc := range []struct {
		name string
		c    sluicev1connect.JobServiceClient
	}{
		{"connect proto", jobClient(n, DemoBobKey)},
		{"grpc", sluicev1connect.NewJobServiceClient(h2cClient(), baseURL(n), connect.WithGRPC(), connect.WithInterceptors(testAuth(DemoBobKey)))},
		{"grpc-web", sluicev1connect.NewJobServiceClient(http.DefaultClient, baseURL(n), connect.WithGRPCWeb(), connect.WithInterceptors(testAuth(DemoBobKey)))},
		// 1.2 MB of one letter gzips to a few KB: the limit holds after decompression.
		{"connect gzip", jobClient(n, DemoBobKey, connect.WithSendGzip())},
		{"grpc gzip", sluicev1connect.NewJobServiceClient(h2cClient(), baseURL(n), connect.WithGRPC(), connect.WithSendGzip(), connect.WithInterceptors(testAuth(DemoBobKey)))},
	} {
		_, err := tc.c.Submit(context.Background(), connect.NewRequest(huge))
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || !strings.Contains(ce.Message(), " bytes "+limit) {
			t.Errorf("%s: %v; want invalid_argument naming the size and the limit", tc.name, err)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
	}
	// Just under the limit still reaches validation (and its own limit).
	_, err := jobClient(n, DemoBobKey).Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Input: input(t, map[string]any{"p": strings.Repeat("y", 1000000)})}}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "spec.input") {
		t.Fatalf("1 MB request: %v, want the spec.input limit", err)
	}
	submit(t, jobClient(n, DemoBobKey), &sluicev1.JobSpec{Model: "sdxl"})
}

func TestPostWithoutContentTypeSaysWhatToSend(t *testing.T) {
	n := startNode(t, 0)
	for _, ct := range []string{"", "application/x-www-form-urlencoded"} { // none, and curl -d's default
		status, body := rawPost(t, n, DemoBobKey, sluicev1connect.JobServiceSubmitProcedure, ct, `{"spec":{"model":"sdxl"}}`)
		if status != http.StatusUnsupportedMediaType || !strings.Contains(body, "Content-Type: application/json") || !strings.Contains(body, "application/grpc") {
			t.Fatalf("Content-Type %q: %d %q", ct, status, body)
		}
		t.Logf("Content-Type %q: %d %s", ct, status, body)
	}
}
