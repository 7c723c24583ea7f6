package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/node"
)

type certsFlags struct {
	dir, nodes, executors, hosts string
	validFor                     time.Duration
}

func certsCmd() *cobra.Command {
	var f certsFlags
	c := &cobra.Command{
		Use:   "certs --dir DIR --nodes n1,n2,n3 --executors e1,e2",
		Short: "Make a CA and certificates for a test cluster (no server needed)",
		Long: `Write a new CA (ca.pem, ca-key.pem) to --dir, or reuse the one there, and
issue from it an ECDSA P-256 certificate and key per node (NAME.pem,
NAME-key.pem: server and client auth, SANs from --hosts; use them as --tls-cert
and --tls-key with --peer-ca ca.pem) and per executor (client auth only, Common
Name = the executor's name; use them as the executor's --tls-cert/--tls-key with
the server's --executor-ca ca.pem). Existing certificate files are not
overwritten. For a test cluster: a production CA keeps its key off the servers.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return makeCerts(c.OutOrStdout(), f) },
	}
	c.Flags().StringVar(&f.dir, "dir", "", "directory for the CA and the certificates (created if missing)")
	c.Flags().StringVar(&f.nodes, "nodes", "", "comma-separated server ids to issue node certificates for")
	c.Flags().StringVar(&f.executors, "executors", "", "comma-separated executor names to issue client certificates for")
	c.Flags().StringVar(&f.hosts, "hosts", "127.0.0.1,localhost", "comma-separated IP addresses and DNS names the node certificates are valid for (every address clients and peers dial)")
	c.Flags().DurationVar(&f.validFor, "valid-for", 365*24*time.Hour, "how long the certificates (and a new CA) are valid")
	return c
}

func makeCerts(out io.Writer, f certsFlags) error {
	if f.dir == "" {
		return errors.New("--dir: required")
	}
	nodes, execs, hosts := splitList(f.nodes), splitList(f.executors), splitList(f.hosts)
	if len(nodes)+len(execs) == 0 {
		return errors.New("--nodes / --executors: name at least one node or executor")
	}
	if len(nodes) > 0 && len(hosts) == 0 {
		return errors.New("--hosts: node certificates need at least one address")
	}
	if f.validFor < time.Hour {
		return fmt.Errorf("--valid-for: %v is under an hour", f.validFor)
	}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	caFile, caKeyFile := filepath.Join(f.dir, "ca.pem"), filepath.Join(f.dir, "ca-key.pem")
	var ca *node.CA
	certPEM, errC := os.ReadFile(caFile)
	keyPEM, errK := os.ReadFile(caKeyFile)
	switch {
	case errC == nil && errK == nil:
		var err error
		if ca, err = node.LoadCA(certPEM, keyPEM); err != nil {
			return fmt.Errorf("--dir %s: %w", f.dir, err)
		}
		fmt.Fprintf(out, "using the CA in %s\n", caFile)
	case errors.Is(errC, os.ErrNotExist) && errors.Is(errK, os.ErrNotExist):
		var err error
		if ca, err = node.NewCA("Sluice CA", f.validFor); err != nil {
			return err
		}
		if err := writeNew(caFile, ca.CertPEM, 0o644); err != nil {
			return err
		}
		if err := writeNew(caKeyFile, ca.KeyPEM, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s and %s (keep the key private)\n", caFile, caKeyFile)
	default:
		return fmt.Errorf("--dir %s: has only one of ca.pem and ca-key.pem", f.dir)
	}
	issue := func(name string, use node.CertUse, hosts []string, what string) error {
		certFile, keyFile := filepath.Join(f.dir, name+".pem"), filepath.Join(f.dir, name+"-key.pem")
		if _, err := os.Stat(certFile); err == nil {
			return fmt.Errorf("%s: exists; remove it to issue a new one", certFile)
		}
		c, k, err := ca.Issue(name, use, hosts, f.validFor)
		if err != nil {
			return err
		}
		if err := writeNew(keyFile, k, 0o600); err != nil {
			return err
		}
		if err := writeNew(certFile, c, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s and %s (%s)\n", certFile, keyFile, what)
		return nil
	}
	for _, n := range nodes {
		if err := issue(n, node.NodeCert, hosts, "node "+n+": server and client auth for "+f.hosts); err != nil {
			return err
		}
	}
	for _, e := range execs {
		if err := issue(e, node.ExecutorCert, nil, "executor "+e+": client auth, CN "+e); err != nil {
			return err
		}
	}
	return nil
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, data []byte, mode os.FileMode) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := fh.Write(data); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}
