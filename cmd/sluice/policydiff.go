package main

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// policyDiff lists what replacing cur with next changes, one line per
// change, grouped by section: "+" added, "-" removed, "~" changed. Hashes
// (API keys, tokens) show their first 8 hex digits only. An empty result
// means the policies are equal.
func policyDiff(cur, next *sluicev1.Policy) []string {
	var out []string
	section := func(title string, lines []string) {
		if len(lines) == 0 {
			return
		}
		out = append(out, title+":")
		for _, l := range lines {
			out = append(out, "  "+l)
		}
	}
	section("tiers", diffNamed(cur.GetTiers(), next.GetTiers(), (*sluicev1.Tier).GetName, nil))
	section("tenants", diffNamed(cur.GetTenants(), next.GetTenants(), (*sluicev1.Tenant).GetName, tenantKeys))
	section("models", diffNamed(cur.GetModels(), next.GetModels(), (*sluicev1.Model).GetName, nil))
	section("rules", diffNamed(cur.GetRules(), next.GetRules(), (*sluicev1.Rule).GetName, nil))
	// The rest of the policy, field by field: tokens, defaults, scheduling, flags.
	var rest []string
	skip := map[protoreflect.Name]bool{"tiers": true, "tenants": true, "models": true, "rules": true}
	for _, c := range fieldChanges(cur.ProtoReflect(), next.ProtoReflect(), skip) {
		rest = append(rest, "~ "+c)
	}
	section("settings", rest)
	return out
}

// diffNamed compares two lists of named entries. keys, when given, says
// what changed in the entries' API keys (and those are left out of the
// field by field comparison).
func diffNamed[T proto.Message](cur, next []T, name func(T) string, keys func(a, b T) string) []string {
	byName := func(xs []T) map[string]T {
		m := make(map[string]T, len(xs))
		for _, x := range xs {
			m[name(x)] = x
		}
		return m
	}
	old, neu := byName(cur), byName(next)
	skip := map[protoreflect.Name]bool{}
	if keys != nil {
		skip["api_key_sha256"] = true
	}
	// An added entry is listed by name, then its other fields.
	added := map[protoreflect.Name]bool{"name": true, "api_key_sha256": skip["api_key_sha256"]}
	var out []string
	for _, x := range next {
		if _, ok := old[name(x)]; !ok {
			var none T
			out = append(out, "+ "+name(x)+" "+formatMessage(x.ProtoReflect(), added)+withKeys(keys, none, x))
		}
	}
	for _, x := range cur {
		if _, ok := neu[name(x)]; !ok {
			var none T
			out = append(out, "- "+name(x)+withKeys(keys, x, none))
		}
	}
	for _, x := range next {
		o, ok := old[name(x)]
		if !ok || proto.Equal(o, x) {
			continue
		}
		changes := fieldChanges(o.ProtoReflect(), x.ProtoReflect(), skip)
		if keys != nil {
			if k := keys(o, x); k != "" {
				changes = append(changes, k)
			}
		}
		out = append(out, "~ "+name(x)+": "+strings.Join(changes, "; "))
	}
	return out
}

func withKeys[T any](keys func(a, b T) string, a, b T) string {
	if keys == nil {
		return ""
	}
	return " (" + keys(a, b) + ")"
}

// tenantKeys describes the API keys added and removed between two versions
// of a tenant (either may be nil).
func tenantKeys(a, b *sluicev1.Tenant) string {
	var added, removed []string
	for _, h := range b.GetApiKeySha256() {
		if !slices.Contains(a.GetApiKeySha256(), h) {
			added = append(added, shortHash(h))
		}
	}
	for _, h := range a.GetApiKeySha256() {
		if !slices.Contains(b.GetApiKeySha256(), h) {
			removed = append(removed, shortHash(h))
		}
	}
	switch {
	case a == nil:
		return apiKeys(len(added)) + ": " + strings.Join(added, " ")
	case b == nil:
		return apiKeys(len(removed))
	case len(added)+len(removed) == 0:
		return ""
	}
	s := fmt.Sprintf("API keys +%d -%d", len(added), len(removed))
	if len(added) > 0 {
		s += " (added " + strings.Join(added, " ") + ")"
	}
	if len(removed) > 0 {
		s += " (removed " + strings.Join(removed, " ") + ")"
	}
	return s
}

func apiKeys(n int) string {
	if n == 1 {
		return "1 API key"
	}
	return fmt.Sprintf("%d API keys", n)
}

// shortHash is the first 8 hex digits of a SHA-256, enough to tell keys
// apart in a diff without printing them whole.
func shortHash(h string) string {
	if len(h) > 8 {
		return h[:8] + "…"
	}
	return h
}

// fieldChanges lists "field: old → new" for each field that differs
// between two messages of the same type, in field number order.
func fieldChanges(a, b protoreflect.Message, skip map[protoreflect.Name]bool) []string {
	var out []string
	fields := b.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if skip[fd.Name()] || (!a.Has(fd) && !b.Has(fd)) {
			continue
		}
		va, vb := a.Get(fd), b.Get(fd)
		if a.Has(fd) && b.Has(fd) && va.Equal(vb) {
			continue
		}
		if fd.Message() != nil && !fd.IsList() && !fd.IsMap() && a.Has(fd) && b.Has(fd) && fd.Message().FullName() != "google.protobuf.Duration" {
			// Both set: say which of its fields changed (defaults.max_attempts).
			for _, c := range fieldChanges(va.Message(), vb.Message(), nil) {
				out = append(out, string(fd.Name())+"."+c)
			}
			continue
		}
		out = append(out, fmt.Sprintf("%s: %s → %s", fd.Name(), formatField(a, fd), formatField(b, fd)))
	}
	return out
}

func formatField(m protoreflect.Message, fd protoreflect.FieldDescriptor) string {
	if !m.Has(fd) {
		return "(unset)"
	}
	v := m.Get(fd)
	if fd.IsList() {
		l := v.List()
		items := make([]string, l.Len())
		for i := range l.Len() {
			items[i] = formatValue(fd, l.Get(i))
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	if fd.IsMap() {
		var items []string
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			items = append(items, k.String()+": "+formatValue(fd.MapValue(), mv))
			return true
		})
		slices.Sort(items)
		return "{" + strings.Join(items, ", ") + "}"
	}
	return formatValue(fd, v)
}

// formatValue writes one value the way a policy file would: durations as
// "2s", enums by name, hashes shortened, messages as {field: value, ...}.
func formatValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if d, ok := v.Message().Interface().(*durationpb.Duration); ok {
			return d.AsDuration().String()
		}
		return formatMessage(v.Message(), nil)
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return fmt.Sprint(v.Enum())
	case protoreflect.StringKind:
		if strings.HasSuffix(string(fd.Name()), "sha256") {
			return shortHash(v.String())
		}
		return fmt.Sprintf("%q", v.String())
	}
	return fmt.Sprint(v.Interface())
}

// formatMessage writes a message's set fields in field number order.
func formatMessage(m protoreflect.Message, skip map[protoreflect.Name]bool) string {
	var items []string
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if skip[fd.Name()] || !m.Has(fd) {
			continue
		}
		items = append(items, string(fd.Name())+": "+formatField(m, fd))
	}
	return "{" + strings.Join(items, ", ") + "}"
}
