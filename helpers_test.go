package securereg_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/securereg/securereg"
	"github.com/securereg/securereg/internal/fakeconsul"
	"github.com/securereg/securereg/internal/testca"
	"go-micro.dev/v4/registry"
)

// Distinctive tokens, searched for in every error, log line and printed
// value. None may ever appear there.
const (
	testToken  = "TOKEN-f3a9c1e2-never-print-me"
	readToken  = "TOKEN-read-7b4d-never-print-me"
	otherToken = "TOKEN-other-91aa-never-print-me"
)

var secrets = []string{testToken, readToken, otherToken}

// allEnv is every variable securereg reads.
var allEnv = []string{
	securereg.EnvHTTPAddr, securereg.EnvRegistryAddress, securereg.EnvHTTPToken,
	securereg.EnvHTTPTokenFile, securereg.EnvCACert, securereg.EnvCAPath,
	securereg.EnvClientCert, securereg.EnvClientKey, securereg.EnvTLSServerName,
	securereg.EnvHTTPSSL, securereg.EnvHTTPSSLVerify,
}

// clearEnv unsets every variable securereg reads for the test, so the
// machine's environment cannot leak in. An empty value counts as unset.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, k := range allEnv {
		t.Setenv(k, "")
	}
}

// fixture is a CA, a server and client certificate on disk, a token file and
// a fake Consul that requires mTLS and knows testToken (write) and readToken.
type fixture struct {
	dir               string
	ca                *testca.CA
	caFile            string
	certFile, keyFile string
	tokenFile         string
	fake              *fakeconsul.Server
	logs              *syncBuffer
	logger            *slog.Logger
}

type fixtureOpt func(*fakeconsul.Config)

func newFixture(t *testing.T, opts ...fixtureOpt) *fixture {
	t.Helper()
	clearEnv(t)
	f := &fixture{dir: t.TempDir(), ca: testca.New(t), logs: &syncBuffer{}}
	f.logger = slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.caFile = f.ca.WriteCA(t, f.dir, "ca.pem")
	f.certFile, f.keyFile = f.ca.Client(t, "client").Write(t, f.dir, "client")
	f.tokenFile = writeFile(t, f.dir, "token", "  "+testToken+"\n", 0o600)
	cfg := fakeconsul.Config{
		Cert:     f.ca.Server(t).TLS(t),
		ClientCA: f.ca.Pool(),
		Tokens:   map[string]fakeconsul.Role{testToken: fakeconsul.Write, readToken: fakeconsul.Read},
	}
	for _, o := range opts {
		o(&cfg)
	}
	f.fake = fakeconsul.Start(t, cfg)
	t.Cleanup(func() { assertNoSecrets(t, "log output", f.logs.String()) })
	return f
}

// opts returns options for a fully secured registry against the fake.
func (f *fixture) opts(extra ...registry.Option) []registry.Option {
	o := []registry.Option{
		registry.Addrs(f.fake.Addr),
		securereg.CAFile(f.caFile),
		securereg.ClientCert(f.certFile, f.keyFile),
		securereg.TokenFile(f.tokenFile),
		securereg.Logger(f.logger),
	}
	return append(o, extra...)
}

// newRegistry builds a registry and closes it at cleanup.
func newRegistry(t *testing.T, opts ...registry.Option) *securereg.Registry {
	t.Helper()
	r, err := securereg.New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// tokensSeen returns the distinct tokens the fake has seen, "" for none.
func tokensSeen(f *fakeconsul.Server) map[string]int {
	m := map[string]int{}
	for _, r := range f.Requests() {
		m[r.Token]++
	}
	return m
}

func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is masked by umask
		t.Fatal(err)
	}
	return p
}

func assertNoSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			t.Errorf("%s contains a test token", what)
		}
	}
}

func testService(name, id string) *registry.Service {
	return &registry.Service{
		Name:    name,
		Version: "1.0.0",
		Nodes: []*registry.Node{{
			Id:       id,
			Address:  "127.0.0.1:9090",
			Metadata: map[string]string{"protocol": "grpc"},
		}},
		Endpoints: []*registry.Endpoint{{Name: "Greeter.Hello", Metadata: map[string]string{"stream": "false"}}},
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// atomicWrite replaces path the way Vault Agent's file sink does: a temp
// file in the same directory, then rename.
func atomicWrite(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	tmp := writeFile(t, filepath.Dir(path), "."+filepath.Base(path)+".tmp", content, mode)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// k8sVolume mimics a Kubernetes secret volume: dir/name -> ..data/name,
// ..data -> ..<timestamp>/, swapped atomically by renaming a new ..data
// symlink over the old one.
type k8sVolume struct {
	dir string
	gen int
}

func newK8sVolume(t *testing.T, files map[string]string) *k8sVolume {
	t.Helper()
	v := &k8sVolume{dir: t.TempDir()}
	v.update(t, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *k8sVolume) path(name string) string { return filepath.Join(v.dir, name) }

// update writes a new generation and points ..data at it atomically.
func (v *k8sVolume) update(t *testing.T, files map[string]string) {
	t.Helper()
	v.gen++
	gen := fmt.Sprintf("..2026_12_04_00_00_%02d.%d", v.gen, v.gen)
	if err := os.Mkdir(filepath.Join(v.dir, gen), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		writeFile(t, filepath.Join(v.dir, gen), name, content, 0o440) // defaultMode: 0440
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// eventRecorder collects OnEvent calls.
type eventRecorder struct {
	mu     sync.Mutex
	events []securereg.Event
}

func (e *eventRecorder) record(ev securereg.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, ev)
}

func (e *eventRecorder) of(kind securereg.EventKind) []securereg.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []securereg.Event
	for _, ev := range e.events {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

func (e *eventRecorder) all() []securereg.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]securereg.Event(nil), e.events...)
}

// noMTLS makes the fixture's fake accept clients without a certificate.
func noMTLS(c *fakeconsul.Config) { c.ClientCA = nil }
