// Package consultest starts a real, secured Consul for tests, the way
// net/http/httptest starts an HTTP server: HTTPS only, mTLS
// (verify_incoming), ACLs in default-deny mode, freshly generated
// certificates and random ports. Use it to test a go-micro service that
// registers through securereg against the same security a production Consul
// enforces.
//
//	srv := consultest.Start(t)
//	reg, err := securereg.New(srv.Options()...)
//
// Consul runs either in a Docker container (testcontainers-go, image from
// CONSUL_TEST_IMAGE, default hashicorp/consul:1.16.1) or as a local binary
// (CONSUL_BIN, else consul on PATH, else bin/consul at the module root).
// CONSUL_TEST_BACKEND=container|binary forces one; otherwise the container
// is used when a Docker engine answers and the image is present, else the
// binary. When neither is available the test is skipped with a message
// saying how to get one, unless CONSUL_TEST_REQUIRED=1 (as set in CI), which
// makes it fail instead. Start skips under go test -short.
//
// Everything Start creates is stopped and removed in t.Cleanup.
package consultest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/securereg/securereg"
	"github.com/securereg/securereg/internal/agent"
	"go-micro.dev/v4/registry"
)

// Environment variables read by Start.
const (
	// EnvBackend forces a backend: "container" or "binary".
	EnvBackend = "CONSUL_TEST_BACKEND"
	// EnvImage is the Docker image for the container backend.
	EnvImage = "CONSUL_TEST_IMAGE"
	// EnvBinary is the consul binary for the binary backend.
	EnvBinary = "CONSUL_BIN"
	// EnvRequired set to 1 turns "no Consul available" from a skip into a
	// failure. CI sets it, so a skipped integration suite cannot pass.
	EnvRequired = "CONSUL_TEST_REQUIRED"
)

// DefaultImage is the container image used when CONSUL_TEST_IMAGE is unset.
// Consul 1.16.1 is the last MPL-2.0 release; later ones are BSL-licensed.
const DefaultImage = "hashicorp/consul:1.16.1"

// Backend names.
const (
	BackendContainer = "container"
	BackendBinary    = "binary"
)

// ServerName is the name in the server certificate that Consul's own
// verify_server_hostname expects for datacenter dc1.
const ServerName = agent.ServerName

// Server is a running Consul agent in server mode. Its fields are set by
// Start and must not be changed.
type Server struct {
	// Addr is the HTTPS address, 127.0.0.1:port.
	Addr string
	// PlainAddr is the plain-HTTP address, set only with [WithPlainHTTP].
	PlainAddr string
	// ServerName is the name to verify Consul's certificate against.
	ServerName string
	// CAFile, ClientCertFile and ClientKeyFile are PEM files in a
	// temporary directory. The CA signs both Consul's certificate and the
	// client certificate.
	CAFile, ClientCertFile, ClientKeyFile string
	// ManagementToken is the initial management token (full rights).
	ManagementToken string
	// Backend is BackendContainer or BackendBinary.
	Backend string
	// Dir is the temporary directory holding the certificates and config.
	Dir string

	ag      *agent.Agent
	run     runner
	mu      sync.Mutex // guards stopped
	stopped bool
}

// runner is one way of running the agent.
type runner interface {
	start(ctx context.Context) error
	stop(ctx context.Context) error
	terminate(ctx context.Context) error
	logs() string
}

// Option configures Start.
type Option interface{ apply(*settings) }

type settings struct {
	backend string
	image   string
	binary  string
	plain   bool
	timeout time.Duration
}

type optionFunc func(*settings)

func (f optionFunc) apply(s *settings) { f(s) }

// WithBackend forces a backend ("container" or "binary"), like
// CONSUL_TEST_BACKEND, which it overrides.
func WithBackend(name string) Option { return optionFunc(func(s *settings) { s.backend = name }) }

// WithImage sets the container image, overriding CONSUL_TEST_IMAGE.
func WithImage(image string) Option { return optionFunc(func(s *settings) { s.image = image }) }

// WithBinary sets the consul binary, overriding CONSUL_BIN.
func WithBinary(path string) Option { return optionFunc(func(s *settings) { s.binary = path }) }

