package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// eventsPath is the server-sent events endpoint: GET /v1/jobs/{id}/events.
const eventsPath = "/v1/jobs/{id}/events"

// serveEvents streams a job as server-sent events (text/event-stream) for
// browsers and curl: the same messages as WatchJob, each an "event: job"
// whose data is the job as JSON (GetJob's JSON) and whose id counts the
// stream's events from 1, ending with "event: end" once the job is final. It takes the API key as WatchJob does (the
// Authorization header), and ?consistent=true. An error before the first
// event is an HTTP status with the Connect error as JSON; after it, an
// "event: error" whose data is the error.
func (s *jobService) serveEvents(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	msg := &sluicev1.WatchJobRequest{Id: r.PathValue("id"), Consistent: r.URL.Query().Get("consistent") == "true"}
	started, seq := false, 0
	send := func(job *sluicev1.Job) error {
		data, err := protojson.Marshal(job)
		if err != nil {
			return err
		}
		if !started {
			h := w.Header()
			h.Set("Content-Type", "text/event-stream")
			h.Set("Cache-Control", "no-cache")
			h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
			w.WriteHeader(http.StatusOK)
			started = true
		}
		seq++
		if _, err := fmt.Fprintf(w, "event: job\nid: %d\ndata: %s\n\n", seq, data); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	err := s.watch(r.Context(), r.Header, r.RemoteAddr, msg, send)
	switch {
	case err == nil && started:
		fmt.Fprint(w, "event: end\ndata: {}\n\n")
		flusher.Flush()
	case err == nil, errors.Is(err, context.Canceled):
	case !started:
		ce := new(connect.Error)
		if !errors.As(err, &ce) {
			ce = connect.NewError(connect.CodeInternal, err)
		}
		for k, vs := range ce.Meta() {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(connectHTTPStatus(ce.Code()))
		fmt.Fprintf(w, "{\"code\":%q,\"message\":%q}\n", ce.Code().String(), ce.Message())
	default:
		fmt.Fprintf(w, "event: error\ndata: %s\n\n", strings.ReplaceAll(err.Error(), "\n", " "))
		flusher.Flush()
	}
}

// connectHTTPStatus is the HTTP status the Connect protocol gives a code.
func connectHTTPStatus(c connect.Code) int {
	switch c {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeCanceled:
		return 499
	}
	return http.StatusInternalServerError
}
