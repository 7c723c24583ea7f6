package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/fsm"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// summary is a one-line description of a job's state.
func summary(j *sluicev1.Job) string {
	s := fsm.StateName(j.State)
	switch j.State {
	case sluicev1.JobState_JOB_STATE_QUEUED:
		s += fmt.Sprintf("  position %d  eta %s%s", j.QueuePosition, eta(j), predicted(j))
		if j.WaitingReason != "" {
			s += "  waiting: " + j.WaitingReason
		}
		if j.Attempt > 0 {
			s += fmt.Sprintf("  (retry after attempt %d: %s)", j.Attempt, j.Error.GetMessage())
		}
	case sluicev1.JobState_JOB_STATE_RUNNING:
		s += fmt.Sprintf("  attempt %d on %s  eta %s%s", j.Attempt, j.Executor, eta(j), predicted(j))
		if j.Progress > 0 || j.ProgressText != "" {
			s += fmt.Sprintf("  %3.0f%% %s", 100*j.Progress, j.ProgressText)
		}
	case sluicev1.JobState_JOB_STATE_SUCCEEDED:
		s += fmt.Sprintf("  attempt %d on %s  in %s", j.Attempt, j.Executor, span(j.CreatedAt, j.FinishedAt))
	default:
		if j.Error != nil {
			s += fmt.Sprintf("  %s: %s", j.Error.Code, j.Error.Message)
		}
	}
	return s
}

func eta(j *sluicev1.Job) string {
	if j.WaitingReason != "" {
		return "blocked*" // no connected executor can run it: see the footnote
	}
	if j.EtaUnknown || j.EtaSeconds <= 0 && j.State == sluicev1.JobState_JOB_STATE_QUEUED && j.QueuePosition == 0 {
		return "?"
	}
	s := (time.Duration(j.EtaSeconds) * time.Second).String()
	if j.EtaP90Seconds > j.EtaP10Seconds {
		s += fmt.Sprintf(" (%d–%ds)", j.EtaP10Seconds, j.EtaP90Seconds)
	}
	return s
}

// predicted is the run time the leader predicts, with its band and its
// basis: "  runs 3s (2.1s–3.9s, by its size)"; without the band where its
// ends round the same ("  runs 2s (the model's average)").
func predicted(j *sluicev1.Job) string {
	p := j.GetPrediction()
	if p == nil {
		return ""
	}
	r := func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
	basis := "the model's average"
	if p.Sized {
		basis = "by its size"
	}
	run, p10, p90 := r(p.Run.AsDuration()), r(p.P10.AsDuration()), r(p.P90.AsDuration())
	if p10 == p90 { // runs that have not varied (yet): no band to show
		return fmt.Sprintf("  runs %s (%s)", run, basis)
	}
	return fmt.Sprintf("  runs %s (%s–%s, %s)", run, p10, p90, basis)
}

func span(a, b *timestamppb.Timestamp) string {
	if a == nil || b == nil {
		return "-"
	}
	return b.AsTime().Sub(a.AsTime()).Round(time.Millisecond).String()
}

// compactJSON is s on one line with no spaces, the same from build to build
// (protojson varies its spacing on purpose, so this goes through
// encoding/json).
func compactJSON(s *structpb.Struct) string {
	if s == nil {
		return "{}"
	}
	b, err := json.Marshal(s.AsMap())
	if err != nil { // a number JSON cannot write (NaN, ±Inf)
		b, _ = protojson.Marshal(s)
	}
	return string(b)
}

func clock(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().Local().Format("15:04:05.000")
}