// WithPlainHTTP also opens Consul's plain-HTTP port, for benchmarks that
// compare against the stock plugin. Never use it to test security: the
// listener accepts requests without TLS. See [Server.PlainAddr].
func WithPlainHTTP() Option { return optionFunc(func(s *settings) { s.plain = true }) }

// WithStartTimeout bounds how long Start waits for a leader and a working
// ACL system. The default is 60s.
func WithStartTimeout(d time.Duration) Option {
	return optionFunc(func(s *settings) { s.timeout = d })
}

// Start starts a secured Consul and returns when it has a leader and answers
// an ACL token self-read over mTLS. It stops and removes everything in
// t.Cleanup. It skips the test (or fails it, with CONSUL_TEST_REQUIRED=1)
// when no backend is available, and skips under -short.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := settings{
		backend: os.Getenv(EnvBackend),
		image:   os.Getenv(EnvImage),
		binary:  os.Getenv(EnvBinary),
		timeout: 60 * time.Second,
	}
	if s.image == "" {
		s.image = DefaultImage
	}
	for _, o := range opts {
		o.apply(&s)
	}
	if testing.Short() {
		unavailable(t, "consultest: skipped under -short")
	}

	backend, reason := chooseBackend(&s)
	if backend == "" {
		unavailable(t, reason)
	}

	ag, err := agent.Prepare(t.TempDir())
	if err != nil {
		t.Fatalf("consultest: %v", err)
	}
	srv := &Server{ServerName: ag.ServerName, Backend: backend, Dir: ag.Dir, CAFile: ag.CAFile,
		ClientCertFile: ag.ClientCertFile, ClientKeyFile: ag.ClientKeyFile, ManagementToken: ag.ManagementToken, ag: ag}

	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	switch backend {
	case BackendContainer:
		srv.run, err = newContainer(t, ag, &s)
	default:
		srv.run, err = newBinaryRunner(ag, &s)
	}
	if err != nil {
		t.Fatalf("consultest: %s backend: %v", backend, err)
	}
	srv.Addr, srv.PlainAddr = ag.Addr, ag.PlainAddr
	t.Cleanup(func() {
		tctx, tcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer tcancel()
		if err := srv.run.terminate(tctx); err != nil {
			t.Errorf("consultest: stop Consul: %v", err)
		}
	})
	began := time.Now()
	if err := srv.run.start(ctx); err != nil {
		t.Fatalf("consultest: start Consul (%s backend): %v\n%s", backend, err, srv.run.logs())
	}
	if err := ag.WaitReady(ctx); err != nil {
		t.Fatalf("consultest: Consul (%s backend) not ready: %v\n%s", backend, err, srv.run.logs())
	}
	t.Logf("consultest: Consul 1.16.1 ready at https://%s (%s backend) in %s", srv.Addr, backend, time.Since(began).Round(time.Millisecond))
	return srv
}

// unavailable skips, or fails when CONSUL_TEST_REQUIRED=1.
func unavailable(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(EnvRequired) == "1" && !testing.Short() {
		t.Fatalf("%s\n(%s=1: a missing Consul is a failure, not a skip)", reason, EnvRequired)
	}
	t.Skip(reason)
}

// chooseBackend picks the backend, or returns "" and a reason.
func chooseBackend(s *settings) (string, string) {
	switch s.backend {
	case BackendContainer:
		if err := dockerImagePresent(s.image); err != nil {
			return "", fmt.Sprintf("consultest: %s=container but %v; build the image with `make consul-image`", EnvBackend, err)
		}
		return BackendContainer, ""
	case BackendBinary:
		bin, err := agent.FindBinary(s.binary)
		if err != nil {
			return "", fmt.Sprintf("consultest: %s=binary but %v", EnvBackend, err)
		}
		s.binary = bin
		return BackendBinary, ""
	case "":
	default:
		return "", fmt.Sprintf("consultest: %s=%q is not container or binary", EnvBackend, s.backend)
	}
	dockerErr := dockerImagePresent(s.image)
	if dockerErr == nil {
		return BackendContainer, ""
	}
	bin, binErr := agent.FindBinary(s.binary)
	if binErr == nil {
		s.binary = bin
		return BackendBinary, ""
	}
	return "", fmt.Sprintf("consultest: no Consul available: container backend: %v; binary backend: %v. "+
		"Build one with `make consul` (binary) or `make consul-image` (Docker image %s), or set %s",
		dockerErr, binErr, s.image, EnvBinary)
}

