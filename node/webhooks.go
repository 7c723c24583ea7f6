package node

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Webhooks (docs/notifications.md). What to send is in the replicated state
// (fsm/webhooks.go): each job event a webhook asked for is a delivery with a
// stable id and a due time. The leader sends what is due and commits each
// attempt's result; a new leader sends what is still pending, so a delivery
// the old leader sent but had not recorded goes again under the same
// webhook-id (at least once).

const (
	// webhookPoll bounds how long the sender sleeps between looks at what is due.
	webhookPoll = 200 * time.Millisecond
	// webhookRescan is the least time between two looks at what is due.
	webhookRescan = 50 * time.Millisecond
	// maxWebhooksInFlight bounds deliveries in flight on the leader, all tenants together.
	maxWebhooksInFlight = 256
	// webhookResponseLimit is how much of a receiver's answer is read (and dropped).
	webhookResponseLimit = 4 << 10
	webhookUserAgent     = "Sluice-Webhooks/1"
)

// WebhookBody is what a delivery POSTs: the Standard Webhooks envelope with
// the job as GetJob returns it (at the time of sending) in data.
type WebhookBody struct {
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// SignWebhook is the webhook-signature header for a delivery: "v1,<base64
// HMAC-SHA256 of id.timestamp.body>" for each secret, space-separated.
func SignWebhook(secrets []string, id string, timestamp int64, body []byte) (string, error) {
	sigs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if err != nil {
			return "", fmt.Errorf("webhook secret: %w", err)
		}
		mac := hmac.New(sha256.New, key)
		fmt.Fprintf(mac, "%s.%d.", id, timestamp)
		mac.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return strings.Join(sigs, " "), nil
}

// webhookSender sends one leader term's deliveries.
type webhookSender struct {
	n      *Node
	client *http.Client

	mu        sync.Mutex
	inFlight  map[string]bool // delivery ids
	perTenant map[string]int
}

func (n *Node) newWebhookSender() *webhookSender {
	s := &webhookSender{n: n, inFlight: map[string]bool{}, perTenant: map[string]int{}}
	dialer := &net.Dialer{Timeout: policy.MaxWebhookTimeout, Control: s.checkAddress}
	s.client = &http.Client{
		Transport: &http.Transport{
			DialContext: dialer.DialContext, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 4,
			IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second,
			ResponseHeaderTimeout: policy.MaxWebhookTimeout,
		},
		// A redirect is not followed: it is the receiver's answer, and a
		// failure (webhooks are not browsers; a 3xx could point anywhere).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s
}

// checkAddress refuses a connection to an address webhooks may not reach:
// checked on the address dialled, after name resolution, so that a name
// that resolves to a private address later than it did at Submit (DNS
// rebinding) is refused too.
func (s *webhookSender) checkAddress(_, address string, _ syscall.RawConn) error {
	if s.n.fsm.Policy().GetWebhooks().GetAllowPrivate() {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	if reason := policy.PrivateAddress(ip); reason != "" {
		return fmt.Errorf("%s is a %s address (the policy's webhooks.allow_private allows it)", ip, reason)
	}
	return nil
}

// run sends due deliveries until ctx (the term) ends.
func (s *webhookSender) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(webhookPoll)
	defer tick.Stop()
	var due []fsm.DueDelivery
	for {
		changed := s.n.changes.wait()
		due = s.n.fsm.DueDeliveries(time.Now().UnixNano(), due[:0])
		limit := policy.WebhookInFlight(s.n.fsm.Policy())
		for _, d := range due {
			if !s.take(d, limit) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer s.release(d)
				s.deliver(ctx, d)
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			// A new event is due at once, but most changes are other jobs:
			// look again soon, not at each, so that a busy log (or a long
			// backlog of deliveries to a receiver that is down) does not
			// spin this loop.
			select {
			case <-ctx.Done():
				return
			case <-time.After(webhookRescan):
			}
		case <-tick.C:
		}
	}
}

// take marks d in flight, if it is not and its tenant and the leader have room.
func (s *webhookSender) take(d fsm.DueDelivery, perTenant int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := d.ID()
	if s.inFlight[id] || s.perTenant[d.Tenant] >= perTenant || len(s.inFlight) >= maxWebhooksInFlight {
		return false
	}
	s.inFlight[id] = true
	s.perTenant[d.Tenant]++
	return true
}

func (s *webhookSender) release(d fsm.DueDelivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inFlight, d.ID())
	if s.perTenant[d.Tenant]--; s.perTenant[d.Tenant] <= 0 {
		delete(s.perTenant, d.Tenant)
	}
}

// deliver makes one attempt and commits its result.
func (s *webhookSender) deliver(ctx context.Context, d fsm.DueDelivery) {
	status, errText := s.post(ctx, d)
	if ctx.Err() != nil {
		return // the term ended: the next leader sends it again
	}
	result := "delivered"
	switch {
	case status >= 200 && status < 300:
	case status == http.StatusGone:
		result = "gone"
	case status == 0:
		result = "error"
	default:
		result = "refused"
	}
	s.n.metrics.Webhook(result)
	if status < 200 || status >= 300 {
		s.n.log.Info("webhook attempt failed", "job", d.JobID, "id", d.ID(), "attempt", d.Attempt, "url", d.URL, "status", status, "err", errText)
	}
	_, err := s.n.propose(ctx, fsm.CmdWebhookResult, &raftv1.WebhookResult{JobId: d.JobID, Seq: d.Seq,
		Attempt: d.Attempt, Status: int32(status), Error: errText})
	if err != nil && !errors.Is(err, errNotLeader) && ctx.Err() == nil {
		s.n.log.Warn("record a webhook attempt", "job", d.JobID, "id", d.ID(), "err", err)
	}
}

// post sends the delivery once: the HTTP status, or 0 and why none came.
func (s *webhookSender) post(ctx context.Context, d fsm.DueDelivery) (int, string) {
	job, ok := s.n.desk.publicJob(d.JobID)
	if !ok {
		return 0, "the job is gone (past its retention)"
	}
	data, err := protojson.Marshal(job)
	if err != nil {
		return 0, err.Error()
	}
	now := time.Now()
	body, err := json.Marshal(WebhookBody{Type: d.Event, Timestamp: now.UTC(), Data: data})
	if err != nil {
		return 0, err.Error()
	}
	secrets := s.n.fsm.WebhookSecrets(d.Tenant)
	if len(secrets) == 0 {
		return 0, fmt.Sprintf("tenant %q has no webhook_secrets in the policy", d.Tenant)
	}
	sig, err := SignWebhook(secrets, d.ID(), now.Unix(), body)
	if err != nil {
		return 0, err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, policy.WebhookTimeout(s.n.fsm.Policy()))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", webhookUserAgent)
	req.Header.Set("webhook-id", d.ID())
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Sprintf("no answer within %v", policy.WebhookTimeout(s.n.fsm.Policy()))
		}
		return 0, err.Error()
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, webhookResponseLimit)); err != nil && ctx.Err() != nil {
		return 0, fmt.Sprintf("no whole answer within %v", policy.WebhookTimeout(s.n.fsm.Policy()))
	}
	return resp.StatusCode, ""
}