// describe prints one job in full.
func describe(w io.Writer, j *sluicev1.Job) {
	fmt.Fprintf(w, "job %s  %s\n", j.Id, summary(j))
	fmt.Fprintf(w, "  model     %s  priority %d  gpus %d\n", j.Spec.GetModel(), j.Spec.GetPriority(), j.Spec.GetGpus())
	fmt.Fprintf(w, "  input     %s\n", compactJSON(j.Spec.GetInput()))
	fmt.Fprintf(w, "  created   %s\n", clock(j.CreatedAt))
	for _, t := range j.Transitions {
		line := fmt.Sprintf("  %-9s %s", strings.ToLower(fsm.StateName(t.State)), clock(t.At))
		if t.Attempt > 0 {
			line += fmt.Sprintf("  attempt %d", t.Attempt)
		}
		if t.Executor != "" {
			line += "  on " + t.Executor
		}
		if t.Reason != "" {
			line += "  (" + t.Reason + ")"
		}
		fmt.Fprintln(w, line)
	}
	if j.Output != nil {
		fmt.Fprintf(w, "  output    %s\n", compactJSON(j.Output))
	}
	if j.Error != nil {
		fmt.Fprintf(w, "  error     %s: %s\n", j.Error.Code, j.Error.Message)
	}
	for _, d := range j.Webhooks {
		fmt.Fprintf(w, "  webhook   %s %s: %s after %d attempts\n", d.Id, d.Event, d.State, d.Attempts)
	}
}

// table prints jobs one per line.
func table(w io.Writer, res *sluicev1.ListJobsResponse) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tMODEL\tPOS\tETA\tATTEMPT\tEXECUTOR\tCREATED")
	for _, j := range res.Jobs {
		pos, e := "-", "-"
		if j.State == sluicev1.JobState_JOB_STATE_QUEUED {
			pos = fmt.Sprint(j.QueuePosition)
		}
		if !fsm.IsTerminal(j.State) {
			e = eta(j)
		}
		exec := j.Executor
		if exec == "" {
			exec = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", j.Id, fsm.StateName(j.State), j.Spec.GetModel(), pos, e, j.Attempt, exec, clock(j.CreatedAt))
	}
	tw.Flush()
	blocked(w, res.Jobs)
	unknownETAs(w, res.Jobs, "; sluice list --consistent asks the leader")
	if res.NextPageToken != "" {
		fmt.Fprintf(w, "more: sluice list --page %s\n", res.NextPageToken)
	}
}

// queueTable prints the queue in dispatch order, every tenant's jobs.
func queueTable(w io.Writer, res *sluicev1.ListQueueResponse) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POS\tID\tTENANT\tMODEL\tPRIO\tGPUS\tETA\tREADY")
	for _, j := range res.Jobs {
		ready := "now"
		if j.ReadyAt != nil && j.ReadyAt.AsTime().After(time.Now()) {
			ready = clock(j.ReadyAt)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", j.QueuePosition, j.Id, j.Tenant, j.Spec.GetModel(),
			j.Spec.GetPriority(), j.Spec.GetGpus(), eta(j), ready)
	}
	tw.Flush()
	blocked(w, res.Jobs)
	unknownETAs(w, res.Jobs, "; sluice admin queue --consistent asks the leader")
	fmt.Fprintf(w, "%d queued in all\n", res.Total)
	if res.NextPageToken != "" {
		fmt.Fprintf(w, "more: sluice admin queue --page %s\n", res.NextPageToken)
	}
}

