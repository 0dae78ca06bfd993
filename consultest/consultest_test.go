package consultest_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/securereg/securereg/consultest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestServerIsSecured checks the properties every other test relies on,
// against the real agent.
func TestServerIsSecured(t *testing.T) {
	srv := consultest.Start(t)

	t.Run("management token works over mTLS", func(t *testing.T) {
		self, _, err := srv.APIClient(t).ACL().TokenReadSelf(nil)
		require.NoError(t, err)
		assert.Equal(t, srv.ManagementToken, self.SecretID)
	})

	t.Run("verify_incoming: no client certificate, no answer", func(t *testing.T) {
		pem, err := os.ReadFile(srv.CAFile)
		require.NoError(t, err)
		pool := x509.NewCertPool()
		require.True(t, pool.AppendCertsFromPEM(pem))
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: srv.ServerName}}}
		resp, err := c.Get("https://" + srv.Addr + "/v1/status/leader")
		if err == nil {
			resp.Body.Close()
		}
		require.Error(t, err, "Consul must refuse a client without a certificate")
	})

	t.Run("ACL default deny: no token sees nothing and may write nothing", func(t *testing.T) {
		c := srv.APIClient(t)
		anon, err := api.NewClient(&api.Config{Address: srv.Addr, Scheme: "https", HttpClient: anonymousClient(t, srv)})
		require.NoError(t, err)
		require.NoError(t, c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "probe-1", Name: "probe"}))
		t.Cleanup(func() { _ = c.Agent().ServiceDeregister("probe-1") })
		svcs, _, err := anon.Catalog().Services(nil)
		require.NoError(t, err)
		assert.Empty(t, svcs)
		err = anon.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "x-1", Name: "x"})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "Permission denied")
	})

	t.Run("TokenFor is least privilege", func(t *testing.T) {
		tok := srv.TokenFor(t, "greeter")
		c, err := api.NewClient(&api.Config{Address: srv.Addr, Scheme: "https", Token: tok, HttpClient: anonymousClient(t, srv)})
		require.NoError(t, err)
		require.NoError(t, c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "greeter-1", Name: "greeter"}))
		require.NoError(t, c.Agent().ServiceDeregister("greeter-1"))
		err = c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "billing-1", Name: "billing"})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "Permission denied")
		_, _, err = c.ACL().PolicyList(nil)
		require.Error(t, err, "no acl:read")
	})

	t.Run("HTTPS only: the plain HTTP listener is off", func(t *testing.T) {
		self, err := srv.APIClient(t).Agent().Self()
		require.NoError(t, err)
		dc := self["DebugConfig"]
		require.NotNil(t, dc)
		assert.Empty(t, dc["HTTPAddrs"], "no plain HTTP address")
		assert.NotEmpty(t, dc["HTTPSAddrs"])
	})
}

func TestRestart(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.APIClient(t)
	_, err := c.KV().Put(&api.KVPair{Key: "k", Value: []byte("v")}, nil)
	require.NoError(t, err)
	addr := srv.Addr

	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Stop(), "Stop is idempotent")
	_, _, err = c.KV().Get("k", nil)
	require.Error(t, err, "a stopped server answers nothing")

	require.NoError(t, srv.Restart())
	assert.Equal(t, addr, srv.Addr)
	kv, _, err := srv.APIClient(t).KV().Get("k", nil)
	require.NoError(t, err)
	require.NotNil(t, kv)
	assert.Equal(t, "v", string(kv.Value), "data survives a restart")
}

// anonymousClient has the client certificate but no token.
func anonymousClient(t *testing.T, srv *consultest.Server) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(srv.CAFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	cert, err := tls.LoadX509KeyPair(srv.ClientCertFile, srv.ClientKeyFile)
	require.NoError(t, err)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: srv.ServerName, Certificates: []tls.Certificate{cert}}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}
