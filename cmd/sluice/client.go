package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/node"
	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// clientFlags are shared by every client command.
type clientFlags struct {
	addr, key, output, ca string
	client                *http.Client // set by check; nil: http.DefaultClient
}

func (f *clientFlags) register(c *cobra.Command) {
	c.PersistentFlags().StringVar(&f.addr, "addr", envOr("SLUICE_ADDR", "http://127.0.0.1:7700"), "server URL (env SLUICE_ADDR)")
	c.PersistentFlags().StringVar(&f.key, "key", os.Getenv("SLUICE_API_KEY"), "API key, or admin token for admin commands (env SLUICE_API_KEY)")
	c.PersistentFlags().StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	c.PersistentFlags().StringVar(&f.ca, "ca", os.Getenv("SLUICE_CA"), "CA certificate (PEM) to verify an https:// server with, instead of the system's roots (env SLUICE_CA)")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (f *clientFlags) check() error {
	if f.output != "text" && f.output != "json" {
		return fmt.Errorf("--output: %q is not text or json", f.output)
	}
	if f.key == "" {
		return errors.New("no API key: pass --key or set SLUICE_API_KEY (sluice dev prints the demo keys)")
	}
	if !strings.HasPrefix(f.addr, "http://") && !strings.HasPrefix(f.addr, "https://") {
		f.addr = "http://" + f.addr
	}
	if f.ca != "" && strings.HasPrefix(f.addr, "https://") {
		pool, _, err := node.LoadCAFile("--ca", f.ca)
		if err != nil {
			return err
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		f.client = &http.Client{Transport: t}
	}
	return nil
}

func (f *clientFlags) httpClient() *http.Client {
	if f.client != nil {
		return f.client
	}
	return http.DefaultClient
}

func (f *clientFlags) options() []connect.ClientOption {
	return []connect.ClientOption{connect.WithInterceptors(bearerAuth(f.key))}
}

// bearerAuth sends the key on unary and streaming calls alike.
type bearerAuth string

func (k bearerAuth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(k))
		return next(ctx, req)
	}
}

func (k bearerAuth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(k))
		return conn
	}
}

