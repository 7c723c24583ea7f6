package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/policy"
)

func hashKeyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hash-key KEY",
		Short: "Print the SHA-256 of an API key or admin token, as a policy file stores it",
		Args:  cobra.ExactArgs(1),
		Run: func(_ *cobra.Command, args []string) {
			fmt.Println(policy.HashKey(args[0]))
		},
	}
}
