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
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/securereg/securereg"
	"github.com/securereg/securereg/internal/testca"
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
const ServerName = "server.dc1.consul"

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

	ca      *testca.CA
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

	srv := &Server{ServerName: ServerName, Backend: backend, Dir: t.TempDir()}
	srv.ManagementToken = uuid(t)
	agentToken := srv.ManagementToken
	srv.ca = testca.New(t)
	srv.CAFile = srv.ca.WriteCA(t, srv.Dir, "consul-agent-ca.pem")
	srv.ca.Issue(t, testca.Leaf{
		CommonName: ServerName,
		DNSNames:   []string{ServerName, "localhost"},
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1)},
		Server:     true,
		Client:     true, // Consul servers dial each other with it
	}).Write(t, srv.Dir, "dc1-server-consul-0")
	srv.ClientCertFile, srv.ClientKeyFile = srv.ca.Client(t, "client.dc1.consul").Write(t, srv.Dir, "dc1-client-consul-0")

	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	var err error
	switch backend {
	case BackendContainer:
		srv.run, err = newContainer(t, srv, &s, agentToken)
	default:
		srv.run, err = newBinary(t, srv, &s, agentToken)
	}
	if err != nil {
		t.Fatalf("consultest: %s backend: %v", backend, err)
	}
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
	if err := srv.waitReady(ctx); err != nil {
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
		bin, err := findBinary(s.binary)
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
	bin, binErr := findBinary(s.binary)
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
	c, err := s.apiClient(s.ManagementToken)
	if err != nil {
		t.Fatalf("consultest: api client: %v", err)
	}
	return c
}

func (s *Server) apiClient(token string) (*api.Client, error) {
	tlsCfg, err := securereg.NewTLSConfig(append(s.Options(), securereg.Token(token))...)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 4}
	return api.NewClient(&api.Config{
		Address:    s.Addr,
		Scheme:     "https",
		Token:      token,
		HttpClient: &http.Client{Transport: tr, Timeout: 30 * time.Second},
	})
}

// TokenFor mints a least-privilege token for a go-micro service: write on
// the service itself, read on all nodes and services (to discover others).
// It returns the token's SecretID.
func (s *Server) TokenFor(t testing.TB, service string) string {
	t.Helper()
	rules, err := securereg.ACLPolicy(service, nil)
	if err != nil {
		t.Fatalf("consultest: %v", err)
	}
	c := s.APIClient(t)
	pol, _, err := c.ACL().PolicyCreate(&api.ACLPolicy{
		Name:        "securereg-" + service + "-" + uuid(t)[:8],
		Description: "least privilege for go-micro service " + service,
		Rules:       rules,
	}, nil)
	if err != nil {
		t.Fatalf("consultest: create policy for %q: %v", service, err)
	}
	tok, _, err := c.ACL().TokenCreate(&api.ACLToken{
		Description: "securereg test token for " + service,
		Policies:    []*api.ACLTokenPolicyLink{{ID: pol.ID}},
	}, nil)
	if err != nil {
		t.Fatalf("consultest: create token for %q: %v", service, err)
	}
	return tok.SecretID
}

// RevokeToken deletes the token with this SecretID from Consul, as an
// operator revoking a leaked or rotated-out token would. Calls made with it
// then get 403 "ACL not found".
func (s *Server) RevokeToken(t testing.TB, secretID string) {
	t.Helper()
	c, err := s.apiClient(secretID)
	if err != nil {
		t.Fatalf("consultest: revoke token: %v", err)
	}
	self, _, err := c.ACL().TokenReadSelf(nil)
	if err != nil {
		t.Fatalf("consultest: revoke token: read it: %v", err)
	}
	if _, err := s.APIClient(t).ACL().TokenDelete(self.AccessorID, nil); err != nil {
		t.Fatalf("consultest: revoke token %s: %v", self.AccessorID, err)
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
	f, err := os.CreateTemp(s.Dir, "token-*")
	if err != nil {
		t.Fatalf("consultest: token file: %v", err)
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		t.Fatalf("consultest: token file: %v", err)
	}
	if _, err := f.WriteString(token + "\n"); err != nil {
		t.Fatalf("consultest: token file: %v", err)
	}
	return f.Name()
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
	if err := s.waitReady(ctx); err != nil {
		return fmt.Errorf("consultest: not ready after restart: %w\n%s", err, s.run.logs())
	}
	return nil
}

// waitReady polls until there is a leader and the management token reads
// itself over mTLS.
func (s *Server) waitReady(ctx context.Context) error {
	c, err := s.apiClient(s.ManagementToken)
	if err != nil {
		return err
	}
	var last error
	for {
		leader, err := c.Status().Leader()
		if err == nil && leader != "" {
			if _, _, err = c.ACL().TokenReadSelf(nil); err == nil {
				return nil
			}
		}
		if err == nil {
			err = fmt.Errorf("no leader yet")
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// uuid returns a random UUIDv4, the format Consul wants for token IDs.
func uuid(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("consultest: random: %v", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// moduleRoot returns the nearest directory at or above the working
// directory that holds a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