func (k bearerAuth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (f *clientFlags) jobs() sluicev1connect.JobServiceClient {
	return sluicev1connect.NewJobServiceClient(f.httpClient(), f.addr, f.options()...)
}

func (f *clientFlags) adminClient() sluicev1connect.AdminServiceClient {
	return sluicev1connect.NewAdminServiceClient(f.httpClient(), f.addr, f.options()...)
}

func (f *clientFlags) print(w io.Writer, msg proto.Message, text func(io.Writer)) {
	if f.output == "json" {
		b, _ := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(msg)
		fmt.Fprintln(w, string(b))
		return
	}
	text(w)
}

func clientCmds() []*cobra.Command {
	f := &clientFlags{}
	cmds := []*cobra.Command{submitCmd(f), getCmd(f), watchCmd(f), cancelCmd(f), listCmd(f), usageCmd(f), checkCmd(f), adminCmd(f), webhooksCmd(f)}
	for _, c := range cmds {
		f.register(c)
	}
	return cmds
}

func submitCmd(f *clientFlags) *cobra.Command {
	var (
		model, input, key, notBefore string
		priority, maxAttempts, gpus  int32
		queueTimeout, runTimeout     time.Duration
		labels, webhookEvents        []string
		webhook                      string
		wait, noSolve                bool
	)
	c := &cobra.Command{
		Use:   "submit --model M --input JSON|@FILE|-",
		Short: "Submit a job",
		Example: `  sluice submit --model sdxl --input '{"prompt":"a red fox","steps":30}'
  sluice submit --model llama-8b --input '{"prompt":"hi","duration_ms":3000}' --wait
  sluice submit --model sdxl --input @request.json
  generate-input | sluice submit --model sdxl --input -`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			spec := &sluicev1.JobSpec{Model: model, Priority: priority, IdempotencyKey: key, MaxAttempts: maxAttempts, Gpus: gpus}
			if input != "" {
				in, err := readInput(input, os.Stdin)
				if err != nil {
					return err
				}
				spec.Input = in
			}
			if queueTimeout > 0 {
				spec.QueueTimeout = durationpb.New(queueTimeout)
			}
			if runTimeout > 0 {
				spec.RunTimeout = durationpb.New(runTimeout)
			}
			if notBefore != "" {
				t, err := parseWhen(notBefore, time.Now())
				if err != nil {
					return err
				}
				spec.NotBefore = timestamppb.New(t)
			}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok {
					return fmt.Errorf("--label: %q is not key=value", l)
				}
				if spec.Labels == nil {
					spec.Labels = map[string]string{}
				}
				spec.Labels[k] = v
			}
			if webhook != "" {
				spec.Webhook = &sluicev1.Webhook{Url: webhook, Events: webhookEvents}
			} else if len(webhookEvents) > 0 {
				return fmt.Errorf("--webhook-events needs --webhook URL")
			}
			res, err := submitSolving(c.Context(), f, &sluicev1.SubmitRequest{Spec: spec}, !noSolve, os.Stderr)
			if err != nil {
				return err
			}
			job := res.Msg.Job
			if !wait {
				f.print(os.Stdout, res.Msg, func(w io.Writer) {
					verb := "submitted"
					if res.Msg.Deduplicated {
						verb = "already submitted (same idempotency key)"
					}
					fmt.Fprintf(w, "job %s %s: %s\n", job.Id, verb, summary(job))
				})
				return nil
			}
			return watch(c.Context(), f, job.Id)
		},
	}
	fl := c.Flags()
	fl.StringVar(&model, "model", "", "model to run (required)")
	fl.StringVar(&input, "input", "", "model input as a JSON object, e.g. '{\"prompt\":\"...\"}'; @FILE reads it from a file, - from stdin")
	fl.Int32Var(&priority, "priority", 0, "priority 0 (lowest) to 9")
	fl.StringVar(&key, "idempotency-key", "", "a repeated submit with the same key returns the first job")
	fl.StringVar(&notBefore, "not-before", "", "do not start before this time (RFC 3339, or a delay such as 30s)")
	fl.DurationVar(&queueTimeout, "queue-timeout", 0, "expire the job if it waits longer than this")
	fl.DurationVar(&runTimeout, "run-timeout", 0, "stop and retry an attempt that runs longer than this")
	fl.Int32Var(&maxAttempts, "max-attempts", 0, "attempts before the job is dead-lettered (0: policy default)")
	fl.Int32Var(&gpus, "gpus", 0, "GPUs the job needs (0: the model's default)")
	fl.StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	fl.BoolVar(&wait, "wait", false, "watch the job until it ends")
	fl.BoolVar(&noSolve, "no-solve", false, "over a CHALLENGE rule, fail instead of solving its proof-of-work challenge (passes are kept in the user cache directory, sluice/passes.json)")
	fl.StringVar(&webhook, "webhook", "", "https URL to POST the job's events to, signed with the tenant's webhook secret (docs/notifications.md)")
	fl.StringSliceVar(&webhookEvents, "webhook-events", nil, "events for --webhook: queued, started, completed (default completed)")
	_ = c.MarkFlagRequired("model")
	return c
}

