package node

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// What one client can hold open is bounded, so that no client can take a
// node's memory or goroutines away from the others: TCP connections per
// client IP (connLimiter; a connection over the limit is closed as it is
// accepted) and WatchJob streams per API key (streamLimiter; one over the
// limit is refused with resource_exhausted). Cluster members are exempt
// from the first: forwarding keeps many connections to the leader.

// Defaults for Config.MaxConnsPerIP and Config.MaxStreamsPerKey.
const (
	DefaultMaxConnsPerIP    = 512
	DefaultMaxStreamsPerKey = 100
)

// connLimiter is a listener that holds at most max connections from one IP.
type connLimiter struct {
	net.Listener
	max    int
	exempt func(ip string) bool
	log    *slog.Logger

	mu       sync.Mutex
	open     map[string]int
	lastWarn time.Time
}

func newConnLimiter(ln net.Listener, max int, exempt func(string) bool, log *slog.Logger) *connLimiter {
	return &connLimiter{Listener: ln, max: max, exempt: exempt, log: log, open: make(map[string]int)}
}

// Accept returns the next connection whose IP is under its limit; the others
// are closed at once.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, _, err := net.SplitHostPort(c.RemoteAddr().String())
		if err != nil || l.exempt(ip) {
			return c, nil
		}
		l.mu.Lock()
		if l.open[ip] >= l.max {
			warn := time.Since(l.lastWarn) > 10*time.Second
			if warn {
				l.lastWarn = time.Now()
			}
			l.mu.Unlock()
			c.Close()
			if warn {
				l.log.Warn("connection refused: too many from one IP (--max-conns-per-ip)", "ip", ip, "limit", l.max)
			}
			continue
		}
		l.open[ip]++
		l.mu.Unlock()
		return &countedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

func (l *connLimiter) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
}

// countedConn gives its IP's count back once, when it is closed.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// streamLimiter counts open streams by API key (its hash).
type streamLimiter struct {
	max  int
	mu   sync.Mutex
	open map[string]int
}

// hold takes one stream for key, or refuses with the limit; release gives it
// back.
func (s *streamLimiter) hold(key string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = make(map[string]int)
	}
	if s.open[key] >= s.max {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("watch streams: %d are open for this API key, the limit is %d (--max-streams-per-key); close one", s.open[key], s.max))
	}
	s.open[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.open[key]--; s.open[key] <= 0 {
				delete(s.open, key)
			}
		})
	}, nil
}

// count is the number of streams open.
func (s *streamLimiter) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0
	for _, n := range s.open {
		total += n
	}
	return total
}
