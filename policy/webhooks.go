package policy

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Webhook events, as the "type" of a delivery's body.
const (
	EventQueued    = "job.queued"
	EventStarted   = "job.started"
	EventCompleted = "job.completed"
)

// Webhook limits and defaults (WebhookSettings).
const (
	DefaultWebhookTimeout  = 10 * time.Second
	MaxWebhookTimeout      = time.Minute
	DefaultWebhookInFlight = 4
	MaxWebhookInFlight     = 1000
	MaxRetrySchedule       = 20
	MaxWebhookURL          = 2048
)

// DefaultRetrySchedule is the Standard Webhooks schedule: the waits after
// the first, second, ... attempt (eight attempts in all).
var DefaultRetrySchedule = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}

// webhookEvents maps the names a Webhook's events list uses to event types.
var webhookEvents = map[string]string{"queued": EventQueued, "started": EventStarted, "completed": EventCompleted}

// RetrySchedule is the policy's schedule, or the default.
func RetrySchedule(p *sluicev1.Policy) []time.Duration {
	s := p.GetWebhooks().GetRetrySchedule()
	if len(s) == 0 {
		return DefaultRetrySchedule
	}
	out := make([]time.Duration, len(s))
	for i, d := range s {
		out[i] = d.AsDuration()
	}
	return out
}

// WebhookTimeout is one attempt's time limit under policy p.
func WebhookTimeout(p *sluicev1.Policy) time.Duration {
	if d := p.GetWebhooks().GetTimeout().AsDuration(); d > 0 {
		return min(d, MaxWebhookTimeout)
	}
	return DefaultWebhookTimeout
}

// WebhookInFlight is how many deliveries of one tenant may be in flight.
func WebhookInFlight(p *sluicev1.Policy) int {
	if n := p.GetWebhooks().GetMaxInFlightPerTenant(); n > 0 {
		return int(n)
	}
	return DefaultWebhookInFlight
}

// ValidateWebhook checks a webhook's URL and events under the policy's
// settings, naming the field: the scheme, a host, and a host that is not a
// private, loopback, link-local or unspecified IP address unless allowed. (A
// host name is resolved, and its addresses checked, by the caller and again
// at every connection; see node.)
func ValidateWebhook(field string, w *sluicev1.Webhook, s *sluicev1.WebhookSettings) error {
	if len(w.GetUrl()) > MaxWebhookURL {
		return fmt.Errorf("%s.url: %d bytes exceed the limit of %d", field, len(w.GetUrl()), MaxWebhookURL)
	}
	u, err := url.Parse(w.GetUrl())
	if err != nil {
		return fmt.Errorf("%s.url: %q is not a URL: %v", field, w.GetUrl(), err)
	}
	switch {
	case u.Scheme == "http" && !s.GetAllowHttp():
		return fmt.Errorf("%s.url: %q: http is not allowed (https only; the policy's webhooks.allow_http allows it)", field, w.Url)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%s.url: %q must be an https URL", field, w.Url)
	case u.Hostname() == "":
		return fmt.Errorf("%s.url: %q has no host", field, w.Url)
	case u.User != nil:
		return fmt.Errorf("%s.url: %q must not carry a user name or password", field, w.Url)
	case u.Fragment != "":
		return fmt.Errorf("%s.url: %q must not have a fragment", field, w.Url)
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil && !s.GetAllowPrivate() {
		if reason := PrivateAddress(ip); reason != "" {
			return fmt.Errorf("%s.url: %q is a %s address (the policy's webhooks.allow_private allows it)", field, w.Url, reason)
		}
	}
	if strings.EqualFold(u.Hostname(), "localhost") && !s.GetAllowPrivate() {
		return fmt.Errorf("%s.url: %q is a loopback address (the policy's webhooks.allow_private allows it)", field, w.Url)
	}
	if len(w.GetEvents()) > len(webhookEvents) {
		return fmt.Errorf("%s.events: %d entries; there are only %d events", field, len(w.Events), len(webhookEvents))
	}
	for i, e := range w.GetEvents() {
		if _, ok := webhookEvents[e]; !ok {
			return fmt.Errorf("%s.events[%d]: %q is not queued, started or completed", field, i, e)
		}
	}
	return nil
}

// PrivateAddress says why ip may not receive webhooks ("loopback",
// "private", "link-local", ...), or "" if it may.
func PrivateAddress(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local (cloud metadata)"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	case ip.Is4() && ip.As4()[0] == 100 && ip.As4()[1]&0xc0 == 64:
		return "shared (carrier-grade NAT)"
	}
	return ""
}

// ValidateWebhookSecret checks one "whsec_" secret.
func ValidateWebhookSecret(field, s string) error {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return fmt.Errorf("%s: must start with \"whsec_\" (sluice webhooks new-secret makes one)", field)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("%s: the part after \"whsec_\" is not base64: %v", field, err)
	}
	if len(key) < 24 || len(key) > 64 {
		return fmt.Errorf("%s: %d bytes of key; must be 24 to 64", field, len(key))
	}
	return nil
}

// validateWebhooks checks the policy's webhook settings and its tenants'
// webhooks and secrets.
func validateWebhooks(p *sluicev1.Policy) error {
	s := p.GetWebhooks()
	if d := s.GetTimeout(); d != nil && (d.CheckValid() != nil || d.AsDuration() < 0 || d.AsDuration() > MaxWebhookTimeout) {
		return fmt.Errorf("webhooks.timeout: %v must be between 0 and %v", d.AsDuration(), MaxWebhookTimeout)
	}
	if n := s.GetMaxInFlightPerTenant(); n < 0 || n > MaxWebhookInFlight {
		return fmt.Errorf("webhooks.max_in_flight_per_tenant: %d must be between 0 and %d", n, MaxWebhookInFlight)
	}
	if len(s.GetRetrySchedule()) > MaxRetrySchedule {
		return fmt.Errorf("webhooks.retry_schedule: %d entries exceed the limit of %d", len(s.RetrySchedule), MaxRetrySchedule)
	}
	for i, d := range s.GetRetrySchedule() {
		if d.CheckValid() != nil || d.AsDuration() <= 0 || d.AsDuration() > 7*24*time.Hour {
			return fmt.Errorf("webhooks.retry_schedule[%d]: must be a positive duration of at most 168h", i)
		}
	}
	for i, t := range p.Tenants {
		field := fmt.Sprintf("tenants[%d]", i)
		if len(t.WebhookSecrets) > 2 {
			return fmt.Errorf("%s.webhook_secrets: %d entries; at most 2 (the new and the old while rotating)", field, len(t.WebhookSecrets))
		}
		for j, sec := range t.WebhookSecrets {
			if err := ValidateWebhookSecret(fmt.Sprintf("%s.webhook_secrets[%d]", field, j), sec); err != nil {
				return err
			}
		}
		if t.Webhook == nil {
			continue
		}
		if err := ValidateWebhook(field+".webhook", t.Webhook, s); err != nil {
			return err
		}
		if len(t.WebhookSecrets) == 0 {
			return fmt.Errorf("%s.webhook_secrets: the tenant has a webhook but no secret to sign it with (sluice webhooks new-secret)", field)
		}
	}
	return nil
}

// WantsEvent reports whether webhook w is sent event (one of the Event
// types): those its events list names, or only completions if it names none.
func WantsEvent(w *sluicev1.Webhook, event string) bool {
	if len(w.Events) == 0 {
		return event == EventCompleted
	}
	for _, e := range w.Events {
		if webhookEvents[e] == event {
			return true
		}
	}
	return false
}