// readInput is --input: a JSON object inline, from a file (@FILE) or from
// stdin (-), so that a large input does not hit the shell's argument limit.
func readInput(arg string, stdin io.Reader) (*structpb.Struct, error) {
	var (
		b    []byte
		from string
	)
	switch {
	case arg == "-":
		from = "stdin"
		var err error
		if b, err = io.ReadAll(io.LimitReader(stdin, node.MaxRequestBytes+1)); err != nil {
			return nil, fmt.Errorf("--input -: reading stdin: %v", err)
		}
	case strings.HasPrefix(arg, "@"):
		from = arg[1:]
		f, err := os.Open(from)
		if err != nil {
			return nil, fmt.Errorf("--input: %v", err)
		}
		defer f.Close()
		if b, err = io.ReadAll(io.LimitReader(f, node.MaxRequestBytes+1)); err != nil {
			return nil, fmt.Errorf("--input: reading %s: %v", from, err)
		}
	default:
		b = []byte(arg)
	}
	what := from
	if what == "" {
		what = "the argument"
	}
	// Far over what the server takes: say so here rather than send it.
	if len(b) > node.MaxRequestBytes {
		return nil, fmt.Errorf("--input: %s is over the server's %d-byte request limit (the input itself may be at most %d bytes)", what, node.MaxRequestBytes, node.MaxInputBytes)
	}
	in := &structpb.Struct{}
	if err := protojson.Unmarshal(b, in); err != nil {
		if from != "" {
			return nil, fmt.Errorf("--input: %s is not a JSON object: %v", from, err)
		}
		return nil, fmt.Errorf("--input: not a JSON object: %v (use @FILE to read it from a file, - from stdin)", err)
	}
	return in, nil
}

// parseWhen is --not-before: an RFC 3339 time, or a delay from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	example := now.UTC().Add(24 * time.Hour).Truncate(time.Hour).Format(time.RFC3339)
	return time.Time{}, fmt.Errorf("--not-before: %q is neither RFC 3339 (%s) nor a delay like 30s or 2h", s, example)
}

func getCmd(f *clientFlags) *cobra.Command {
	var consistent bool
	c := &cobra.Command{
		Use:   "get ID",
		Short: "Show one job",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			res, err := f.jobs().GetJob(c.Context(), connect.NewRequest(&sluicev1.GetJobRequest{Id: args[0], Consistent: consistent}))
			if err != nil {
				return err
			}
			f.print(os.Stdout, res.Msg.Job, func(w io.Writer) { describe(w, res.Msg.Job) })
			return nil
		},
	}
	c.Flags().BoolVar(&consistent, "consistent", false, consistentHelp)
	return c
}

// consistentHelp is the --consistent flag's help, on get and list.
const consistentHelp = "read through the leader: up to date, with the ETA, progress and run-time prediction only the leader knows (a follower's own replica may lag and has none)"

func watchCmd(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "watch ID",
		Short: "Print each change of a job (state, place in line, ETA) until it ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			return watch(c.Context(), f, args[0])
		},
	}
}

func watch(ctx context.Context, f *clientFlags, id string) error {
	stream, err := f.jobs().WatchJob(ctx, connect.NewRequest(&sluicev1.WatchJobRequest{Id: id, Consistent: true}))
	if err != nil {
		return err
	}
	defer stream.Close()
	var last *sluicev1.Job
	for stream.Receive() {
		job := stream.Msg().Job
		last = job
		f.print(os.Stdout, job, func(w io.Writer) {
			fmt.Fprintf(w, "%s  job %s  %s\n", time.Now().Format("15:04:05.000"), job.Id, summary(job))
		})
	}
	if err := stream.Err(); err != nil {
		return err
	}
	if last != nil && f.output == "text" && last.State == sluicev1.JobState_JOB_STATE_SUCCEEDED {
		fmt.Printf("output: %s\n", compactJSON(last.Output))
	}
	if last != nil && last.State != sluicev1.JobState_JOB_STATE_SUCCEEDED && fsm.IsTerminal(last.State) {
		return fmt.Errorf("job %s ended %s", last.Id, fsm.StateName(last.State))
	}
	return nil
}

func cancelCmd(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a queued or running job",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			res, err := f.jobs().CancelJob(c.Context(), connect.NewRequest(&sluicev1.CancelJobRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			f.print(os.Stdout, res.Msg.Job, func(w io.Writer) {
				fmt.Fprintf(w, "job %s %s\n", res.Msg.Job.Id, summary(res.Msg.Job))
			})
			return nil
		},
	}
}

