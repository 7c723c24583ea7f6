package node

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// What a request body may be, checked before a handler sees it. Every refusal
// is invalid_argument (HTTP 400, gRPC status 3), never resource_exhausted:
// retrying the same request cannot succeed (docs/troubleshooting.md).

// requestHandlerOptions are the connect options every service's handler takes:
// the strict JSON codec and a gzip that stops at MaxRequestBytes. connect's own
// WithReadMaxBytes is not used because it answers resource_exhausted, which
// tells clients to retry; limitRequestBody and limitedGzip enforce the same
// limit with invalid_argument.
func requestHandlerOptions() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(strictJSONCodec{name: "json"}),
		connect.WithCodec(strictJSONCodec{name: "json; charset=utf-8"}),
		connect.WithCompression("gzip",
			func() connect.Decompressor { return &limitedGzip{} },
			func() connect.Compressor { return gzip.NewWriter(io.Discard) }),
	}
}

// strictJSONCodec is connect's protojson codec without DiscardUnknown: a
// misspelt field ("priorty") is refused instead of silently dropped. Binary
// protobuf keeps accepting unknown fields, so an older server still serves a
// newer client that sends fields it does not know.
type strictJSONCodec struct{ name string }

func (c strictJSONCodec) Name() string { return c.name }

func (c strictJSONCodec) IsBinary() bool { return false }

func (c strictJSONCodec) Marshal(msg any) ([]byte, error) {
	return c.MarshalAppend(nil, msg)
}

func (c strictJSONCodec) MarshalAppend(dst []byte, msg any) ([]byte, error) {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", msg)
	}
	m, err := decodeUnknown(m)
	if err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, m)
}

// decodeUnknown is m with the fields it carries undecoded, as unknown
// fields, decoded: a leader's answer that a follower relays as it is
// (relayOutcome). protojson would leave them out.
func decodeUnknown(m proto.Message) (proto.Message, error) {
	raw := m.ProtoReflect().GetUnknown()
	if len(raw) == 0 {
		return m, nil
	}
	out := proto.Clone(m)
	out.ProtoReflect().SetUnknown(nil)
	if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("decoding the relayed %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return out, nil
}

var unknownFieldRE = regexp.MustCompile(`unknown field "([^"]*)"`)

func (c strictJSONCodec) Unmarshal(data []byte, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", msg)
	}
	if len(data) == 0 {
		return errors.New("request: an empty body is not a JSON object; send {} for a request with no fields")
	}
	err := protojson.UnmarshalOptions{}.Unmarshal(data, m)
	if err == nil {
		return nil
	}
	if sub := unknownFieldRE.FindStringSubmatch(err.Error()); sub != nil {
		return fmt.Errorf("request: unknown field %q in %s (check the spelling; the fields are in proto/sluice/v1/*.proto)", sub[1], m.ProtoReflect().Descriptor().FullName())
	}
	return fmt.Errorf("request: %v", err)
}

// tooLarge is the refusal of a body over MaxRequestBytes; size is 0 when it
// was not read to its end (past drainBytes) and so is not known.
func tooLarge(what string, size int64) *connect.Error {
	if size > 0 {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: %d bytes exceed the %d-byte limit", what, size, MaxRequestBytes))
	}
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: more than %d bytes exceed the %d-byte limit", what, drainBytes, MaxRequestBytes))
}

// drainBytes is how far an oversized body is read on to name its size in the
// error (connect too reads a refused body to its end, to reuse the connection).
const drainBytes = 16 * MaxRequestBytes

// overLimit reads r on to its end, or to drainBytes, and returns the refusal
// naming the size; read bytes were read already.
func overLimit(what string, r io.Reader, read int64) *connect.Error {
	rest, err := io.Copy(io.Discard, io.LimitReader(r, drainBytes-read))
	size := read + rest
	if err != nil || size >= drainBytes {
		size = 0
	}
	return tooLarge(what, size)
}

// limitedBody fails the read that passes MaxRequestBytes with a
// *connect.Error, which connect passes through as the call's error, so that
// Connect, gRPC and gRPC-Web each answer in their own shape.
type limitedBody struct {
	io.ReadCloser
	declared int64 // Content-Length, or -1
	read     int64
	err      error
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.declared > MaxRequestBytes {
		// Read it anyway (as far as drainBytes): a client that is still
		// sending must not see its body taken for the next request on the
		// connection.
		_, _ = io.Copy(io.Discard, io.LimitReader(b.ReadCloser, drainBytes))
		b.err = tooLarge("request", b.declared)
		return 0, b.err
	}
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	if b.read > MaxRequestBytes {
		b.err = overLimit("request", b.ReadCloser, b.read)
		return 0, b.err
	}
	return n, err
}

// limitRequestBody bounds every API request body and explains a POST that
// has no Content-Type, or curl's default form type (connect answers those
// with a bare 415).
func limitRequestBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// curl -d sends a form type unless told otherwise: the likeliest
		// wrong type, explained as a missing one is.
		if ct := r.Header.Get("Content-Type"); r.Method == http.MethodPost && (ct == "" || ct == "application/x-www-form-urlencoded") {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Accept-Post", "application/json, application/proto, application/grpc, application/grpc+proto, application/grpc-web, application/grpc-web+proto")
			w.WriteHeader(http.StatusUnsupportedMediaType)
			fmt.Fprintln(w, missingContentType)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &limitedBody{ReadCloser: r.Body, declared: r.ContentLength}
		}
		next.ServeHTTP(w, r)
	})
}

const missingContentType = "no usable Content-Type: send Content-Type: application/json (Connect with a JSON body), application/proto (Connect with binary protobuf), application/grpc or application/grpc-web; see docs/troubleshooting.md"

// limitedGzip is a gzip decompressor that stops at MaxRequestBytes, so that a
// small compressed body cannot expand without bound.
type limitedGzip struct {
	gz   gzip.Reader
	read int64
}

func (z *limitedGzip) Read(p []byte) (int, error) {
	n, err := z.gz.Read(p)
	z.read += int64(n)
	if z.read > MaxRequestBytes {
		return 0, overLimit("request (decompressed)", &z.gz, z.read)
	}
	return n, err
}

func (z *limitedGzip) Reset(r io.Reader) error {
	z.read = 0
	return z.gz.Reset(r)
}

func (z *limitedGzip) Close() error { return z.gz.Close() }
