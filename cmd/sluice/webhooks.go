package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func webhooksCmd(f *clientFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "webhooks",
		Short: "A job's webhook deliveries, and secrets to sign them with",
	}
	list := &cobra.Command{
		Use:   "list ID",
		Short: "Show a job's webhook deliveries: event, state, attempts, the last answer",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			res, err := f.jobs().GetJob(c.Context(), connect.NewRequest(&sluicev1.GetJobRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			f.print(os.Stdout, &sluicev1.Job{Id: res.Msg.Job.Id, Webhooks: res.Msg.Job.Webhooks}, func(w io.Writer) { describeDeliveries(w, res.Msg.Job) })
			return nil
		},
	}
	secret := &cobra.Command{
		Use:   "new-secret",
		Short: "Print a new webhook secret (whsec_…) for a tenant's webhook_secrets in the policy",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			key := make([]byte, 32)
			if _, err := rand.Read(key); err != nil {
				return err
			}
			fmt.Println("whsec_" + base64.StdEncoding.EncodeToString(key))
			return nil
		},
	}
	c.AddCommand(list, secret)
	return c
}

func describeDeliveries(w io.Writer, j *sluicev1.Job) {
	if len(j.Webhooks) == 0 {
		fmt.Fprintf(w, "job %s has no webhook deliveries\n", j.Id)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tEVENT\tSTATE\tATTEMPTS\tLAST\tNEXT\tURL")
	for _, d := range j.Webhooks {
		last := "-"
		switch {
		case d.LastStatus != 0:
			last = fmt.Sprintf("%d", d.LastStatus)
		case d.LastError != "":
			last = d.LastError
		}
		if d.LastStatus != 0 && d.LastError != "" {
			last += " " + d.LastError
		}
		next := "-"
		if d.NextAttemptAt != nil {
			next = clock(d.NextAttemptAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.Id, d.Event, d.State, d.Attempts, last, next, d.Url)
	}
	tw.Flush()
}