func listCmd(f *clientFlags) *cobra.Command {
	var (
		states     []string
		limit      int32
		page       string
		allPages   bool
		consistent bool
	)
	c := &cobra.Command{
		Use:   "list",
		Short: "List your jobs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			req := &sluicev1.ListJobsRequest{PageSize: limit, PageToken: page, Consistent: consistent}
			for _, s := range states {
				v, ok := sluicev1.JobState_value["JOB_STATE_"+strings.ToUpper(s)]
				if !ok {
					return fmt.Errorf("--state: %q is not one of queued, running, succeeded, failed, canceled, expired, dead_lettered", s)
				}
				req.States = append(req.States, sluicev1.JobState(v))
			}
			all := &sluicev1.ListJobsResponse{}
			for {
				res, err := f.jobs().ListJobs(c.Context(), connect.NewRequest(req))
				if err != nil {
					return err
				}
				all.Jobs = append(all.Jobs, res.Msg.Jobs...)
				all.NextPageToken = res.Msg.NextPageToken
				if !allPages || res.Msg.NextPageToken == "" {
					break
				}
				req.PageToken = res.Msg.NextPageToken
			}
			f.print(os.Stdout, all, func(w io.Writer) { table(w, all) })
			return nil
		},
	}
	c.Flags().StringSliceVar(&states, "state", nil, "only jobs in these states (queued, running, succeeded, failed, canceled, expired, dead_lettered)")
	c.Flags().Int32Var(&limit, "limit", 20, "jobs per page (at most 1000)")
	c.Flags().StringVar(&page, "page", "", "page token printed by a previous list")
	c.Flags().BoolVar(&allPages, "all", false, "fetch every page")
	c.Flags().BoolVar(&consistent, "consistent", false, consistentHelp)
	return c
}

func usageCmd(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "usage",
		Short: "Show your rate limits and quotas: used, limit, remaining, reset",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			res, err := f.jobs().GetUsage(c.Context(), connect.NewRequest(&sluicev1.GetUsageRequest{}))
			if err != nil {
				return err
			}
			f.print(os.Stdout, res.Msg, func(w io.Writer) { usageTable(w, res.Msg, time.Now()) })
			return nil
		},
	}
}

func adminCmd(f *clientFlags) *cobra.Command {
	c := &cobra.Command{Use: "admin", Short: "Operator commands (need the admin token as --key)"}
	c.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show the node, the raft group, the queue and the executors",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminRun(f, func(a sluicev1connect.AdminServiceClient) (*connect.Response[sluicev1.GetClusterStatusResponse], error) {
				return a.GetClusterStatus(c.Context(), connect.NewRequest(&sluicev1.GetClusterStatusRequest{}))
			}, clusterStatus)
		},
	})
	c.AddCommand(queueCmd(f), redriveCmd(f), joinCmd(f), removeCmd(f), membersCmd(f), transferCmd(f), policyCmd(f), certsCmd())
	return c
}

func joinCmd(f *clientFlags) *cobra.Command {
	var id, raftAddr, httpAddr string
	c := &cobra.Command{
		Use:   "join --id ID --raft HOST:PORT --http HOST:PORT",
		Short: "Add a server to the cluster as a voter (ask any node; it forwards to the leader)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminRun(f, func(a sluicev1connect.AdminServiceClient) (*connect.Response[sluicev1.JoinNodeResponse], error) {
				return a.JoinNode(c.Context(), connect.NewRequest(&sluicev1.JoinNodeRequest{Id: id, RaftAddress: raftAddr, HttpAddress: httpAddr}))
			}, func(w io.Writer, m *sluicev1.JoinNodeResponse) { membersTable(w, m.Members) })
		},
	}
	c.Flags().StringVar(&id, "id", "", "the new server's raft id (its --id)")
	c.Flags().StringVar(&raftAddr, "raft", "", "the new server's raft address (its --raft)")
	c.Flags().StringVar(&httpAddr, "http", "", "the new server's API address (its --http)")
	return c
}

