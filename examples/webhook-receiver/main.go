// Command webhook-receiver receives Sluice's webhooks: it checks each
// delivery's signature (Standard Webhooks: HMAC-SHA256 over
// "webhook-id.webhook-timestamp.body" with the tenant's whsec_ secret),
// refuses stale timestamps, drops duplicates by webhook-id (Sluice delivers
// at least once: after a leader change the same delivery can come again),
// and prints each event. It uses only the standard library.
//
//	SLUICE_WEBHOOK_SECRET=whsec_... go run ./examples/webhook-receiver --addr :9000
//
// and submit with --webhook https://<this host>/hook. Behind TLS in
// production; for a test on one machine the policy needs webhooks.allow_http
// and webhooks.allow_private (docs/notifications.md).
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// tolerance is how far a webhook-timestamp may be from now (replays older than this are refused).
const tolerance = 5 * time.Minute

// Verify checks a delivery's headers and body against any of the secrets
// (several while a secret is being rotated) and returns the body's event.
func Verify(secrets []string, h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not a number", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("webhook-timestamp is %v away from now", d.Round(time.Second))
	}
	for _, secret := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err != nil {
			return fmt.Errorf("the secret is not whsec_ and base64: %v", err)
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "."))
		mac.Write(body)
		want := mac.Sum(nil)
		for _, s := range strings.Fields(sigs) {
			version, sig, ok := strings.Cut(s, ",")
			if !ok || version != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(sig)
			if err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return errors.New("no signature matches")
}

// Event is the body of a delivery.
type Event struct {
	Type      string    `json:"type"` // job.queued, job.started, job.completed
	Timestamp time.Time `json:"timestamp"`
	Data      struct {
		ID     string `json:"id"`
		Tenant string `json:"tenant"`
		State  string `json:"state"`
		Output any    `json:"output"`
		Error  any    `json:"error"`
	} `json:"data"`
}

// Receiver is the HTTP handler.
type Receiver struct {
	Secrets []string
	OnEvent func(id string, e Event)

	mu   sync.Mutex
	seen map[string]time.Time // webhook-id → when first seen
}

func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := Verify(rc.Secrets, r.Header, body, time.Now()); err != nil {
		// 400: Sluice retries, which is right for a secret being rotated in.
		http.Error(w, "signature: "+err.Error(), http.StatusBadRequest)
		return
	}
	id := r.Header.Get("webhook-id")
	rc.mu.Lock()
	if rc.seen == nil {
		rc.seen = map[string]time.Time{}
	}
	_, dup := rc.seen[id]
	if !dup {
		rc.seen[id] = time.Now()
	}
	rc.mu.Unlock()
	if dup {
		w.WriteHeader(http.StatusNoContent) // already handled: acknowledge, do nothing
		return
	}
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if rc.OnEvent != nil {
		rc.OnEvent(id, e)
	}
	w.WriteHeader(http.StatusNoContent)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "address to listen on")
	flag.Parse()
	secrets := strings.Fields(os.Getenv("SLUICE_WEBHOOK_SECRET"))
	if len(secrets) == 0 {
		log.Fatal("set SLUICE_WEBHOOK_SECRET to the tenant's whsec_ secret (two, space-separated, while rotating)")
	}
	rc := &Receiver{Secrets: secrets, OnEvent: func(id string, e Event) {
		fmt.Printf("%s %s job %s %s\n", id, e.Type, e.Data.ID, e.Data.State)
	}}
	http.Handle("/", rc)
	log.Printf("receiving webhooks on http://%s/", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
