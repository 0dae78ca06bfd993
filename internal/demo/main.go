// Command demo shows securereg end to end on this machine (make demo): a
// secured Consul 1.16.1, a go-micro greeter server and client configured
// only by CONSUL_* variables, a preflight check, and the attacks securereg
// refuses where the stock plugin gives in. It stops everything it started,
// on success, on error and on Ctrl-C.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-micro/plugins/v4/registry/consul"
	"github.com/hashicorp/consul/api"
	"github.com/securereg/securereg"
	"github.com/securereg/securereg/internal/agent"
	"github.com/securereg/securereg/internal/pki"
	"go-micro.dev/v4/registry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

// step prints a numbered heading.
var stepN int

func step(format string, args ...any) {
	stepN++
	fmt.Printf("\n── %d. %s\n", stepN, fmt.Sprintf(format, args...))
}

func ok(format string, args ...any)   { fmt.Printf("   ✔ %s\n", fmt.Sprintf(format, args...)) }
func bad(format string, args ...any)  { fmt.Printf("   ✘ %s\n", fmt.Sprintf(format, args...)) }
func info(format string, args ...any) { fmt.Printf("     %s\n", fmt.Sprintf(format, args...)) }

func run(ctx context.Context) error {
	fmt.Println("securereg demo: a go-micro greeter on a secured Consul 1.16.1 (everything on 127.0.0.1)")
	dir, err := os.MkdirTemp("", "securereg-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// Build the programs the demo runs, as a user would.
	step("building the greeter server and client (examples/greeter) and the securereg CLI")
	bins := map[string]string{
		"greeter-server": "./examples/greeter/server",
		"greeter-client": "./examples/greeter/client",
		"securereg":      "./cmd/securereg",
	}
	for name, pkg := range bins {
		out := filepath.Join(dir, name)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
		}
		bins[name] = out
	}
	ok("built into %s", dir)

	step("starting Consul 1.16.1: HTTPS only, verify_incoming, ACL default deny")
	consulBin, err := agent.FindBinary(os.Getenv("CONSUL_BIN"))
	if err != nil {
		return fmt.Errorf("%w (run `make consul` first)", err)
	}
	agentDir := filepath.Join(dir, "consul")
	if err := os.Mkdir(agentDir, 0o700); err != nil {
		return err
	}
	ag, err := agent.Prepare(agentDir)
	if err != nil {
		return err
	}
	consulProc, err := agent.NewBinary(ag, consulBin, false)
	if err != nil {
		return err
	}
	if err := consulProc.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := consulProc.Stop(sctx); err != nil {
			fmt.Fprintf(os.Stderr, "stop consul: %v\n", err)
		}
		fmt.Println("\n── stopped Consul and the greeter, removed the temporary files")
	}()
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := ag.WaitReady(rctx); err != nil {
		return fmt.Errorf("consul not ready: %w\n%s", err, consulProc.Logs())
	}
	ok("Consul at https://%s, certificates generated in %s", ag.Addr, agentDir)

	step("minting least-privilege ACL tokens (securereg policy --service greeter)")
	serverTok, err := ag.MintToken("greeter")
	if err != nil {
		return err
	}
	clientTok, err := ag.MintToken("greeter-client")
	if err != nil {
		return err
	}
	serverTokFile, err := ag.WriteTokenFile(serverTok)
	if err != nil {
		return err
	}
	clientTokFile, err := ag.WriteTokenFile(clientTok)
	if err != nil {
		return err
	}
	rules, _ := securereg.ACLPolicy("greeter", nil)
	for _, l := range strings.Split(strings.TrimSpace(rules), "\n") {
		info("%s", l)
	}
	ok("tokens written to files with mode 0600 (never printed)")

	baseEnv := map[string]string{
		"CONSUL_HTTP_ADDR":       ag.Addr,
		"CONSUL_CACERT":          ag.CAFile,
		"CONSUL_CLIENT_CERT":     ag.ClientCertFile,
		"CONSUL_CLIENT_KEY":      ag.ClientKeyFile,
		"CONSUL_TLS_SERVER_NAME": ag.ServerName,
	}
	step("running the greeter server, configured only by CONSUL_* variables")
	for _, k := range []string{"CONSUL_HTTP_ADDR", "CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME"} {
		info("%s=%s", k, baseEnv[k])
	}
	info("CONSUL_HTTP_TOKEN_FILE=%s", serverTokFile)
	server := exec.Command(bins["greeter-server"])
	server.Env = envWith(baseEnv, map[string]string{"CONSUL_HTTP_TOKEN_FILE": serverTokFile})
	var serverOut strings.Builder
	server.Stdout, server.Stderr = &serverOut, &serverOut
	agent.SetPdeathsig(server)
	if err := server.Start(); err != nil {
		return err
	}
	defer func() {
		_ = server.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = server.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = server.Process.Kill()
			<-done
		}
	}()
	if err := waitRegistered(ctx, ag, "greeter"); err != nil {
		return fmt.Errorf("greeter did not register: %w\n%s", err, serverOut.String())
	}
	ok("greeter registered in Consul through securereg")

	step("calling it from the greeter client (discovery through securereg)")
	out, err := runClient(ctx, bins["greeter-client"], envWith(baseEnv, map[string]string{"CONSUL_HTTP_TOKEN_FILE": clientTokFile}))
	if err != nil {
		return fmt.Errorf("client call failed: %w\n%s", err, out)
	}
	ok("reply: %s", strings.TrimSpace(out))

	step("securereg check --service greeter (preflight against the live Consul)")
	check := exec.CommandContext(ctx, bins["securereg"], "check", "--service", "greeter")
	check.Env = envWith(baseEnv, map[string]string{"CONSUL_HTTP_TOKEN_FILE": serverTokFile})
	checkOut, err := check.CombinedOutput()
	for _, l := range strings.Split(strings.TrimRight(string(checkOut), "\n"), "\n") {
		info("%s", l)
	}
	if err != nil {
		return fmt.Errorf("securereg check: %w", err)
	}
	ok("every check passed")

	step("a client with the wrong CA is refused")
	wrongCA, err := pki.NewCA(time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour))
	if err != nil {
		return err
	}
	wrongCAFile, err := wrongCA.WriteCA(dir, "wrong-ca.pem")
	if err != nil {
		return err
	}
	out, err = runClient(ctx, bins["greeter-client"],
		envWith(baseEnv, map[string]string{"CONSUL_HTTP_TOKEN_FILE": clientTokFile, "CONSUL_CACERT": wrongCAFile}))
	if err == nil {
		return fmt.Errorf("a client with the wrong CA got through: %s", out)
	}
	ok("refused:")
	info("%s", firstLine(out))

	step("an impostor Consul (self-signed certificate) and registry.Secure(true) without a CA")
	if err := impostor(ctx); err != nil {
		return err
	}

	fmt.Println("\nall done: secure by default, and the attacks were refused.")
	return nil
}