func removeCmd(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID",
		Short: "Take a server out of the cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return adminRun(f, func(a sluicev1connect.AdminServiceClient) (*connect.Response[sluicev1.RemoveNodeResponse], error) {
				return a.RemoveNode(c.Context(), connect.NewRequest(&sluicev1.RemoveNodeRequest{Id: args[0]}))
			}, func(w io.Writer, m *sluicev1.RemoveNodeResponse) { membersTable(w, m.Members) })
		},
	}
}

func membersCmd(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the raft servers: id, addresses, role, term, commit and applied index, last contact",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminRun(f, func(a sluicev1connect.AdminServiceClient) (*connect.Response[sluicev1.GetClusterStatusResponse], error) {
				return a.GetClusterStatus(c.Context(), connect.NewRequest(&sluicev1.GetClusterStatusRequest{}))
			}, func(w io.Writer, m *sluicev1.GetClusterStatusResponse) { membersTable(w, m.Members) })
		},
	}
}

func transferCmd(f *clientFlags) *cobra.Command {
	var to string
	c := &cobra.Command{
		Use:   "transfer-leadership",
		Short: "Hand leadership to another server (the most up to date one unless --to)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminRun(f, func(a sluicev1connect.AdminServiceClient) (*connect.Response[sluicev1.TransferLeadershipResponse], error) {
				return a.TransferLeadership(c.Context(), connect.NewRequest(&sluicev1.TransferLeadershipRequest{Id: to}))
			}, func(w io.Writer, m *sluicev1.TransferLeadershipResponse) {
				fmt.Fprintf(w, "leader is now %s\n", m.LeaderId)
			})
		},
	}
	c.Flags().StringVar(&to, "to", "", "id of the server to hand over to")
	return c
}

