// Command sluice is Sluice's one binary: the server (`sluice dev`, `sluice
// server`) and the client (`sluice submit|get|watch|cancel|list`).
package main

import (
	"errors"
	"fmt"
	"os"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "sluice",
		Short:         "Sluice: admission control, rate limiting and fair queueing for GPU jobs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&logFlags.level, "log-level", "info", "least severe log message written: debug, info, warn or error")
	root.PersistentFlags().StringVar(&logFlags.format, "log-format", "text", "log lines as text (key=value) or json (one object a line)")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		_, err := newLogger() // a bad value fails every command before it starts
		return err
	}
	root.AddCommand(devCmd(), serverCmd(), executorCmd(), hashKeyCmd(), solveCmd())
	root.AddCommand(clientCmds()...)
	root.AddCommand(simCmd())
	if err := root.Execute(); err != nil {
		var ce *connect.Error
		if errors.As(err, &ce) {
			fmt.Fprintf(os.Stderr, "sluice: %s: %s\n", ce.Code(), ce.Message())
		} else {
			fmt.Fprintf(os.Stderr, "sluice: %v\n", err)
		}
		os.Exit(1)
	}
}
