package metrics

import (
	"context"
	"time"

	"connectrpc.com/connect"
)

// Interceptor counts every API call by procedure and code, and times the
// unary ones (a stream's time is how long its client watched).
func (m *Server) Interceptor() connect.Interceptor { return apiInterceptor{m} }

type apiInterceptor struct{ m *Server }

func codeLabel(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

func (i apiInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		began := time.Now()
		res, err := next(ctx, req)
		p := req.Spec().Procedure
		i.m.apiSeconds.WithLabelValues(p).Observe(time.Since(began).Seconds())
		i.m.apiRequests.WithLabelValues(p, codeLabel(err)).Inc()
		return res, err
	}
}

func (i apiInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i apiInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		err := next(ctx, conn)
		i.m.apiRequests.WithLabelValues(conn.Spec().Procedure, codeLabel(err)).Inc()
		return err
	}
}
