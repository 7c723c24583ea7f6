package policy

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// MaxBytes bounds a policy file.
const MaxBytes = 8 << 20

// Parse reads the YAML or JSON form of a sluice.v1.Policy and
// validates it. Errors name the offending field.
func Parse(data []byte) (*sluicev1.Policy, error) {
	if len(data) > MaxBytes {
		return nil, fmt.Errorf("policy: %d bytes exceed the %d-byte limit", len(data), MaxBytes)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("policy: not valid YAML or JSON: %w", err)
	}
	p := &sluicev1.Policy{}
	js, err = normalizeDurations(js, p.ProtoReflect().Descriptor())
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if err := protojson.Unmarshal(js, p); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if err := Validate(p); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return p, nil
}

// normalizeDurations rewrites Go-style durations ("10m", "1h30m") in the
// message's Duration fields into the "600s" form protojson requires, so
// policy files can be written the way people write durations.
func normalizeDurations(js []byte, md protoreflect.MessageDescriptor) ([]byte, error) {
	var doc any
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, err
	}
	if err := walkDurations(doc, md, ""); err != nil {
		return nil, err
	}
	return json.Marshal(doc)
}

func walkDurations(v any, md protoreflect.MessageDescriptor, path string) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	for key, val := range obj {
		fd := md.Fields().ByJSONName(key)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(key))
		}
		if fd == nil || fd.Message() == nil {
			continue
		}
		field := strings.TrimPrefix(path+"."+string(fd.Name()), ".")
		if fd.Message().FullName() == "google.protobuf.Duration" {
			if xs, ok := val.([]any); ok && fd.IsList() {
				for i, x := range xs {
					d, err := durationJSON(fmt.Sprintf("%s[%d]", field, i), x)
					if err != nil {
						return err
					}
					xs[i] = d
				}
				continue
			}
			d, err := durationJSON(field, val)
			if err != nil {
				return err
			}
			obj[key] = d
			continue
		}
		if fd.IsList() {
			if xs, ok := val.([]any); ok {
				for i, x := range xs {
					if err := walkDurations(x, fd.Message(), fmt.Sprintf("%s[%d]", field, i)); err != nil {
						return err
					}
				}
			}
			continue
		}
		if !fd.IsMap() {
			if err := walkDurations(val, fd.Message(), field); err != nil {
				return err
			}
		}
	}
	return nil
}

// durationJSON turns a duration such as "2s" into protojson's "2s" form.
func durationJSON(field string, val any) (string, error) {
	s, ok := val.(string)
	if !ok {
		return "", fmt.Errorf("%s: want a duration such as \"2s\" or \"10m\"", field)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return "", fmt.Errorf("%s: %q is not a duration such as \"2s\" or \"10m\"", field, s)
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s", nil
}

// Load reads and validates a policy file.
func Load(path string) (*sluicev1.Policy, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxBytes {
		return nil, fmt.Errorf("%s: %d bytes exceed the %d-byte limit", path, fi.Size(), MaxBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}