func policyCmd(f *clientFlags) *cobra.Command {
	var force, dryRun bool
	c := &cobra.Command{
		Use:   "policy FILE",
		Short: "Replace the cluster's policy with a YAML or JSON file (through the log)",
		Long: `Replace the cluster's policy with a YAML or JSON file (through the log).

The leader refuses a policy that would lock the cluster out: one without
admin_token_sha256, or one that removes a tenant that still has queued or
running jobs. --force applies it anyway. --dry-run prints what would change
(tiers, tenants and their API keys, models, rules, settings) and whether the
leader would refuse it, without applying it.`,
		Example: `  sluice admin policy --dry-run policy.yaml
  sluice admin policy policy.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := policy.Load(args[0])
			if err != nil {
				return err
			}
			if err := f.check(); err != nil {
				return err
			}
			a := f.adminClient()
			if dryRun {
				return policyDryRun(c.Context(), f, a, p, force)
			}
			res, err := a.SetPolicy(c.Context(), connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: p, Force: force}))
			if err != nil {
				return err
			}
			f.print(os.Stdout, res.Msg, func(w io.Writer) {
				fmt.Fprintf(w, "policy set: %d tiers, %d tenants, %d models, %d rules\n", len(p.Tiers), len(p.Tenants), len(p.Models), len(p.Rules))
			})
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "apply a policy the leader would refuse as a lockout (no admin token, or removing tenants that have queued or running jobs)")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change and whether the leader would refuse it; change nothing")
	return c
}

// policyDryRun prints the diff from the policy in force to p, then what the
// leader says of p (it checks, applies nothing).
func policyDryRun(ctx context.Context, f *clientFlags, a sluicev1connect.AdminServiceClient, p *sluicev1.Policy, force bool) error {
	cur, err := a.GetPolicy(ctx, connect.NewRequest(&sluicev1.GetPolicyRequest{}))
	if err != nil {
		return err
	}
	diff := policyDiff(cur.Msg.Policy, p)
	_, checkErr := a.SetPolicy(ctx, connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: p, Force: force, DryRun: true}))
	if f.output == "json" {
		verdict := "would apply"
		if checkErr != nil {
			verdict = "would be refused: " + checkErr.Error()
		}
		b, _ := json.MarshalIndent(map[string]any{"changes": diff, "verdict": verdict}, "", "  ")
		fmt.Println(string(b))
		return nil
	}
	if len(diff) == 0 {
		fmt.Println("no changes")
	}
	for _, l := range diff {
		fmt.Println(l)
	}
	if checkErr != nil {
		fmt.Printf("dry run: the leader would refuse it: %v\n", checkErr)
		return nil
	}
	fmt.Println("dry run: nothing applied")
	return nil
}

func queueCmd(f *clientFlags) *cobra.Command {
	var (
		limit      int32
		page       string
		consistent bool
	)
	c := &cobra.Command{
		Use:   "queue",
		Short: "List queued jobs of every tenant in dispatch order, with place in line and ETA",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminRun(f, func(a sluicev1connect.AdminServiceClient) (*connect.Response[sluicev1.ListQueueResponse], error) {
				return a.ListQueue(c.Context(), connect.NewRequest(&sluicev1.ListQueueRequest{PageSize: limit, PageToken: page, Consistent: consistent}))
			}, queueTable)
		},
	}
	c.Flags().Int32Var(&limit, "limit", 20, "jobs per page (at most 1000)")
	c.Flags().StringVar(&page, "page", "", "page token printed by a previous queue listing")
	c.Flags().BoolVar(&consistent, "consistent", false, consistentHelp)
	return c
}

func redriveCmd(f *clientFlags) *cobra.Command {
	var tenant, model string
	c := &cobra.Command{
		Use:   "redrive [JOB_ID...]",
		Short: "Put dead-lettered jobs back in the queue (by --tenant, --model and/or ids)",
		RunE: func(c *cobra.Command, ids []string) error {
			return adminRun(f, func(a sluicev1connect.AdminServiceClient) (*connect.Response[sluicev1.RedriveDeadLettersResponse], error) {
				return a.RedriveDeadLetters(c.Context(), connect.NewRequest(&sluicev1.RedriveDeadLettersRequest{Tenant: tenant, Model: model, JobIds: ids}))
			}, func(w io.Writer, m *sluicev1.RedriveDeadLettersResponse) {
				if len(m.JobIds) == 0 {
					fmt.Fprintf(w, "redriven: 0 jobs (no dead-lettered jobs%s)\n", redriveFilter(tenant, model))
					return
				}
				fmt.Fprintf(w, "redriven: %d jobs %s\n", len(m.JobIds), strings.Join(m.JobIds, " "))
			})
		},
	}
	c.Flags().StringVar(&tenant, "tenant", "", "only this tenant's dead letters")
	c.Flags().StringVar(&model, "model", "", "only dead letters of this model")
	return c
}

// redriveFilter says which dead letters a redrive looked at.
func redriveFilter(tenant, model string) string {
	s := ""
	if tenant != "" {
		s += fmt.Sprintf(" for tenant %s", tenant)
	}
	if model != "" {
		s += fmt.Sprintf(" of model %s", model)
	}
	return s
}

// adminRun is the body of an admin command: check the flags, make the call,
// print its answer (as text, or JSON with -o json).
func adminRun[Res any, M interface {
	*Res
	proto.Message
}](f *clientFlags, call func(sluicev1connect.AdminServiceClient) (*connect.Response[Res], error), text func(io.Writer, M)) error {
	if err := f.check(); err != nil {
		return err
	}
	res, err := call(f.adminClient())
	if err != nil {
		return err
	}
	msg := M(res.Msg)
	f.print(os.Stdout, msg, func(w io.Writer) { text(w, msg) })
	return nil
}