// impostor runs a fake Consul with a self-signed certificate and shows the
// stock plugin handing it the token, and securereg refusing it.
func impostor(ctx context.Context) error {
	var tokens atomic.Int64
	rogue := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Consul-Token") != "" {
			tokens.Add(1)
		}
		w.Header().Set("X-Consul-Index", "1")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("[]"))
	}))
	rogue.Config.ErrorLog = log.New(discard{}, "", 0)
	rogue.StartTLS() // httptest's own self-signed certificate
	defer rogue.Close()
	addr := rogue.Listener.Addr().String()
	const demoToken = "demo-secret-token-never-printed"
	info("impostor listening on https://%s", addr)

	stock := consul.NewRegistry(registry.Addrs(addr), registry.Secure(true), consul.Config(&api.Config{Token: demoToken}))
	if _, err := stock.GetService("greeter"); err == nil && tokens.Load() > 0 {
		bad("stock consul.NewRegistry(registry.Secure(true)): connected to the impostor and sent it the ACL token (%d requests)", tokens.Load())
	} else {
		info("stock plugin: err=%v, tokens sent=%d", err, tokens.Load())
	}

	sent := tokens.Load()
	sr := securereg.NewRegistry(registry.Addrs(addr), registry.Secure(true), securereg.Token(demoToken),
		securereg.Logger(slog.New(slog.DiscardHandler)))
	defer sr.(*securereg.Registry).Close()
	_, err := sr.GetService("greeter")
	if err == nil || tokens.Load() != sent {
		return errors.New("securereg reached the impostor")
	}
	ok("securereg.NewRegistry(registry.Secure(true)): refused, the impostor got no request:")
	info("%s", err)
	return ctx.Err()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// waitRegistered waits until service has a node in the catalog.
func waitRegistered(ctx context.Context, ag *agent.Agent, service string) error {
	c, err := ag.Client(ag.ManagementToken)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		entries, _, err := c.Health().Service(service, "", false, nil)
		if err == nil && len(entries) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("no %s node after 30s", service)
}

func runClient(ctx context.Context, bin string, env []string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, "securereg")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// envWith returns base with overrides applied as an environment, with every
// other CONSUL_* and MICRO_* variable of this process removed so that only
// the demo's apply.
func envWith(base, overrides map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CONSUL_") || strings.HasPrefix(kv, "MICRO_") {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range base {
		if _, over := overrides[k]; !over {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range overrides {
		env = append(env, k+"="+v)
	}
	return env
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "securereg:") {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(strings.SplitN(s, "\n", 2)[0])
}