// checkSubmitWebhook validates a Submit's webhook (or the tenant's default
// one it falls back on) at the edge: the URL under the policy's settings,
// a host that does not resolve to an address webhooks may not reach, and a
// secret to sign with.
func (n *Node) checkSubmitWebhook(ctx context.Context, t *sluicev1.Tenant, w *sluicev1.Webhook) error {
	if w == nil {
		return nil
	}
	p := n.fsm.Policy()
	if err := policy.ValidateWebhook("spec.webhook", w, p.GetWebhooks()); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	if len(t.GetWebhookSecrets()) == 0 {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("spec.webhook: tenant %q has no webhook_secrets in the policy to sign webhooks with; ask an operator to add one (sluice webhooks new-secret)", t.GetName()))
	}
	if p.GetWebhooks().GetAllowPrivate() {
		return nil
	}
	u, _ := url.Parse(w.Url) // ValidateWebhook parsed it
	if _, err := netip.ParseAddr(u.Hostname()); err == nil {
		return nil // an address ValidateWebhook checked
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", u.Hostname())
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("spec.webhook.url: host %q does not resolve: %v", u.Hostname(), err))
	}
	for _, a := range addrs {
		if reason := policy.PrivateAddress(a); reason != "" {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("spec.webhook.url: host %q resolves to %s, a %s address (the policy's webhooks.allow_private allows it)", u.Hostname(), a, reason))
		}
	}
	return nil
}

// publicDeliveries converts a job's deliveries for the API.
func publicDeliveries(id uint64, ds []*raftv1.Delivery) []*sluicev1.WebhookDelivery {
	if len(ds) == 0 {
		return nil
	}
	out := make([]*sluicev1.WebhookDelivery, len(ds))
	for i, d := range ds {
		w := &sluicev1.WebhookDelivery{Id: fsm.DeliveryID(id, d.Seq), Event: d.Event, Url: d.Url, State: d.State,
			Attempts: d.Attempts, CreatedAt: ts(d.CreatedNs), LastStatus: d.LastStatus, LastError: d.LastError}
		if d.NextNs != 0 {
			w.NextAttemptAt = ts(d.NextNs)
		}
		if d.LastNs != 0 {
			w.LastAttemptAt = ts(d.LastNs)
		}
		out[i] = w
	}
	return out
}
