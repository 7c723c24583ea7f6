package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/node"
	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// TestAdminCertsOutputLoads: every pair `sluice admin certs` writes loads
// with tls.LoadX509KeyPair and verifies against its ca.pem for its use; a
// second run reuses the CA and does not overwrite a certificate.
func TestAdminCertsOutputLoads(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := makeCerts(&out, certsFlags{dir: dir, nodes: "n1,n2", executors: "e1", hosts: "127.0.0.1,localhost", validFor: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	t.Logf("output:\n%s", out.String())
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	check := func(name string, usage x509.ExtKeyUsage, dns string) *x509.Certificate {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: dns, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("%s does not verify against ca.pem for %v: %v", name, usage, err)
		}
		if leaf.Subject.CommonName != name {
			t.Fatalf("%s: CN %q", name, leaf.Subject.CommonName)
		}
		return leaf
	}
	for _, n := range []string{"n1", "n2"} {
		leaf := check(n, x509.ExtKeyUsageServerAuth, "localhost")
		check(n, x509.ExtKeyUsageClientAuth, "")
		if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal([]byte{127, 0, 0, 1}) {
			t.Fatalf("%s: IP SANs %v", n, leaf.IPAddresses)
		}
	}
	e1 := check("e1", x509.ExtKeyUsageClientAuth, "")
	if slices.Contains(e1.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Fatal("an executor certificate allows server auth: it would pass as a peer")
	}
	if fi, _ := os.Stat(filepath.Join(dir, "ca-key.pem")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca-key.pem mode %v", fi.Mode().Perm())
	}
	out.Reset()
	if err := makeCerts(&out, certsFlags{dir: dir, executors: "e2", hosts: "127.0.0.1", validFor: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "using the CA in") {
		t.Fatalf("second run: %s", out.String())
	}
	check("e2", x509.ExtKeyUsageClientAuth, "")
	if err := makeCerts(&out, certsFlags{dir: dir, nodes: "n1", hosts: "127.0.0.1", validFor: 24 * time.Hour}); err == nil || !strings.Contains(err.Error(), "n1.pem: exists") {
		t.Fatalf("re-issuing n1: %v", err)
	}
	for _, tc := range []struct {
		f    certsFlags
		want string
	}{
		{certsFlags{nodes: "n1", validFor: time.Hour}, "--dir: required"},
		{certsFlags{dir: dir, validFor: time.Hour}, "--nodes / --executors"},
		{certsFlags{dir: t.TempDir(), nodes: "n1", hosts: "", validFor: time.Hour}, "--hosts"},
	} {
		if err := makeCerts(&out, tc.f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%+v: %v, want %q", tc.f, err, tc.want)
		}
	}
}

// TestTLSFlagErrorsNameTheFlag: the server and the executor refuse a
// half-given pair, an unreadable file and a key that is not the
// certificate's, naming the flag.
func TestTLSFlagErrorsNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	if err := makeCerts(&bytes.Buffer{}, certsFlags{dir: dir, nodes: "n1,n2", executors: "e1", hosts: "127.0.0.1", validFor: time.Hour}); err != nil {
		t.Fatal(err)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, tc := range []struct {
		tls  node.TLSFiles
		want string
	}{
		{node.TLSFiles{CertFile: p("n1.pem")}, "--tls-key: empty, but --tls-cert is"},
		{node.TLSFiles{CertFile: p("nope.pem"), KeyFile: p("n1-key.pem")}, "--tls-cert: open " + p("nope.pem") + ": no such file"},
		{node.TLSFiles{CertFile: p("n1.pem"), KeyFile: p("n2-key.pem")}, "--tls-key " + p("n2-key.pem") + " does not go with --tls-cert " + p("n1.pem")},
		{node.TLSFiles{CertFile: p("n1.pem"), KeyFile: p("n1-key.pem"), PeerCAFile: p("nope.pem")}, "--peer-ca: open"},
	} {
		f := serveFlags{id: "n1", data: t.TempDir(), http: "127.0.0.1:0", raft: "127.0.0.1:0", tls: tc.tls}
		err := serve(context.Background(), f, false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("server %+v: %v, want %q", tc.tls, err, tc.want)
		}
	}
	for _, tc := range []struct {
		f    executorFlags
		want string
	}{
		{executorFlags{tlsKey: p("e1-key.pem")}, "--tls-cert: empty, but --tls-key is"},
		{executorFlags{tlsCA: p("nope.pem")}, "--tls-ca: open"},
		{executorFlags{tlsCert: p("e1.pem"), tlsKey: p("n1-key.pem")}, "--tls-key " + p("n1-key.pem") + " does not go with"},
		{executorFlags{tlsCert: p("e1.pem"), tlsKey: p("e1-key.pem")}, `issued to "e1", but --name is "e2"`},
	} {
		tc.f.name, tc.f.slots, tc.f.gpus, tc.f.gpuMemoryMB, tc.f.runner = "e2", 1, 1, 1024, "synthetic"
		err := runExecutor(context.Background(), tc.f)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("executor %+v: %v, want %q", tc.f, err, tc.want)
		}
	}
}

// TestTLSServerAndCertificateExecutorProcesses: a `sluice server` with the
// certificates `sluice admin certs` made serves only TLS, and a `sluice
// executor` process that authenticates with its certificate (no token)
// finds it over the encrypted gossip pool and runs a job; after the
// certificate files are reissued (and a SIGHUP) new connections see the new
// certificate.
func TestTLSServerAndCertificateExecutorProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("runs server and executor processes")
	}
	bin := buildSluice(t)
	dir := t.TempDir()
	if err := makeCerts(&bytes.Buffer{}, certsFlags{dir: dir, nodes: "n1", executors: "e1", hosts: "127.0.0.1", validFor: time.Hour}); err != nil {
		t.Fatal(err)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	os.WriteFile(p("gossip.keys"), []byte("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"), 0o600)
	polFile := p("policy.yaml")
	os.WriteFile(polFile, []byte(fmt.Sprintf(failoverPolicy, policy.HashKey("bob-key"), policy.HashKey("admin"), policy.HashKey("exec"))), 0o644)
	s := &server{id: "n1", data: p("n1-data"), args: []string{"--bootstrap", "--policy", polFile,
		"--tls-cert", p("n1.pem"), "--tls-key", p("n1-key.pem"), "--peer-ca", p("ca.pem"), "--executor-ca", p("ca.pem"),
		"--gossip", "127.0.0.1:0", "--gossip-key-file", p("gossip.keys")}}
	s.start(t, bin)
	gossip := s.p.waitFor(t, `gossip pool at (\S+) `)
	x := &server{args: []string{"executor", "--name", "e1", "--join", gossip, "--gossip-key-file", p("gossip.keys"),
		"--tls-ca", p("ca.pem"), "--tls-cert", p("e1.pem"), "--tls-key", p("e1-key.pem"), "--gpus", "1"}}
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(p("ca.pem"))
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	url := "https://" + s.http
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := client.Get(url + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	x.startRaw(t, bin) // the pool it joins is up once the server is ready
	// A TLS port answers plaintext HTTP with a 400, never a served page.
	if res, err := http.Get("http://" + s.http + "/readyz"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("plaintext /readyz answered 200 on the TLS port")
		}
	}
	jobs := sluicev1connect.NewJobServiceClient(client, url, connect.WithInterceptors(bearerAuth("bob-key")))
	res, err := jobs.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b"}}))
	if err != nil {
		t.Fatal(err)
	}
	for {
		j, err := jobs.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: res.Msg.Job.Id}))
		if err != nil {
			t.Fatal(err)
		}
		if j.Msg.Job.State == sluicev1.JobState_JOB_STATE_SUCCEEDED {
			if j.Msg.Job.Executor != "e1" {
				t.Fatalf("ran on %q", j.Msg.Job.Executor)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %v", j.Msg.Job.Id, j.Msg.Job.State)
		}
		time.Sleep(50 * time.Millisecond)
	}

	serial := func() string {
		c, err := tls.Dial("tcp", s.http, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
	}
	before := serial()
	// Reissue n1 from the same CA and signal; the old files go first.
	os.Remove(p("n1.pem"))
	os.Remove(p("n1-key.pem"))
	if err := makeCerts(&bytes.Buffer{}, certsFlags{dir: dir, nodes: "n1", hosts: "127.0.0.1", validFor: time.Hour}); err != nil {
		t.Fatal(err)
	}
	s.signal(t, syscall.SIGHUP)
	waitUntil := time.Now().Add(10 * time.Second)
	for serial() == before {
		if time.Now().After(waitUntil) {
			t.Fatal("the new certificate is not served after SIGHUP")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