// membersTable prints the raft servers.
func membersTable(w io.Writer, ms []*sluicev1.Member) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tRAFT\tHTTP\tTERM\tCOMMIT\tAPPLIED\tLAST CONTACT")
	for _, m := range ms {
		term, commit, applied, contact := "-", "-", "-", "-"
		if m.Term > 0 {
			term, commit, applied = fmt.Sprint(m.Term), fmt.Sprint(m.CommitIndex), fmt.Sprint(m.AppliedIndex)
		}
		if m.LastContact != nil {
			contact = m.LastContact.AsDuration().Round(time.Millisecond).String()
		}
		if m.Unreachable {
			contact = "unreachable"
			if m.LastContact != nil {
				contact = m.LastContact.AsDuration().Round(time.Second).String() + " (unreachable)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Id, m.Role, m.RaftAddress, m.HttpAddress, term, commit, applied, contact)
	}
	tw.Flush()
}

func clusterStatus(w io.Writer, s *sluicev1.GetClusterStatusResponse) {
	fmt.Fprintf(w, "node %s  %s  leader %s  term %d  commit %d  applied %d\n", s.NodeId, s.Role, s.LeaderId, s.Term, s.CommitIndex, s.AppliedIndex)
	fmt.Fprintf(w, "jobs: %d queued, %d running, %d finished\n", s.QueuedJobs, s.RunningJobs, s.FinishedJobs)
	membersTable(w, s.Members)
	for _, e := range s.Executors {
		fmt.Fprintf(w, "executor %s  %d/%d slots busy\n", e.Name, e.BusySlots, e.Slots)
	}
	fmt.Fprintf(w, "state hash %s\n", s.StateHash)
}

// usageTable prints one line per rule: "free-daily  3/20  (resets in 7h12m)".
func usageTable(w io.Writer, u *sluicev1.GetUsageResponse, now time.Time) {
	fmt.Fprintf(w, "tenant %s (tier %s)\n", u.Tenant, u.Tier)
	if len(u.Rules) == 0 {
		fmt.Fprintln(w, "no rate limits apply")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range u.Rules {
		reset := ""
		if r.ResetsAt != nil && r.Used > 0 {
			reset = fmt.Sprintf("(resets in %s)", humanWait(r.ResetsAt.AsTime().Sub(now)))
		}
		shadow := ""
		if r.Shadow {
			shadow = "  [shadow]"
		}
		fmt.Fprintf(tw, "%s\t%d/%d %s\t%s\t%s%s\n", r.Rule, r.Used, r.Limit, r.Unit, reset, r.Description, shadow)
	}
	tw.Flush()
	for _, r := range u.Rules {
		if c := r.Challenges; c != nil {
			fmt.Fprintf(w, "challenges of rule %s: %d issued, %d passed, %d failed, %d replayed; requests a pass let through: %d\n",
				r.Rule, c.Issued, c.Passed, c.Failed, c.Replayed, c.PassUsed)
		}
	}
}

// humanWait rounds a wait the way people say it: 4s, 12m, 7h12m.
func humanWait(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Minute:
		return ((d + time.Second - 1) / time.Second * time.Second).String()
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Round(time.Minute)/time.Minute))
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// unknownETAs says, under a table, why an ETA is "?": the server that
// answered could not tell (a follower's plain read), then what to do, hint.
func unknownETAs(w io.Writer, jobs []*sluicev1.Job, hint string) {
	for _, j := range jobs {
		if j.EtaUnknown && j.WaitingReason == "" && j.State == sluicev1.JobState_JOB_STATE_QUEUED {
			fmt.Fprintf(w, "? this server cannot tell a queued job's ETA: a follower answers from its replica, and the executors are the leader's%s\n", hint)
			return
		}
	}
}

// blocked prints, under a table, why its blocked jobs wait: a line per
// reason, in the order first seen ("no executor is connected" holds every
// queued job alike).
func blocked(w io.Writer, jobs []*sluicev1.Job) {
	var reasons []string
	ids := map[string][]string{}
	for _, j := range jobs {
		if j.WaitingReason != "" && j.State == sluicev1.JobState_JOB_STATE_QUEUED {
			if _, ok := ids[j.WaitingReason]; !ok {
				reasons = append(reasons, j.WaitingReason)
			}
			ids[j.WaitingReason] = append(ids[j.WaitingReason], j.Id)
		}
	}
	for _, r := range reasons {
		if js := ids[r]; len(js) == 1 {
			fmt.Fprintf(w, "* job %s is waiting: %s\n", js[0], r)
		} else {
			fmt.Fprintf(w, "* jobs %s are waiting: %s\n", strings.Join(js, ", "), r)
		}
	}
}
