package node

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// sseEvent is one server-sent event.
type sseEvent struct{ name, id, data string }

// readEvents reads a text/event-stream to its end.
func readEvents(t *testing.T, resp *http.Response) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			out = append(out, cur)
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		}
	}
	return out
}

func TestJobEventsOverServerSentEvents(t *testing.T) {
	n := startNode(t, 1)
	ctx := context.Background()
	res, err := jobClient(n, DemoAliceKey).Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b"}}))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.Job.Id
	get := func(method, path, key string) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, method, baseURL(n)+path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := httpClientFor(n).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := get("GET", "/v1/jobs/"+id+"/events", DemoAliceKey)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := readEvents(t, resp)
	if len(events) < 2 || events[len(events)-1].name != "end" {
		t.Fatalf("events %+v", events)
	}
	var last struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(events[len(events)-2].data), &last); err != nil || last.ID != id || last.State != "JOB_STATE_SUCCEEDED" {
		t.Fatalf("last job event %q (%v)", events[len(events)-2].data, err)
	}
	for _, e := range events[:len(events)-1] {
		if e.name != "job" || e.id == "" {
			t.Fatalf("event %+v", e)
		}
	}
	for _, tc := range []struct {
		method, path, key string
		status            int
	}{
		{"GET", "/v1/jobs/" + id + "/events", "", http.StatusUnauthorized},
		{"GET", "/v1/jobs/" + id + "/events", "wrong-key", http.StatusUnauthorized},
		{"GET", "/v1/jobs/" + id + "/events", DemoBobKey, http.StatusNotFound}, // not bob's job
		{"GET", "/v1/jobs/999999/events", DemoAliceKey, http.StatusNotFound},
		{"GET", "/v1/jobs/nope/events", DemoAliceKey, http.StatusBadRequest},
		{"POST", "/v1/jobs/" + id + "/events", DemoAliceKey, http.StatusMethodNotAllowed},
	} {
		if r := get(tc.method, tc.path, tc.key); r.StatusCode != tc.status {
			t.Errorf("%s %s with key %q: %d, want %d", tc.method, tc.path, tc.key, r.StatusCode, tc.status)
		}
	}
}
