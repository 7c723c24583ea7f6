package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/gpuexec"
	"github.com/sluicehq/sluice/metrics"
	"github.com/sluicehq/sluice/node"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

type executorFlags struct {
	name, join, gossip, servers, runner, models, token string
	slots, gpus                                        int
	gpuMemoryMB                                        int64
	failureRate                                        float64
	grace                                              time.Duration
	refresh                                            time.Duration
	probe                                              bool
	metrics                                            string
	tlsCA, tlsCert, tlsKey, gossipKeyFile              string
	tokenSet                                           bool
}

func executorCmd() *cobra.Command {
	var f executorFlags
	host, _ := os.Hostname()
	c := &cobra.Command{
		Use:   "executor",
		Short: "Run a GPU executor: join the gossip pool, lease jobs from the leader, run them",
		Long: `Run a GPU executor beside real GPUs. It finds its GPUs through NVML (or takes
--gpus/--gpu-memory-mb when there is no NVIDIA driver), joins the servers' gossip
pool through --join, leases jobs from the leader, runs each with --runner
(pinning the assigned GPUs with CUDA_VISIBLE_DEVICES), streams progress, and
stops a job within a second when its owner cancels it.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			f.tokenSet = c.Flags().Changed("token")
			return runExecutor(c.Context(), f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.name, "name", fmt.Sprintf("%s-%d", host, os.Getpid()), "executor name, unique in the cluster")
	fl.StringVar(&f.join, "join", "", "comma-separated gossip addresses of servers (their --gossip) to join the pool through")
	fl.StringVar(&f.gossip, "gossip", "127.0.0.1:0", "this executor's gossip address (host:port; port 0 picks one)")
	fl.StringVar(&f.servers, "servers", "", "comma-separated server API addresses, in addition to those found through gossip")
	fl.StringVar(&f.runner, "runner", "synthetic", "how jobs run: synthetic, exec:COMMAND (input JSON on stdin, output JSON on stdout) or http:URL")
	fl.StringVar(&f.models, "models", "", "comma-separated models this executor serves (empty: any)")
	fl.IntVar(&f.slots, "slots", 1, "jobs run at once")
	fl.IntVar(&f.gpus, "gpus", 1, "GPUs to declare when NVML is unavailable (no NVIDIA driver)")
	fl.Int64Var(&f.gpuMemoryMB, "gpu-memory-mb", 81920, "memory per declared GPU in MiB when NVML is unavailable")
	fl.StringVar(&f.token, "token", envOr("SLUICE_EXECUTOR_TOKEN", node.DemoExecutorToken), "executor token (env SLUICE_EXECUTOR_TOKEN)")
	fl.Float64Var(&f.failureRate, "failure-rate", 0, "synthetic runner: share of attempts that fail (0–1)")
	fl.DurationVar(&f.grace, "grace", 5*time.Second, "exec runner: time between SIGTERM and SIGKILL when a job is stopped")
	fl.DurationVar(&f.refresh, "refresh", 3*time.Second, "how often to re-read the GPUs and gossip free memory, utilisation and free slots")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "CA (PEM) to verify the servers' API certificates with; servers found through gossip are then dialled over https://")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "client certificate (PEM) to authenticate with instead of --token (the servers' --executor-ca signs it; its Common Name must be --name); re-read on change or SIGHUP")
	fl.StringVar(&f.tlsKey, "tls-key", "", "private key (PEM) of --tls-cert")
	fl.StringVar(&f.gossipKeyFile, "gossip-key-file", "", "the servers' gossip key file (see sluice server --help); re-read on change or SIGHUP")
	fl.BoolVar(&f.probe, "probe", false, "discover the GPUs, print them and the gossip metadata size, and exit")
	fl.StringVar(&f.metrics, "metrics", "", "address (host:port) to serve Prometheus metrics on at /metrics (attempts, lease, GPUs); empty: none")
	return c
}

func runExecutor(ctx context.Context, f executorFlags) error {
	logger, err := newLogger()
	if err != nil {
		return err
	}
	if f.slots < 1 || f.slots > node.MaxExecutorSlots {
		return fmt.Errorf("--slots: %d is outside 1–%d", f.slots, node.MaxExecutorSlots)
	}
	gpus, err := gpuexec.Discover(gpuexec.SystemNVML(), gpuexec.DeclaredGPUs{Count: f.gpus, MemoryMB: f.gpuMemoryMB})
	if err != nil {
		return err
	}
	defer gpus.Close()
	inv := gpus.Inventory()
	logger.Info("gpus", "source", inv.Source, "count", len(inv.GPUs), "driver", inv.Driver, "note", inv.Note)
	info := &sluicev1.ExecutorInfo{Name: f.name, Slots: int32(f.slots), Models: splitList(f.models)}
	for _, g := range inv.GPUs {
		info.Gpus = append(info.Gpus, &sluicev1.GPU{Uuid: g.DeviceID(), Name: g.Name, MemoryTotalMb: g.MemoryTotalMB,
			MemoryFreeMb: g.MemoryFreeMB, UtilizationPct: g.UtilizationPct, Mig: g.MIG})
	}
	runner, err := gpuexec.ParseRunner(f.runner, gpuexec.RunnerOptions{Name: f.name, FailureRate: f.failureRate, Grace: f.grace})
	if err != nil {
		return err
	}
	client, cert, err := executorTLS(f, logger)
	if err != nil {
		return err
	}
	scheme := "http"
	if client != nil {
		scheme = "https"
	}
	token := f.token
	if cert != nil && !f.tokenSet {
		token = "" // the certificate authenticates; a default token would only widen what a stolen one can do
	}
	agent := &gpuexec.Agent{Info: info, Servers: withScheme(gpuexec.ServerList(f.servers), scheme), Runner: runner, Token: token, Log: logger, Client: client}
	meta := func() *sluicev1.GossipMeta {
		m := &sluicev1.GossipMeta{Role: sluicev1.GossipMeta_ROLE_EXECUTOR, Slots: int32(f.slots),
			FreeSlots: int32(max(0, f.slots-agent.Running()))}
		for _, g := range gpus.Inventory().GPUs {
			m.Gpus = append(m.Gpus, &sluicev1.GossipGPU{MemoryTotalMb: g.MemoryTotalMB, MemoryFreeMb: g.MemoryFreeMB, UtilizationPct: g.UtilizationPct})
		}
		return m
	}
	if f.probe {
		b, err := node.EncodeMeta(meta())
		fmt.Printf("%s: %d GPUs from %s (driver %q)\n%s\n", f.name, len(inv.GPUs), inv.Source, inv.Driver, inv.Note)
		for _, g := range inv.GPUs {
			fmt.Printf("  gpu %d  %s  %s  %d MiB total, %d MiB free, utilisation %d%%, mig %v\n",
				g.Index, g.DeviceID(), g.Name, g.MemoryTotalMB, g.MemoryFreeMB, g.UtilizationPct, g.MIG)
		}
		fmt.Printf("gossip metadata: %d bytes (limit 512), err %v\n", len(b), err)
		return nil
	}
	pool, err := node.StartPool(node.PoolConfig{Name: f.name, Bind: f.gossip, Join: splitList(f.join), Meta: meta,
		KeyFile: f.gossipKeyFile, Logger: logger})
	if err != nil {
		return listenFlagError(err)
	}
	defer pool.Close()
	agent.Discover = func() []string {
		var out []string
		for _, m := range pool.Members() {
			if m.Role == sluicev1.GossipMeta_ROLE_SERVER && m.ApiAddress != "" {
				out = append(out, scheme+"://"+m.ApiAddress)
			}
		}
		return out
	}
	fmt.Printf("sluice: executor %s in the gossip pool at %s, %d GPUs (%s), runner %s\n", f.name, pool.Addr(), len(inv.GPUs), inv.Source, f.runner)
	if f.metrics != "" {
		addr, stopMetrics, err := serveAgentMetrics(f.metrics, f.name, agent, gpus)
		if err != nil {
			return err
		}
		defer stopMetrics()
		fmt.Printf("sluice: executor metrics on http://%s/metrics\n", addr)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cert != nil {
		go cert.Watch(ctx)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if cert != nil {
					cert.Reload()
				}
				if f.gossipKeyFile != "" {
					pool.ReloadKeys()
				}
			}
		}
	}()
	go func() {
		t := time.NewTicker(f.refresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, err := gpus.Refresh(); err != nil {
					logger.Warn("gpu refresh", "err", err)
				}
				pool.Refresh()
				rejoin(pool, agent, splitList(f.join), logger)
			}
		}
	}()
	agent.Run(ctx)
	return nil
}

// executorTLS builds the client for https:// servers: nil when no TLS flag
// is given. The certificate, when given, is re-read as it changes.
func executorTLS(f executorFlags, logger *slog.Logger) (*http.Client, *node.CertReloader, error) {
	if f.tlsCA == "" && f.tlsCert == "" && f.tlsKey == "" {
		return nil, nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.tlsCA != "" {
		pool, _, err := node.LoadCAFile("--tls-ca", f.tlsCA)
		if err != nil {
			return nil, nil, err
		}
		cfg.RootCAs = pool
	}
	var cert *node.CertReloader
	if f.tlsCert != "" || f.tlsKey != "" {
		var err error
		if cert, err = node.NewCertReloader(f.tlsCert, f.tlsKey, logger); err != nil {
			return nil, nil, err
		}
		if cn := cert.Current().Leaf.Subject.CommonName; cn != f.name && !slices.Contains(cert.Current().Leaf.DNSNames, f.name) {
			return nil, nil, fmt.Errorf("--tls-cert %s: issued to %q, but --name is %q; the servers accept a certificate only for its own name", f.tlsCert, cn, f.name)
		}
		cfg.GetClientCertificate = cert.GetClientCertificate
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	return &http.Client{Transport: t}, cert, nil
}

// serveAgentMetrics serves an executor's metrics on addr; it returns the
// address bound and a function that stops serving.
func serveAgentMetrics(addr, name string, agent *gpuexec.Agent, gpus *gpuexec.GPUSet) (string, func(), error) {
	m := metrics.NewAgent(name, metrics.AgentSource{
		Running:   agent.Running,
		Connected: agent.Connected,
		GPUs: func() []metrics.AgentGPU {
			var out []metrics.AgentGPU
			for _, g := range gpus.Inventory().GPUs {
				u := -1.0
				if g.UtilizationPct >= 0 {
					u = float64(g.UtilizationPct) / 100
				}
				out = append(out, metrics.AgentGPU{ID: g.DeviceID(), Utilization: u, FreeBytes: g.MemoryFreeMB << 20, TotalBytes: g.MemoryTotalMB << 20})
			}
			return out
		},
	})
	agent.Ended = m.Ended
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}

// rejoin joins the gossip pool again through --join when the executor knows
// no server (its only server restarted, or is not up yet), saying so: a
// restarted server starts a pool of its own and would not find it.
func rejoin(pool *node.Pool, agent *gpuexec.Agent, join []string, logger *slog.Logger) {
	if len(agent.Servers) > 0 || len(agent.Discover()) > 0 || len(join) == 0 {
		return
	}
	if err := pool.Join(join); err != nil {
		logger.Warn("no server known: cannot rejoin the gossip pool; retrying", "join", strings.Join(join, ","), "err", err)
		return
	}
	logger.Info("no server was known: rejoined the gossip pool", "join", strings.Join(join, ","))
}
