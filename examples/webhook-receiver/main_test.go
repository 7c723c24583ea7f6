package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/node"
)

const (
	oldSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	newSecret = "whsec_S4IQ7YIiXEQsV626RNreG9Y3V8CqMvUNKe58vuqpMaY="
)

// The receiver verifies what Sluice signs (node.SignWebhook, as the leader
// sends it), with either secret during a rotation, and refuses tampering,
// stale timestamps and other secrets; a duplicate webhook-id is
// acknowledged once more but handled once.
func TestReceiverVerifiesSluiceSignatures(t *testing.T) {
	var handled []string
	rc := &Receiver{Secrets: []string{newSecret}, OnEvent: func(id string, e Event) { handled = append(handled, id+" "+e.Type+" "+e.Data.ID) }}
	body := []byte(`{"type":"job.completed","timestamp":"2026-12-04T10:00:00Z","data":{"id":"42","state":"JOB_STATE_SUCCEEDED"}}`)
	post := func(id string, ts int64, signWith []string, body []byte) int {
		sig, err := node.SignWebhook(signWith, id, ts, body)
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("POST", "/hook", bytes.NewReader(body))
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("webhook-signature", sig)
		w := httptest.NewRecorder()
		rc.ServeHTTP(w, req)
		return w.Code
	}
	now := time.Now().Unix()
	for _, tc := range []struct {
		name   string
		id     string
		ts     int64
		secret []string
		body   []byte
		want   int
	}{
		{"signed with both secrets (rotation)", "msg_42_1", now, []string{oldSecret, newSecret}, body, http.StatusNoContent},
		{"the same delivery again", "msg_42_1", now, []string{newSecret}, body, http.StatusNoContent},
		{"the old secret only", "msg_42_2", now, []string{oldSecret}, body, http.StatusBadRequest},
		{"ten minutes old", "msg_42_3", now - 600, []string{newSecret}, body, http.StatusBadRequest},
	} {
		if got := post(tc.id, tc.ts, tc.secret, tc.body); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	// A body changed after signing.
	sig, _ := node.SignWebhook([]string{newSecret}, "msg_42_4", now, body)
	req := httptest.NewRequest("POST", "/hook", bytes.NewReader(append(body[:len(body)-1:len(body)-1], ' ', '}')))
	req.Header.Set("webhook-id", "msg_42_4")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now, 10))
	req.Header.Set("webhook-signature", sig)
	w := httptest.NewRecorder()
	rc.ServeHTTP(w, req)
	if w.Code != http.StatusBadRequest {
		t.Errorf("tampered body: %d", w.Code)
	}
	if len(handled) != 1 || handled[0] != "msg_42_1 job.completed 42" {
		t.Fatalf("handled %v", handled)
	}
}
