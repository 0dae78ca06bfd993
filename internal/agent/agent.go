// Package agent prepares and runs a secured Consul 1.16.1 agent (HTTPS only,
// verify_incoming, ACL default deny) for package consultest and the demo:
// certificates, configuration, the local-binary runner, readiness and
// tokens. Errors are returned, never fatal, so a program can use it too.
package agent

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/securereg/securereg"
	"github.com/securereg/securereg/internal/pki"
)

// ServerName is the name in the server certificate that Consul's own
// verify_server_hostname expects for datacenter dc1.
const ServerName = "server.dc1.consul"

// File names inside Agent.Dir.
const (
	CAFileName     = "consul-agent-ca.pem"
	serverCertName = "dc1-server-consul-0"
	clientCertName = "dc1-client-consul-0"
)

// Agent is the identity of one Consul server: its certificates, tokens and,
// once a runner has chosen them, its addresses.
type Agent struct {
	Addr, PlainAddr string // set by the runner
	ServerName      string
	Dir             string
	CAFile          string
	ClientCertFile  string
	ClientKeyFile   string
	ManagementToken string
	AgentToken      string
	CA              *pki.CA
}

// Prepare generates a CA, a server certificate (SANs server.dc1.consul,
// localhost, 127.0.0.1), a client certificate and a management token, and
// writes the PEM files to dir.
func Prepare(dir string) (*Agent, error) {
	a := &Agent{ServerName: ServerName, Dir: dir}
	var err error
	if a.ManagementToken, err = UUID(); err != nil {
		return nil, err
	}
	// The agent token lets the agent deregister services and run
	// anti-entropy under default deny; the management token will do.
	a.AgentToken = a.ManagementToken
	if a.CA, err = pki.NewCA(time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour)); err != nil {
		return nil, err
	}
	if a.CAFile, err = a.CA.WriteCA(dir, CAFileName); err != nil {
		return nil, err
	}
	server, err := a.CA.Issue(pki.Leaf{
		CommonName: ServerName,
		DNSNames:   []string{ServerName, "localhost"},
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1)},
		Server:     true,
		Client:     true, // Consul servers dial each other with it
	})
	if err != nil {
		return nil, err
	}
	if _, _, err := server.Write(dir, serverCertName); err != nil {
		return nil, err
	}
	client, err := a.CA.Issue(pki.Leaf{CommonName: "client.dc1.consul", Client: true})
	if err != nil {
		return nil, err
	}
	if a.ClientCertFile, a.ClientKeyFile, err = client.Write(dir, clientCertName); err != nil {
		return nil, err
	}
	return a, nil
}

// Files returns the files an agent needs in its config directory, by name.
func (a *Agent) Files() map[string]string {
	return map[string]string{
		CAFileName:              filepath.Join(a.Dir, CAFileName),
		serverCertName + ".crt": filepath.Join(a.Dir, serverCertName+".crt"),
		serverCertName + ".key": filepath.Join(a.Dir, serverCertName+".key"),
	}
}

// Client returns a consul/api client over mTLS with token.
func (a *Agent) Client(token string) (*api.Client, error) {
	tlsCfg, err := securereg.NewTLSConfig(
		securereg.CAFile(a.CAFile),
		securereg.ClientCert(a.ClientCertFile, a.ClientKeyFile),
		securereg.ServerName(a.ServerName),
		securereg.Token(token),
	)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 4}
	return api.NewClient(&api.Config{
		Address:    a.Addr,
		Scheme:     "https",
		Token:      token,
		HttpClient: &http.Client{Transport: tr, Timeout: 30 * time.Second},
	})
}

// WaitReady polls until there is a leader and the management token reads
// itself over mTLS.
func (a *Agent) WaitReady(ctx context.Context) error {
	c, err := a.Client(a.ManagementToken)
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

// MintToken creates a least-privilege policy and token for a go-micro
// service (securereg.ACLPolicy with every service discoverable) and returns
// the token's SecretID.
func (a *Agent) MintToken(service string) (string, error) {
	rules, err := securereg.ACLPolicy(service, nil)
	if err != nil {
		return "", err
	}
	c, err := a.Client(a.ManagementToken)
	if err != nil {
		return "", err
	}
	id, err := UUID()
	if err != nil {
		return "", err
	}
	pol, _, err := c.ACL().PolicyCreate(&api.ACLPolicy{
		Name:        "securereg-" + service + "-" + id[:8],
		Description: "least privilege for go-micro service " + service,
		Rules:       rules,
	}, nil)
	if err != nil {
		return "", fmt.Errorf("create policy for %q: %w", service, err)
	}
	tok, _, err := c.ACL().TokenCreate(&api.ACLToken{
		Description: "securereg token for " + service,
		Policies:    []*api.ACLTokenPolicyLink{{ID: pol.ID}},
	}, nil)
	if err != nil {
		return "", fmt.Errorf("create token for %q: %w", service, err)
	}
	return tok.SecretID, nil
}

// RevokeToken deletes the token with this SecretID.
func (a *Agent) RevokeToken(secretID string) error {
	c, err := a.Client(secretID)
	if err != nil {
		return err
	}
	self, _, err := c.ACL().TokenReadSelf(nil)
	if err != nil {
		return fmt.Errorf("read the token: %w", err)
	}
	m, err := a.Client(a.ManagementToken)
	if err != nil {
		return err
	}
	if _, err := m.ACL().TokenDelete(self.AccessorID, nil); err != nil {
		return fmt.Errorf("delete token %s: %w", self.AccessorID, err)
	}
	return nil
}

// WriteTokenFile writes token to a new 0600 file in the agent's directory.
func (a *Agent) WriteTokenFile(token string) (string, error) {
	f, err := os.CreateTemp(a.Dir, "token-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return "", err
	}
	if _, err := f.WriteString(token + "\n"); err != nil {
		return "", err
	}
	return f.Name(), nil
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// UUID returns a random UUIDv4, the format Consul wants for token IDs.
func UUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