// Options returns securereg options for this server: its address, CA,
// client certificate, server name and the management token. Append a
// TokenFile or Token option to use a least-privilege token instead (the last
// token option wins).
func (s *Server) Options() []registry.Option {
	return []registry.Option{
		registry.Addrs(s.Addr),
		securereg.CAFile(s.CAFile),
		securereg.ClientCert(s.ClientCertFile, s.ClientKeyFile),
		securereg.ServerName(s.ServerName),
		securereg.Token(s.ManagementToken),
	}
}

// APIClient returns a consul/api client with the management token over
// mTLS, for setting up test state.
func (s *Server) APIClient(t testing.TB) *api.Client {
	t.Helper()
	c, err := s.ag.Client(s.ManagementToken)
	if err != nil {
		t.Fatalf("consultest: api client: %v", err)
	}
	return c
}

// TokenFor mints a least-privilege token for a go-micro service: write on
// the service itself, read on all nodes and services (to discover others).
// It returns the token's SecretID.
func (s *Server) TokenFor(t testing.TB, service string) string {
	t.Helper()
	tok, err := s.ag.MintToken(service)
	if err != nil {
		t.Fatalf("consultest: %v", err)
	}
	return tok
}

// RevokeToken deletes the token with this SecretID from Consul, as an
// operator revoking a leaked or rotated-out token would. Calls made with it
// then get 403 "ACL not found".
func (s *Server) RevokeToken(t testing.TB, secretID string) {
	t.Helper()
	if err := s.ag.RevokeToken(secretID); err != nil {
		t.Fatalf("consultest: revoke token: %v", err)
	}
}

// Policy returns the least-privilege ACL rules (HCL) for a go-micro service
// registering as service and discovering others: the minimum measured for
// the plugin's calls against Consul 1.16.1. It is [securereg.ACLPolicy]
// with every service discoverable.
func Policy(service string) string {
	p, err := securereg.ACLPolicy(service, nil)
	if err != nil {
		return fmt.Sprintf("# %v\n", err)
	}
	return p
}

// WriteTokenFile writes token to a new 0600 file in the server's directory
// and returns its path.
func (s *Server) WriteTokenFile(t testing.TB, token string) string {
	t.Helper()
	p, err := s.ag.WriteTokenFile(token)
	if err != nil {
		t.Fatalf("consultest: token file: %v", err)
	}
	return p
}

// Stop stops the agent, keeping its data, so that clients see it down. It
// is idempotent.
func (s *Server) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	if err := s.run.stop(ctx); err != nil {
		return fmt.Errorf("consultest: stop: %w", err)
	}
	s.stopped = true
	return nil
}

// Restart stops the agent if it runs, starts it again on the same address
// with the same data and certificates, and waits until it is ready.
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.run.start(ctx); err != nil {
		return fmt.Errorf("consultest: restart: %w\n%s", err, s.run.logs())
	}
	s.stopped = false
	if err := s.ag.WaitReady(ctx); err != nil {
		return fmt.Errorf("consultest: not ready after restart: %w\n%s", err, s.run.logs())
	}
	return nil
}

// binaryRunner adapts agent.Binary to the runner interface.
type binaryRunner struct{ *agent.Binary }

func newBinaryRunner(ag *agent.Agent, s *settings) (runner, error) {
	b, err := agent.NewBinary(ag, s.binary, s.plain)
	if err != nil {
		return nil, err
	}
	return binaryRunner{b}, nil
}

func (b binaryRunner) start(ctx context.Context) error     { return b.Start(ctx) }
func (b binaryRunner) stop(ctx context.Context) error      { return b.Stop(ctx) }
func (b binaryRunner) terminate(ctx context.Context) error { return b.Stop(ctx) }
func (b binaryRunner) logs() string                        { return b.Logs() }
