package securereg_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/securereg/securereg"
	"github.com/securereg/securereg/consultest"
	"github.com/securereg/securereg/internal/testca"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go-micro.dev/v4/registry"
)

func checkNamed(t *testing.T, rep *securereg.Report, prefix string) securereg.CheckResult {
	t.Helper()
	for _, c := range rep.Checks {
		if strings.HasPrefix(c.Name, prefix) {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", prefix, rep.Checks)
	return securereg.CheckResult{}
}

func TestIntegrationCheck(t *testing.T) {
	clearEnv(t)
	srv := consultest.Start(t)
	tok := srv.TokenFor(t, "greeter")
	tokFile := srv.WriteTokenFile(t, tok)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("least-privilege token over mTLS passes", func(t *testing.T) {
		rep, err := securereg.Check(ctx, append(srv.Options(), securereg.TokenFile(tokFile), securereg.CheckService("greeter"))...)
		require.NoError(t, err)
		out, _ := json.MarshalIndent(rep, "", "  ")
		t.Logf("%s", out)
		assert.Equal(t, securereg.CheckPass, rep.Status(), "%s", out)
		for _, name := range []string{"configuration", "tls ", "server cert ", "mtls ", "client cert", "token", "least privilege", "plaintext "} {
			assert.Equal(t, securereg.CheckPass, checkNamed(t, rep, name).Status, name)
		}
		assert.Contains(t, checkNamed(t, rep, "tls ").Detail, "TLS 1.3")
		assert.NotContains(t, string(out), tok)
	})
	t.Run("management token warns", func(t *testing.T) {
		rep, err := securereg.Check(ctx, append(srv.Options(), securereg.CheckService("greeter"))...)
		require.NoError(t, err)
		assert.Equal(t, securereg.CheckWarn, checkNamed(t, rep, "token").Status)
		assert.Contains(t, checkNamed(t, rep, "token").Detail, "global-management")
		assert.Equal(t, securereg.CheckWarn, checkNamed(t, rep, "least privilege").Status)
		out, _ := json.Marshal(rep)
		assert.NotContains(t, string(out), srv.ManagementToken)
	})
	t.Run("another service's token lacks rights", func(t *testing.T) {
		rep, err := securereg.Check(ctx, append(srv.Options(), securereg.TokenFile(tokFile), securereg.CheckService("billing"))...)
		require.NoError(t, err)
		assert.Equal(t, securereg.CheckFail, checkNamed(t, rep, "least privilege").Status)
		assert.Contains(t, checkNamed(t, rep, "least privilege").Detail, `service:write on "billing"`)
	})
	t.Run("wrong CA fails", func(t *testing.T) {
		other := testca.New(t).WriteCA(t, t.TempDir(), "other.pem")
		rep, err := securereg.Check(ctx, append(srv.Options(), securereg.TokenFile(tokFile), securereg.CAFile(other))...)
		require.NoError(t, err)
		assert.Equal(t, securereg.CheckFail, rep.Status())
		assert.Equal(t, securereg.CheckFail, checkNamed(t, rep, "tls ").Status)
		assert.Contains(t, checkNamed(t, rep, "tls ").Detail, "not signed by a trusted CA")
	})
	t.Run("no client certificate fails", func(t *testing.T) {
		rep, err := securereg.Check(ctx, registry.Addrs(srv.Addr), securereg.CAFile(srv.CAFile), securereg.TokenFile(tokFile))
		require.NoError(t, err)
		assert.Equal(t, securereg.CheckFail, rep.Status())
		assert.Equal(t, securereg.CheckFail, checkNamed(t, rep, "tls ").Status)
	})
	t.Run("revoked token fails", func(t *testing.T) {
		gone := srv.TokenFor(t, "greeter")
		srv.RevokeToken(t, gone)
		rep, err := securereg.Check(ctx, append(srv.Options(), securereg.Token(gone))...)
		require.NoError(t, err)
		assert.Equal(t, securereg.CheckFail, checkNamed(t, rep, "token").Status)
		out, _ := json.Marshal(rep)
		assert.NotContains(t, string(out), gone)
	})
	t.Run("insecure configuration is a failed check", func(t *testing.T) {
		rep, err := securereg.Check(ctx, append(srv.Options(), registry.Addrs("http://"+srv.Addr))...)
		require.NoError(t, err)
		c := checkNamed(t, rep, "configuration")
		assert.Equal(t, securereg.CheckFail, c.Status)
		assert.Contains(t, c.Detail, "plain HTTP")
	})
	t.Run("malformed configuration is an error", func(t *testing.T) {
		t.Setenv("CONSUL_HTTP_SSL", "maybe")
		rep, err := securereg.Check(ctx, srv.Options()...)
		require.ErrorIs(t, err, securereg.ErrInvalidConfig)
		assert.Equal(t, securereg.CheckFail, checkNamed(t, rep, "configuration").Status)
	})
	t.Run("Registry.Check", func(t *testing.T) {
		r := newRegistry(t, append(srv.Options(), securereg.TokenFile(tokFile), securereg.CheckService("greeter"))...)
		rep, err := r.Check(ctx)
		require.NoError(t, err)
		assert.Equal(t, securereg.CheckPass, rep.Status())
	})
}

// TestCheckWarnsWithoutVerifyIncoming runs Check against a fake Consul that
// does not require client certificates.
func TestCheckWarnsWithoutVerifyIncoming(t *testing.T) {
	f := newFixture(t, noMTLS)
	rep, err := securereg.Check(context.Background(), f.opts()...)
	require.NoError(t, err)
	c := checkNamed(t, rep, "mtls ")
	assert.Equal(t, securereg.CheckWarn, c.Status)
	assert.Contains(t, c.Detail, "verify_incoming is off")
	assert.Equal(t, securereg.CheckPass, checkNamed(t, rep, "tls ").Status)
	out, _ := json.Marshal(rep)
	assertNoSecrets(t, "report", string(out))
}
