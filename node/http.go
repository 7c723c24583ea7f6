package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/sluicehq/sluice/proto/gen/sluice/peer/v1/peerv1connect"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
	"github.com/sluicehq/sluice/ui"
)

// compressMinBytes is the smallest response body that is gzipped.
const compressMinBytes = 1024

// newHTTPServer serves every service on one port: Connect, gRPC and
// gRPC-Web over HTTP/1.1 and cleartext HTTP/2 (h2c), or over HTTP/1.1 and
// HTTP/2 on TLS when the node has a certificate.
func (n *Node) newHTTPServer() *http.Server {
	mux := http.NewServeMux()
	// Gzip only what is worth it: compressing every small reply (a Submit's ack, a
	// job) cost about a sixth of a node's CPU under load (bench/README.md, cluster).
	// Request bodies are bounded by limitRequestBody and the options of
	// requestHandlerOptions, not connect.WithReadMaxBytes (requestbody.go).
	opts := append(requestHandlerOptions(), connect.WithCompressMinBytes(compressMinBytes))
	if n.metrics != nil {
		opts = append(opts, connect.WithInterceptors(n.metrics.Interceptor()))
		mux.Handle("/metrics", n.metrics.Handler())
	}
	handle := func(path string, h http.Handler) { mux.Handle(path, limitRequestBody(h)) }
	jobs := &jobService{n: n}
	handle(sluicev1connect.NewJobServiceHandler(jobs, opts...))
	mux.HandleFunc(eventsPath, jobs.serveEvents)
	mux.Handle(ui.Path, ui.Handler())
	mux.Handle("GET /{$}", http.RedirectHandler(ui.Path, http.StatusFound))
	handle(sluicev1connect.NewAdminServiceHandler(&adminService{n: n}, opts...))
	handle(sluicev1connect.NewExecutorServiceHandler(&executorService{n: n}, opts...))
	handle(sluicev1connect.NewLimitServiceHandler(&limitService{n: n}, opts...))
	handle(rlsProcedure, connect.NewUnaryHandler(rlsProcedure, n.checks.shouldRateLimit, opts...))
	// Servers only (SubmitBatch checks the caller): a batch of Submits may be
	// larger than a client's request.
	mux.Handle(peerv1connect.NewForwardServiceHandler(&forwardService{n: n},
		slices.Concat(opts, []connect.HandlerOption{connect.WithReadMaxBytes(forwardBodyMax)})...))
	reflector := grpcreflect.NewStaticReflector(
		sluicev1connect.JobServiceName,
		sluicev1connect.AdminServiceName,
		sluicev1connect.ExecutorServiceName,
		sluicev1connect.LimitServiceName,
		grpchealth.HealthV1ServiceName,
	)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.Handle(grpchealth.NewHandler(healthChecker{n}))
	// Profiles show what a node is doing (and its memory): admins only.
	mux.Handle("/debug/pprof/", n.adminOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", n.adminOnly(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", n.adminOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", n.adminOnly(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", n.adminOnly(http.HandlerFunc(pprof.Trace)))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(logFormatHeader, strconv.Itoa(logFormat))
		w.Header().Set(nodeIDHeader, n.cfg.ID)
		w.Header().Set(appliedHeader, strconv.FormatUint(n.fsm.LastIndex(), 10))
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !n.duty.inCluster() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", notInClusterHint(n.cfg.ID, n.RaftAddr(), n.Addr()))
			return
		}
		if !n.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: raft state %s, leader %q\n", n.raft.State(), n.leaderID())
			return
		}
		fmt.Fprintln(w, "ready")
	})
	p := new(http.Protocols)
	p.SetHTTP1(true)
	srv := &http.Server{
		Handler:           mux,
		Protocols:         p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Refused TLS handshakes (a peer or executor with a certificate
		// from another CA) are worth an operator's eye.
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	if n.tls == nil {
		p.SetUnencryptedHTTP2(true)
		return srv
	}
	// TLS: HTTP/2 and HTTP/1.1 negotiated by ALPN; what a client
	// certificate proves is worked out once per connection.
	p.SetHTTP2(true)
	srv.TLSConfig = n.tls.apiConfig()
	srv.Handler = n.withCallerCert(mux)
	srv.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connCertKey{}, &connCert{})
	}
	return srv
}

func (n *Node) leaderID() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// healthChecker answers grpc.health.v1: SERVING once the node is ready.
type healthChecker struct{ n *Node }

func (h healthChecker) Check(_ context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	switch req.Service {
	case "", sluicev1connect.JobServiceName, sluicev1connect.AdminServiceName, sluicev1connect.ExecutorServiceName:
	default:
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
	}
	if h.n.Ready() {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
}

// adminOnly serves h to callers with the admin token; the others get the
// admin check's error as plain text with its HTTP status.
func (n *Node) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := n.admin(r.Header); err != nil {
			var ce *connect.Error
			if errors.As(err, &ce) {
				http.Error(w, ce.Message(), connectHTTPStatus(ce.Code()))
				return
			}
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
