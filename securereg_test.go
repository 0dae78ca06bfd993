package securereg_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-micro/plugins/v4/registry/consul"
	"github.com/hashicorp/consul/api"
	"github.com/securereg/securereg"
	"github.com/securereg/securereg/internal/fakeconsul"
	"github.com/securereg/securereg/internal/testca"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go-micro.dev/v4/registry"
)

func TestLifecycleOverMTLS(t *testing.T) {
	f := newFixture(t)
	r := newRegistry(t, f.opts()...)

	w, err := r.Watch(registry.WatchService("greeter"))
	require.NoError(t, err)
	defer w.Stop()

	svc := testService("greeter", "greeter-1")
	require.NoError(t, r.Register(svc, registry.RegisterTTL(30*time.Second)))

	got, err := r.GetService("greeter")
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, "1.0.0", got[0].Version)
	require.Len(t, got[0].Nodes, 1)
	assert.Equal(t, "greeter-1", got[0].Nodes[0].Id)
	assert.Equal(t, "127.0.0.1:9090", got[0].Nodes[0].Address)
	assert.Equal(t, "grpc", got[0].Nodes[0].Metadata["protocol"])
	require.Len(t, got[0].Endpoints, 1)
	assert.Equal(t, "Greeter.Hello", got[0].Endpoints[0].Name)

	list, err := r.ListServices()
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "greeter", list[0].Name)

	res := nextResult(t, w)
	assert.Equal(t, "create", res.Action)
	assert.Equal(t, "greeter", res.Service.Name)

	require.NoError(t, r.Deregister(svc))
	got, err = r.GetService("greeter")
	require.NoError(t, err)
	assert.Empty(t, got)

	reqs := f.fake.Requests()
	require.NotEmpty(t, reqs)
	for _, req := range reqs {
		assert.Equal(t, testToken, req.Token, "token on %s %s (trimmed from the file)", req.Method, req.Path)
		assert.Equal(t, 1, req.PeerCerts, "client cert on %s %s", req.Method, req.Path)
	}
	assert.Equal(t, "HTTP/2.0", reqs[0].Proto, "HTTP/2 is used when the server offers it")
}

func nextResult(t *testing.T, w registry.Watcher) *registry.Result {
	t.Helper()
	type out struct {
		r   *registry.Result
		err error
	}
	ch := make(chan out, 1)
	go func() {
		r, err := w.Next()
		ch <- out{r, err}
	}()
	select {
	case o := <-ch:
		require.NoError(t, o.err)
		return o.r
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event within 10s")
		return nil
	}
}

func TestSentinels(t *testing.T) {
	type tc struct {
		name string
		// setup returns options and sets env; f is a fresh fixture.
		setup func(t *testing.T, f *fixture) []registry.Option
		want  error
		// devOK: DevMode turns the refusal into a working registry.
		devOK bool
		// msg must appear in the error.
		msg []string
	}
	cases := []tc{
		{
			name: "ErrInsecure tls.Config InsecureSkipVerify",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				return f.opts(registry.TLSConfig(&tls.Config{InsecureSkipVerify: true}))
			},
			want: securereg.ErrInsecure, devOK: true, msg: []string{"InsecureSkipVerify", "CAFile"},
		},
		{
			name: "ErrInsecure consul.Config InsecureSkipVerify",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				return f.opts(consul.Config(&api.Config{TLSConfig: api.TLSConfig{InsecureSkipVerify: true}}))
			},
			want: securereg.ErrInsecure, devOK: true, msg: []string{"consul.Config"},
		},
		{
			name: "ErrInsecure CONSUL_HTTP_SSL_VERIFY=false",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				t.Setenv("CONSUL_HTTP_SSL_VERIFY", "false")
				return f.opts()
			},
			want: securereg.ErrInsecure, devOK: true, msg: []string{"CONSUL_HTTP_SSL_VERIFY"},
		},
		{
			name: "ErrInsecure MinVersion TLS 1.0",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				return f.opts(registry.TLSConfig(&tls.Config{MinVersion: tls.VersionTLS10}))
			},
			want: securereg.ErrInsecure, devOK: true, msg: []string{"MinVersion", "TLS 1.0"},
		},
		{
			name: "ErrInsecure MaxVersion TLS 1.1",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				return f.opts(registry.TLSConfig(&tls.Config{MaxVersion: tls.VersionTLS11}))
			},
			want: securereg.ErrInsecure, devOK: true, msg: []string{"MaxVersion"},
		},
		{
			name: "ErrInsecure insecure cipher suite",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				return f.opts(registry.TLSConfig(&tls.Config{CipherSuites: []uint16{tls.TLS_RSA_WITH_RC4_128_SHA}}))
			},
			want: securereg.ErrInsecure, devOK: true, msg: []string{"TLS_RSA_WITH_RC4_128_SHA"},
		},
		{
			name: "ErrPlaintext http address",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				return f.opts(registry.Addrs("http://" + f.fake.Addr))
			},
			want: securereg.ErrPlaintext, devOK: true, msg: []string{"http://", "DevMode"},
		},
		{
			name:  "ErrPlaintext Secure(false)",
			setup: func(t *testing.T, f *fixture) []registry.Option { return f.opts(registry.Secure(false)) },
			want:  securereg.ErrPlaintext, devOK: true, msg: []string{"Secure(false)"},
		},
		{
			name: "ErrPlaintext CONSUL_HTTP_SSL=false",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				t.Setenv("CONSUL_HTTP_SSL", "false")
				return f.opts()
			},
			want: securereg.ErrPlaintext, devOK: true, msg: []string{"CONSUL_HTTP_SSL=false"},
		},
		{
			name: "ErrNoToken nothing configured",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				return []registry.Option{registry.Addrs(f.fake.Addr), securereg.CAFile(f.caFile), securereg.ClientCert(f.certFile, f.keyFile), securereg.Logger(f.logger)}
			},
			want: securereg.ErrNoToken, devOK: true, msg: []string{"CONSUL_HTTP_TOKEN_FILE"},
		},
		{
			name: "ErrNoToken empty token file",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				return f.opts(securereg.TokenFile(writeFile(t, f.dir, "empty", "", 0o600)))
			},
			want: securereg.ErrNoToken, msg: []string{"empty"},
		},
		{
			name: "ErrNoToken whitespace token file",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				return f.opts(securereg.TokenFile(writeFile(t, f.dir, "blank", " \n\t\n", 0o600)))
			},
			want: securereg.ErrNoToken, msg: []string{"blank"},
		},
		{
			name:  "ErrNoToken blank Token option",
			setup: func(t *testing.T, f *fixture) []registry.Option { return f.opts(securereg.Token("   ")) },
			want:  securereg.ErrNoToken, msg: []string{"Token option"},
		},
		{
			name: "ErrFileMode token file 0644",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				return f.opts(securereg.TokenFile(writeFile(t, f.dir, "open-token", testToken, 0o644)))
			},
			want: securereg.ErrFileMode, msg: []string{"0644", "chmod 600", "defaultMode: 0440", "open-token"},
		},
		{
			name: "ErrFileMode client key 0604",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				require.NoError(t, os.Chmod(f.keyFile, 0o604))
				return f.opts()
			},
			want: securereg.ErrFileMode, msg: []string{"0604", "client key", "readable by others"},
		},
		{
			name: "ErrCertExpired expired client cert",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				p := f.ca.Issue(t, testca.Leaf{CommonName: "old", Client: true, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
				c, k := p.Write(t, f.dir, "expired")
				return f.opts(securereg.ClientCert(c, k))
			},
			want: securereg.ErrCertExpired, msg: []string{"expired.crt", "NotAfter"},
		},
		{
			name: "ErrCertExpired not yet valid client cert",
			setup: func(t *testing.T, f *fixture) []registry.Option {
				p := f.ca.Issue(t, testca.Leaf{CommonName: "future", Client: true, NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour)})
				c, k := p.Write(t, f.dir, "future")
				return f.opts(securereg.ClientCert(c, k))
			},
			want: securereg.ErrCertExpired, msg: []string{"future.crt", "NotBefore"},
		},
	}
	for _, c := range cases {
		for _, dev := range []bool{false, true} {
			name := c.name
			if dev {
				name += " DevMode"
			}
			t.Run(name, func(t *testing.T) {
				f := newFixture(t)
				opts := c.setup(t, f)
				if dev {
					opts = append(opts, securereg.DevMode())
				}
				r, err := securereg.New(opts...)
				if dev && c.devOK {
					require.NoError(t, err)
					require.NoError(t, r.Close())
					assert.Contains(t, f.logs.String(), "DEVMODE IS ON")
					return
				}
				require.Error(t, err)
				assert.Nil(t, r)
				assert.ErrorIs(t, err, c.want)
				assert.True(t, strings.HasPrefix(err.Error(), "securereg: "), "error %q lacks the prefix", err)
				for _, m := range c.msg {
					assert.Contains(t, err.Error(), m)
				}
				assertNoSecrets(t, "error", err.Error())
				assertNoSecrets(t, "error %+v", fmt.Sprintf("%+v %#v", err, err))

				// The drop-in fails closed with the same error everywhere.
				dr := securereg.NewRegistry(append(opts, securereg.Logger(f.logger))...)
				require.NotNil(t, dr)
				assert.ErrorIs(t, dr.Init(), c.want)
				_, gerr := dr.GetService("greeter")
				assert.ErrorIs(t, gerr, c.want)
				assert.ErrorIs(t, dr.Register(testService("greeter", "g1")), c.want)
				assert.ErrorIs(t, dr.Deregister(testService("greeter", "g1")), c.want)
				_, lerr := dr.ListServices()
				assert.ErrorIs(t, lerr, c.want)
				_, werr := dr.Watch()
				assert.ErrorIs(t, werr, c.want)
				assert.Empty(t, f.fake.Requests(), "a misconfigured registry must not talk to Consul")
			})
		}
	}
}

func TestConsulACLAnswers(t *testing.T) {
	tests := []struct {
		name  string
		token string
		call  func(r registry.Registry) error
		want  error
	}{
		{"unknown token is ErrTokenInvalid", otherToken, func(r registry.Registry) error { _, err := r.GetService("greeter"); return err }, securereg.ErrTokenInvalid},
		{"read-only token cannot register", readToken, func(r registry.Registry) error { return r.Register(testService("greeter", "g1")) }, securereg.ErrPermissionDenied},
		{"read-only token can read", readToken, func(r registry.Registry) error { _, err := r.GetService("greeter"); return err }, nil},
	}
	for _, tt := range tests {
		for _, dev := range []bool{false, true} {
			name := tt.name
			opts := []registry.Option{securereg.Token(tt.token)}
			if dev {
				name += " DevMode"
				opts = append(opts, securereg.DevMode())
			}
			t.Run(name, func(t *testing.T) {
				f := newFixture(t)
				r := newRegistry(t, f.opts(opts...)...)
				err := tt.call(r)
				if tt.want == nil {
					require.NoError(t, err)
					return
				}
				require.ErrorIs(t, err, tt.want)
				assert.True(t, strings.HasPrefix(err.Error(), "securereg: "), "error %q", err)
				var se api.StatusError
				assert.True(t, errors.As(err, &se), "the Consul error is wrapped too")
				assertNoSecrets(t, "error", err.Error())
			})
		}
	}
}

// TestMITM is the plugin's headline bug: Secure(true) without a CA connected
// to any server and sent it the token.
func TestMITM(t *testing.T) {
	clearEnv(t)
	rogue := testca.New(t) // a CA nobody trusts
	fake := fakeconsul.Start(t, fakeconsul.Config{Cert: rogue.Server(t).TLS(t), Tokens: map[string]fakeconsul.Role{testToken: fakeconsul.Write}})

	r := newRegistry(t, registry.Addrs(fake.Addr), registry.Secure(true), securereg.Token(testToken))
	_, err := r.GetService("greeter")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not signed by a trusted CA")
	assertNoSecrets(t, "error", err.Error())
	assert.Empty(t, fake.Requests(), "the rogue server must see no request, so no token")

	// The stock plugin, for contrast, hands the token over.
	stock := consul.NewRegistry(registry.Addrs(fake.Addr), registry.Secure(true), consul.Config(&api.Config{Token: testToken}))
	_, err = stock.GetService("greeter")
	require.NoError(t, err)
	assert.Positive(t, tokensSeen(fake)[testToken], "the stock plugin sends the token to a machine in the middle")
}

func TestServerVerification(t *testing.T) {
	tests := []struct {
		name    string
		opts    func(f *fixture, other string) []registry.Option
		wantErr string
	}{
		{"right CA", func(f *fixture, _ string) []registry.Option { return f.opts() }, ""},
		{"wrong CA", func(f *fixture, other string) []registry.Option { return f.opts(securereg.CAFile(other)) }, "not signed by a trusted CA"},
		{"wrong ServerName", func(f *fixture, _ string) []registry.Option {
			return f.opts(securereg.ServerName("server.dc9.consul"))
		}, "does not carry the expected name"},
		{"no client cert with verify_incoming", func(f *fixture, _ string) []registry.Option {
			return []registry.Option{registry.Addrs(f.fake.Addr), securereg.CAFile(f.caFile), securereg.TokenFile(f.tokenFile)}
		}, "no client certificate is configured"},
		{"client cert from another CA", func(f *fixture, _ string) []registry.Option {
			c, k := testca.New(t).Client(t, "stranger").Write(t, f.dir, "stranger")
			return f.opts(securereg.ClientCert(c, k))
		}, "client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			other := testca.New(t).WriteCA(t, f.dir, "other-ca.pem")
			r := newRegistry(t, tt.opts(f, other)...)
			_, err := r.GetService("greeter")
			if tt.wantErr == "" {
				require.NoError(t, err)
				assert.Positive(t, tokensSeen(f.fake)[testToken])
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.Zero(t, tokensSeen(f.fake)[testToken], "no token may reach a server that failed verification")
		})
	}
}

// TestServerName connects by IP to a server whose certificate names only
// server.dc1.consul, as Consul's auto-generated certificates do.
func TestServerName(t *testing.T) {
	for _, how := range []string{"option", "env", "tls.Config"} {
		t.Run(how, func(t *testing.T) {
			f := newFixture(t)
			leaf := f.ca.Issue(t, testca.Leaf{CommonName: "server.dc1.consul", DNSNames: []string{"server.dc1.consul"}, Server: true})
			fake := fakeconsul.Start(t, fakeconsul.Config{Cert: leaf.TLS(t), ClientCA: f.ca.Pool(),
				Tokens: map[string]fakeconsul.Role{testToken: fakeconsul.Write}})
			opts := f.opts(registry.Addrs(fake.Addr))
			switch how {
			case "option":
				opts = append(opts, securereg.ServerName("server.dc1.consul"))
			case "env":
				t.Setenv("CONSUL_TLS_SERVER_NAME", "server.dc1.consul")
			case "tls.Config":
				opts = append(opts, registry.TLSConfig(&tls.Config{ServerName: "server.dc1.consul"}))
			}
			r := newRegistry(t, opts...)
			_, err := r.GetService("greeter")
			require.NoError(t, err)

			// Without it, the IP is checked against the certificate and fails.
			t.Setenv("CONSUL_TLS_SERVER_NAME", "")
			bare := newRegistry(t, f.opts(registry.Addrs(fake.Addr))...)
			_, err = bare.GetService("greeter")
			require.Error(t, err)
			assert.Contains(t, err.Error(), "does not carry the expected name")
		})
	}
}

func TestEnvironment(t *testing.T) {
	tests := []struct {
		name string
		// env sets variables; it gets a fixture to point them at.
		env  func(t *testing.T, f *fixture)
		opts func(f *fixture) []registry.Option
		// check runs against a working registry; wantErr instead expects New to fail.
		check   func(t *testing.T, f *fixture, r *securereg.Registry)
		wantErr string
		wantIs  error
	}{
		{
			name: "all CONSUL_* variables configure a working mTLS registry",
			env: func(t *testing.T, f *fixture) {
				t.Setenv("CONSUL_HTTP_ADDR", "https://"+f.fake.Addr)
				t.Setenv("CONSUL_CACERT", f.caFile)
				t.Setenv("CONSUL_CLIENT_CERT", f.certFile)
				t.Setenv("CONSUL_CLIENT_KEY", f.keyFile)
				t.Setenv("CONSUL_HTTP_TOKEN", testToken)
				t.Setenv("CONSUL_HTTP_SSL", "true")
				t.Setenv("CONSUL_HTTP_SSL_VERIFY", "true")
			},
			check: func(t *testing.T, f *fixture, r *securereg.Registry) {
				assert.Equal(t, []string{f.fake.Addr}, r.Options().Addrs)
				assert.True(t, r.Options().Secure)
				_, err := r.GetService("greeter")
				require.NoError(t, err)
				assert.Equal(t, map[string]int{testToken: 1}, tokensSeen(f.fake))
			},
		},
		{
			name: "CONSUL_HTTP_TOKEN_FILE wins over CONSUL_HTTP_TOKEN",
			env: func(t *testing.T, f *fixture) {
				setTLSEnv(t, f)
				t.Setenv("CONSUL_HTTP_TOKEN", otherToken)
				t.Setenv("CONSUL_HTTP_TOKEN_FILE", f.tokenFile)
			},
			check: func(t *testing.T, f *fixture, r *securereg.Registry) {
				_, err := r.GetService("greeter")
				require.NoError(t, err)
				assert.Equal(t, map[string]int{testToken: 1}, tokensSeen(f.fake))
			},
		},
		{
			name: "MICRO_REGISTRY_ADDRESS wins over CONSUL_HTTP_ADDR",
			env: func(t *testing.T, f *fixture) {
				setTLSEnv(t, f)
				t.Setenv("CONSUL_HTTP_TOKEN", testToken)
				t.Setenv("CONSUL_HTTP_ADDR", "127.0.0.1:1")
				t.Setenv("MICRO_REGISTRY_ADDRESS", f.fake.Addr+",127.0.0.2")
			},
			check: func(t *testing.T, f *fixture, r *securereg.Registry) {
				assert.Equal(t, []string{f.fake.Addr, "127.0.0.2:8501"}, r.Options().Addrs)
				_, err := r.GetService("greeter")
				require.NoError(t, err)
			},
		},
		{
			name: "registry.Addrs wins over the environment",
			env: func(t *testing.T, f *fixture) {
				setTLSEnv(t, f)
				t.Setenv("CONSUL_HTTP_TOKEN", testToken)
				t.Setenv("MICRO_REGISTRY_ADDRESS", "127.0.0.1:1")
			},
			opts: func(f *fixture) []registry.Option { return []registry.Option{registry.Addrs(f.fake.Addr)} },
			check: func(t *testing.T, f *fixture, r *securereg.Registry) {
				_, err := r.GetService("greeter")
				require.NoError(t, err)
			},
		},
		{
			name: "CONSUL_CAPATH",
			env: func(t *testing.T, f *fixture) {
				setTLSEnv(t, f)
				t.Setenv("CONSUL_CACERT", "")
				dir := filepath.Join(f.dir, "cadir")
				require.NoError(t, os.Mkdir(dir, 0o755))
				f.ca.WriteCA(t, dir, "consul-ca.pem")
				writeFile(t, dir, "README", "not a certificate", 0o644)
				t.Setenv("CONSUL_CAPATH", dir)
				t.Setenv("CONSUL_HTTP_TOKEN", testToken)
			},
			check: func(t *testing.T, f *fixture, r *securereg.Registry) {
				_, err := r.GetService("greeter")
				require.NoError(t, err)
			},
		},
		{
			name: "CONSUL_TLS_SERVER_NAME",
			env: func(t *testing.T, f *fixture) {
				setTLSEnv(t, f)
				t.Setenv("CONSUL_HTTP_TOKEN", testToken)
				t.Setenv("CONSUL_TLS_SERVER_NAME", "server.dc9.consul")
			},
			wantErr: "does not carry the expected name", // the fake's cert has no such name
		},
		{
			name: "CAFile option wins over CONSUL_CACERT",
			env: func(t *testing.T, f *fixture) {
				setTLSEnv(t, f)
				t.Setenv("CONSUL_CACERT", testca.New(t).WriteCA(t, f.dir, "wrong-ca.pem"))
				t.Setenv("CONSUL_HTTP_TOKEN", testToken)
			},
			opts: func(f *fixture) []registry.Option { return []registry.Option{securereg.CAFile(f.caFile)} },
			check: func(t *testing.T, f *fixture, r *securereg.Registry) {
				_, err := r.GetService("greeter")
				require.NoError(t, err)
			},
		},
		{
			name: "Token option wins over CONSUL_HTTP_TOKEN_FILE",
			env: func(t *testing.T, f *fixture) {
				setTLSEnv(t, f)
				t.Setenv("CONSUL_HTTP_TOKEN_FILE", f.tokenFile)
			},
			opts: func(f *fixture) []registry.Option { return []registry.Option{securereg.Token(readToken)} },
			check: func(t *testing.T, f *fixture, r *securereg.Registry) {
				_, err := r.GetService("greeter")
				require.NoError(t, err)
				assert.Equal(t, map[string]int{readToken: 1}, tokensSeen(f.fake))
			},
		},
		{
			name: "ClientCert option wins over CONSUL_CLIENT_CERT",
			env: func(t *testing.T, f *fixture) {
				setTLSEnv(t, f)
				t.Setenv("CONSUL_CLIENT_CERT", "/nonexistent/client.crt")
				t.Setenv("CONSUL_CLIENT_KEY", "/nonexistent/client.key")
				t.Setenv("CONSUL_HTTP_TOKEN", testToken)
			},
			opts: func(f *fixture) []registry.Option {
				return []registry.Option{securereg.ClientCert(f.certFile, f.keyFile)}
			},
			check: func(t *testing.T, f *fixture, r *securereg.Registry) {
				_, err := r.GetService("greeter")
				require.NoError(t, err)
			},
		},
		{name: "bad CONSUL_HTTP_SSL", env: func(t *testing.T, f *fixture) { setAll(t, f); t.Setenv("CONSUL_HTTP_SSL", "yes please") }, wantErr: `CONSUL_HTTP_SSL="yes please" is not a boolean`, wantIs: securereg.ErrInvalidConfig},
		{name: "bad CONSUL_HTTP_SSL_VERIFY", env: func(t *testing.T, f *fixture) { setAll(t, f); t.Setenv("CONSUL_HTTP_SSL_VERIFY", "nope") }, wantErr: "CONSUL_HTTP_SSL_VERIFY", wantIs: securereg.ErrInvalidConfig},
		{name: "CONSUL_HTTP_ADDR http://", env: func(t *testing.T, f *fixture) { setAll(t, f); t.Setenv("CONSUL_HTTP_ADDR", "http://"+f.fake.Addr) }, wantErr: "CONSUL_HTTP_ADDR", wantIs: securereg.ErrPlaintext},
		{name: "CONSUL_HTTP_ADDR unix socket", env: func(t *testing.T, f *fixture) { setAll(t, f); t.Setenv("CONSUL_HTTP_ADDR", "unix:///tmp/consul.sock") }, wantErr: "unix socket", wantIs: securereg.ErrInvalidConfig},
		{name: "missing CONSUL_CACERT file", env: func(t *testing.T, f *fixture) { setAll(t, f); t.Setenv("CONSUL_CACERT", "/nonexistent/ca.pem") }, wantErr: "/nonexistent/ca.pem", wantIs: fs.ErrNotExist},
		{name: "empty CONSUL_CAPATH dir", env: func(t *testing.T, f *fixture) { setAll(t, f); t.Setenv("CONSUL_CAPATH", t.TempDir()) }, wantErr: "holds no PEM certificate", wantIs: securereg.ErrInvalidConfig},
		{name: "CONSUL_CLIENT_CERT without key", env: func(t *testing.T, f *fixture) { setAll(t, f); t.Setenv("CONSUL_CLIENT_KEY", "") }, wantErr: "without a client key", wantIs: securereg.ErrInvalidConfig},
		{name: "CONSUL_CLIENT_KEY without cert", env: func(t *testing.T, f *fixture) { setAll(t, f); t.Setenv("CONSUL_CLIENT_CERT", "") }, wantErr: "without a client cert", wantIs: securereg.ErrInvalidConfig},
		{name: "CONSUL_HTTP_TOKEN_FILE missing", env: func(t *testing.T, f *fixture) { setAll(t, f); t.Setenv("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/token") }, wantErr: "CONSUL_HTTP_TOKEN_FILE", wantIs: fs.ErrNotExist},
		{name: "CONSUL_HTTP_TOKEN_FILE mode 0666", env: func(t *testing.T, f *fixture) {
			setAll(t, f)
			t.Setenv("CONSUL_HTTP_TOKEN_FILE", writeFile(t, f.dir, "t", testToken, 0o666))
		}, wantErr: "writable by others", wantIs: securereg.ErrFileMode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tt.env(t, f)
			opts := []registry.Option{securereg.Logger(f.logger)}
			if tt.opts != nil {
				opts = append(opts, tt.opts(f)...)
			}
			r, err := securereg.New(opts...)
			if tt.wantIs != nil {
				require.Error(t, err)
				assert.ErrorIs(t, err, tt.wantIs)
				assert.Contains(t, err.Error(), tt.wantErr)
				assertNoSecrets(t, "error", err.Error())
				return
			}
			require.NoError(t, err)
			t.Cleanup(func() { _ = r.Close() })
			if tt.wantErr != "" {
				_, err := r.GetService("greeter")
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			tt.check(t, f, r)
		})
	}
}

// setTLSEnv points the address and TLS variables at the fixture.
func setTLSEnv(t *testing.T, f *fixture) {
	t.Helper()
	t.Setenv("CONSUL_HTTP_ADDR", f.fake.Addr)
	t.Setenv("CONSUL_CACERT", f.caFile)
	t.Setenv("CONSUL_CLIENT_CERT", f.certFile)
	t.Setenv("CONSUL_CLIENT_KEY", f.keyFile)
}

// setAll is setTLSEnv plus the token file.
func setAll(t *testing.T, f *fixture) {
	t.Helper()
	setTLSEnv(t, f)
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", f.tokenFile)
}

func TestDevModeCannotComeFromEnvironment(t *testing.T) {
	f := newFixture(t)
	for _, k := range []string{"SECUREREG_DEV_MODE", "SECUREREG_DEVMODE", "CONSUL_DEV_MODE", "MICRO_DEV_MODE"} {
		t.Setenv(k, "true")
	}
	t.Setenv("CONSUL_HTTP_SSL_VERIFY", "false")
	_, err := securereg.New(f.opts()...)
	assert.ErrorIs(t, err, securereg.ErrInsecure)
}

func TestFileModes(t *testing.T) {
	tests := []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o640, true}, {0o440, true},
		{0o644, false}, {0o604, false}, {0o602, false}, {0o660, false}, {0o666, false}, {0o620, false},
	}
	for _, tt := range tests {
		for _, kind := range []string{"token", "key", "token via symlink", "key via symlink"} {
			t.Run(fmt.Sprintf("%s %#o", kind, tt.mode), func(t *testing.T) {
				f := newFixture(t)
				target := f.tokenFile
				if strings.HasPrefix(kind, "key") {
					target = f.keyFile
				}
				require.NoError(t, os.Chmod(target, tt.mode))
				path := target
				if strings.HasSuffix(kind, "symlink") {
					// Kubernetes secret volumes: name -> ..data/name, the link itself 0777.
					path = filepath.Join(f.dir, "link-"+filepath.Base(target))
					require.NoError(t, os.Symlink(target, path))
				}
				opts := f.opts()
				if strings.HasPrefix(kind, "key") {
					opts = append(opts, securereg.ClientCert(f.certFile, path))
				} else {
					opts = append(opts, securereg.TokenFile(path))
				}
				r, err := securereg.New(opts...)
				if tt.ok {
					require.NoError(t, err)
					require.NoError(t, r.Close())
					return
				}
				require.ErrorIs(t, err, securereg.ErrFileMode)
				assert.Contains(t, err.Error(), fmt.Sprintf("%#o", tt.mode))
				assert.Contains(t, err.Error(), "chmod 600")
				assert.Contains(t, err.Error(), path)
			})
		}
	}
}

func TestBadFiles(t *testing.T) {
	tests := []struct {
		name   string
		opts   func(t *testing.T, f *fixture) []registry.Option
		want   []string
		wantIs error
	}{
		{"CA file missing", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(securereg.CAFile(filepath.Join(f.dir, "nope.pem")))
		}, []string{"nope.pem", "CAFile option"}, fs.ErrNotExist},
		{"CA file empty path", func(t *testing.T, f *fixture) []registry.Option { return f.opts(securereg.CAFile("")) }, []string{"CAFile option is empty"}, securereg.ErrInvalidConfig},
		{"CAPath empty path", func(t *testing.T, f *fixture) []registry.Option { return f.opts(securereg.CAPath("")) }, []string{"CAPath option is empty"}, securereg.ErrInvalidConfig},
		{"CA no PEM block", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(securereg.CAFile("testdata/ca-not-pem.txt"))
		}, []string{"testdata/ca-not-pem.txt", "no PEM data"}, securereg.ErrInvalidConfig},
		{"CA PEM is a private key", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(securereg.CAFile("testdata/ca-is-private-key.pem"))
		}, []string{"ca-is-private-key.pem", `"PRIVATE KEY", not a CERTIFICATE`}, securereg.ErrInvalidConfig},
		{"CA PEM garbage body", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(securereg.CAFile("testdata/ca-garbage.pem"))
		}, []string{"ca-garbage.pem", "not a valid certificate"}, securereg.ErrInvalidConfig},
		{"CA PEM truncated", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(securereg.CAFile("testdata/ca-truncated.pem"))
		}, []string{"ca-truncated.pem", "no PEM data"}, securereg.ErrInvalidConfig},
		{"CAPath without certificates", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(securereg.CAPath("testdata/empty-ca-dir"))
		}, []string{"empty-ca-dir", "holds no PEM certificate"}, securereg.ErrInvalidConfig},
		{"CAPath missing", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(securereg.CAPath(filepath.Join(f.dir, "nodir")))
		}, []string{"nodir"}, fs.ErrNotExist},
		{"cert and key mismatch", func(t *testing.T, f *fixture) []registry.Option {
			_, otherKey := f.ca.Client(t, "other").Write(t, f.dir, "other")
			return f.opts(securereg.ClientCert(f.certFile, otherKey))
		}, []string{"client.crt", "other.key", "do not form a pair"}, securereg.ErrInvalidConfig},
		{"cert only", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(securereg.ClientCert(f.certFile, ""))
		}, []string{"client.crt", "both client cert and client key must be provided"}, securereg.ErrInvalidConfig},
		{"key only", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(securereg.ClientCert("", f.keyFile))
		}, []string{"client.key", "both client cert and client key must be provided"}, securereg.ErrInvalidConfig},
		{"client cert not PEM", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(securereg.ClientCert("testdata/ca-not-pem.txt", f.keyFile))
		}, []string{"ca-not-pem.txt", "no PEM data"}, securereg.ErrInvalidConfig},
		{"token file missing", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(securereg.TokenFile(filepath.Join(f.dir, "no-token")))
		}, []string{"no-token", "TokenFile option"}, fs.ErrNotExist},
		{"token file is a directory", func(t *testing.T, f *fixture) []registry.Option {
			d := filepath.Join(f.dir, "tokdir")
			require.NoError(t, os.Mkdir(d, 0o700))
			return f.opts(securereg.TokenFile(d))
		}, []string{"tokdir"}, securereg.ErrInvalidConfig},
		{"nil TokenSource", func(t *testing.T, f *fixture) []registry.Option { return f.opts(securereg.Tokens(nil)) }, []string{"nil TokenSource"}, securereg.ErrNoToken},
		{"bad address", func(t *testing.T, f *fixture) []registry.Option { return f.opts(registry.Addrs("127.0.0.1:99999")) }, []string{"99999"}, securereg.ErrInvalidConfig},
		{"address with path", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(registry.Addrs("https://consul.example/prefix"))
		}, []string{"path prefixes"}, securereg.ErrInvalidConfig},
		{"mixed schemes", func(t *testing.T, f *fixture) []registry.Option {
			return f.opts(registry.Addrs("https://a:8501", "http://b:8500"))
		}, []string{"mix http:// and https://"}, securereg.ErrPlaintext},
		{"negative timeout", func(t *testing.T, f *fixture) []registry.Option { return f.opts(registry.Timeout(-time.Second)) }, []string{"negative"}, securereg.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			_, err := securereg.New(tt.opts(t, f)...)
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.wantIs)
			assert.True(t, strings.HasPrefix(err.Error(), "securereg: "), "error %q", err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestTokenHandling(t *testing.T) {
	t.Run("explicit per-request token is left alone", func(t *testing.T) {
		f := newFixture(t)
		r := newRegistry(t, f.opts(consul.QueryOptions(&api.QueryOptions{Token: readToken}))...)
		_, err := r.GetService("greeter")
		require.NoError(t, err)
		assert.Equal(t, map[string]int{readToken: 1}, tokensSeen(f.fake))
	})
	t.Run("custom TokenSource", func(t *testing.T) {
		f := newFixture(t)
		src := &countingSource{tok: testToken}
		r := newRegistry(t, f.opts(securereg.Tokens(src))...)
		for range 3 {
			_, err := r.GetService("greeter")
			require.NoError(t, err)
		}
		assert.Equal(t, map[string]int{testToken: 3}, tokensSeen(f.fake))
		assert.GreaterOrEqual(t, src.calls(), 3, "the source is asked on every request")
	})
	t.Run("token file re-read after it changes", func(t *testing.T) {
		f := newFixture(t)
		r := newRegistry(t, f.opts()...)
		_, err := r.GetService("greeter")
		require.NoError(t, err)
		tmp := writeFile(t, f.dir, "token.tmp", readToken+"\n", 0o600)
		require.NoError(t, os.Rename(tmp, f.tokenFile)) // Vault Agent style
		require.Eventually(t, func() bool {
			_, err := r.GetService("greeter")
			return err == nil && tokensSeen(f.fake)[readToken] > 0
		}, 5*time.Second, 50*time.Millisecond)
	})
	t.Run("token source error fails the call without the token", func(t *testing.T) {
		f := newFixture(t)
		src := &countingSource{tok: testToken}
		r := newRegistry(t, f.opts(securereg.Tokens(src))...)
		src.fail(errors.New("vault sealed"))
		_, err := r.GetService("greeter")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "vault sealed")
		assert.True(t, strings.HasPrefix(err.Error(), "securereg: "), "error %q", err)
		assert.Empty(t, f.fake.Requests())
	})
	t.Run("consul.Config token is used and its TLS is ours", func(t *testing.T) {
		f := newFixture(t)
		insecureClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		r := newRegistry(t,
			registry.Addrs(f.fake.Addr), securereg.ClientCert(f.certFile, f.keyFile), securereg.Logger(f.logger),
			consul.Config(&api.Config{
				Token:      readToken,
				Datacenter: "dc7",
				HttpClient: insecureClient,
				TLSConfig:  api.TLSConfig{CAFile: f.caFile},
			}))
		_, err := r.GetService("greeter")
		require.NoError(t, err)
		reqs := f.fake.Requests()
		require.Len(t, reqs, 1)
		assert.Equal(t, readToken, reqs[0].Token)
		assert.Contains(t, reqs[0].Query, "dc=dc7", "consul.Config fields other than client, TLS and token pass through")
	})
	t.Run("consul.Config HttpClient cannot bypass verification", func(t *testing.T) {
		clearEnv(t)
		rogue := testca.New(t)
		fake := fakeconsul.Start(t, fakeconsul.Config{Cert: rogue.Server(t).TLS(t), Tokens: map[string]fakeconsul.Role{testToken: fakeconsul.Write}})
		insecureClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		r := newRegistry(t, registry.Addrs(fake.Addr), securereg.Token(testToken), consul.Config(&api.Config{HttpClient: insecureClient}))
		_, err := r.GetService("greeter")
		require.Error(t, err)
		assert.Empty(t, fake.Requests())
	})
}

type countingSource struct {
	tok string
	mu  sync.Mutex // guards n and err
	n   int
	err error
}

func (c *countingSource) Token() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.tok, c.err
}

func (c *countingSource) calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *countingSource) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

func TestDevMode(t *testing.T) {
	t.Run("plain HTTP never carries the token", func(t *testing.T) {
		f := newFixture(t)
		plain := fakeconsul.Start(t, fakeconsul.Config{Plain: true, Tokens: map[string]fakeconsul.Role{testToken: fakeconsul.Write}})
		r := newRegistry(t, registry.Addrs("http://"+plain.Addr), securereg.Token(testToken), securereg.DevMode(), securereg.Logger(f.logger))
		_, err := r.GetService("greeter")
		require.NoError(t, err)
		assert.Equal(t, map[string]int{"": 1}, tokensSeen(plain))
		assert.False(t, r.Options().Secure)
		logs := f.logs.String()
		assert.Contains(t, logs, "DEVMODE IS ON")
		assert.Contains(t, logs, "the ACL token will not be sent")
		assert.Equal(t, 1, strings.Count(logs, "DEVMODE IS ON"), "warned once")
		_, err = r.GetService("greeter")
		require.NoError(t, err)
		assert.Equal(t, 1, strings.Count(f.logs.String(), "DEVMODE IS ON"), "warned once")
	})
	t.Run("skip verify reaches an untrusted server", func(t *testing.T) {
		f := newFixture(t)
		rogue := fakeconsul.Start(t, fakeconsul.Config{Cert: testca.New(t).Server(t).TLS(t), Tokens: map[string]fakeconsul.Role{testToken: fakeconsul.Write}})
		r := newRegistry(t, registry.Addrs(rogue.Addr), registry.TLSConfig(&tls.Config{InsecureSkipVerify: true}),
			securereg.Token(testToken), securereg.DevMode(), securereg.Logger(f.logger))
		_, err := r.GetService("greeter")
		require.NoError(t, err)
		assert.Contains(t, f.logs.String(), "verification is OFF")
	})
	t.Run("no token", func(t *testing.T) {
		f := newFixture(t)
		r := newRegistry(t, registry.Addrs(f.fake.Addr), securereg.CAFile(f.caFile), securereg.ClientCert(f.certFile, f.keyFile),
			securereg.DevMode(), securereg.Logger(f.logger))
		_, err := r.GetService("greeter")
		require.NoError(t, err)
		assert.Equal(t, map[string]int{"": 1}, tokensSeen(f.fake))
	})
}

func TestInitDowngradeRefused(t *testing.T) {
	tests := []struct {
		name string
		opt  func(f *fixture) registry.Option
		want error
	}{
		{"InsecureSkipVerify", func(*fixture) registry.Option { return registry.TLSConfig(&tls.Config{InsecureSkipVerify: true}) }, securereg.ErrInsecure},
		{"http address", func(f *fixture) registry.Option { return registry.Addrs("http://" + f.fake.Addr) }, securereg.ErrPlaintext},
		{"Secure(false)", func(*fixture) registry.Option { return registry.Secure(false) }, securereg.ErrPlaintext},
		{"DevMode", func(*fixture) registry.Option { return securereg.DevMode() }, securereg.ErrInsecure},
		{"consul.Config InsecureSkipVerify", func(*fixture) registry.Option {
			return consul.Config(&api.Config{TLSConfig: api.TLSConfig{InsecureSkipVerify: true}})
		}, securereg.ErrInsecure},
		{"blank token", func(*fixture) registry.Option { return securereg.Token("") }, securereg.ErrNoToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			r := newRegistry(t, f.opts()...)
			before := r.Options()
			err := r.Init(tt.opt(f))
			require.ErrorIs(t, err, tt.want)
			assertNoSecrets(t, "error", err.Error())

			// Still working, still secure.
			_, err = r.GetService("greeter")
			require.NoError(t, err)
			assert.Equal(t, before.Addrs, r.Options().Addrs)
			assert.True(t, r.Options().Secure)
			for _, req := range f.fake.Requests() {
				assert.Equal(t, 1, req.PeerCerts)
				assert.Equal(t, testToken, req.Token)
			}
		})
	}
}

func TestInit(t *testing.T) {
	t.Run("Init re-validates and applies new options", func(t *testing.T) {
		f := newFixture(t)
		second := fakeconsul.Start(t, fakeconsul.Config{Cert: f.ca.Server(t).TLS(t), ClientCA: f.ca.Pool(),
			Tokens: map[string]fakeconsul.Role{testToken: fakeconsul.Write}})
		r := newRegistry(t, f.opts()...)
		require.NoError(t, r.Init(registry.Addrs(second.Addr)))
		_, err := r.GetService("greeter")
		require.NoError(t, err)
		assert.Len(t, second.Requests(), 1)
		assert.Empty(t, f.fake.Requests())
	})
	t.Run("Init fixes a registry that failed construction", func(t *testing.T) {
		f := newFixture(t)
		dr := securereg.NewRegistry(registry.Addrs(f.fake.Addr), securereg.CAFile(f.caFile), securereg.ClientCert(f.certFile, f.keyFile), securereg.Logger(f.logger))
		_, err := dr.GetService("greeter")
		require.ErrorIs(t, err, securereg.ErrNoToken)
		require.NoError(t, dr.Init(securereg.TokenFile(f.tokenFile)))
		_, err = dr.GetService("greeter")
		require.NoError(t, err)
		require.NoError(t, dr.(*securereg.Registry).Close())
	})
}

func TestRedaction(t *testing.T) {
	f := newFixture(t)
	r := newRegistry(t, f.opts(securereg.Token(testToken))...)
	src := securereg.StaticTokenSource(testToken)
	values := map[string]any{
		"registry":        r,
		"options":         r.Options(),
		"options ptr":     func() *registry.Options { o := r.Options(); return &o }(),
		"options context": r.Options().Context,
		"token option":    securereg.Token(testToken),
		"static source":   src,
		"file source":     securereg.FileTokenSource(f.tokenFile),
		"drop-in registry": func() registry.Registry {
			dr := securereg.NewRegistry(f.opts(securereg.Token(testToken))...)
			t.Cleanup(func() { _ = dr.(*securereg.Registry).Close() })
			return dr
		}(),
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			assertNoSecrets(t, name+" "+verb, fmt.Sprintf(verb, v))
		}
	}
	// The placeholder is internal too: Consul never sees it.
	_, err := r.GetService("greeter")
	require.NoError(t, err)
	for _, req := range f.fake.Requests() {
		assert.Equal(t, testToken, req.Token)
	}
}

func TestCallerTLSConfigIsClonedNotMutated(t *testing.T) {
	f := newFixture(t)
	orig := &tls.Config{
		RootCAs:          f.ca.Pool(),
		CurvePreferences: []tls.CurveID{tls.CurveP256, tls.X25519},
		ServerName:       "localhost",
	}
	snapshot := orig.Clone()
	r := newRegistry(t, registry.Addrs(f.fake.Addr), registry.TLSConfig(orig),
		securereg.ClientCert(f.certFile, f.keyFile), securereg.TokenFile(f.tokenFile))
	_, err := r.GetService("greeter")
	require.NoError(t, err)
	assert.Nil(t, orig.GetClientCertificate, "caller's config must not be mutated")
	assert.Equal(t, snapshot.MinVersion, orig.MinVersion)
	assert.Equal(t, snapshot.ServerName, orig.ServerName)
	assert.Equal(t, snapshot.NextProtos, orig.NextProtos)

	built, err := securereg.NewTLSConfig(registry.Addrs(f.fake.Addr), registry.TLSConfig(orig),
		securereg.ClientCert(f.certFile, f.keyFile), securereg.TokenFile(f.tokenFile))
	require.NoError(t, err)
	assert.Equal(t, orig.CurvePreferences, built.CurvePreferences, "unrelated fields come through")
	assert.Same(t, orig.RootCAs, built.RootCAs)
	assert.Equal(t, "localhost", built.ServerName)
	assert.Equal(t, uint16(tls.VersionTLS12), built.MinVersion)
	assert.False(t, built.InsecureSkipVerify)
	assert.NotNil(t, built.GetClientCertificate)
}

func TestTimeout(t *testing.T) {
	clearEnv(t)
	ca := testca.New(t)
	release := make(chan struct{})
	slow := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	slow.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server(t).TLS(t)}}
	slow.StartTLS()
	t.Cleanup(func() { close(release); slow.Close() })
	dir := t.TempDir()
	r := newRegistry(t, registry.Addrs(slow.Listener.Addr().String()), registry.Timeout(100*time.Millisecond),
		securereg.CAFile(ca.WriteCA(t, dir, "ca.pem")), securereg.Token(testToken))
	_, err := r.GetService("greeter")
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestClose(t *testing.T) {
	f := newFixture(t)
	r, err := securereg.New(f.opts()...)
	require.NoError(t, err)
	w, err := r.Watch(registry.WatchService("greeter"))
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "Close is idempotent")
	_, err = w.Next()
	assert.ErrorIs(t, err, registry.ErrWatcherStopped)
	_, err = r.GetService("greeter")
	assert.ErrorIs(t, err, securereg.ErrClosed)
	assert.ErrorIs(t, r.Init(), securereg.ErrClosed)
}

func TestBadServiceInput(t *testing.T) {
	f := newFixture(t)
	r := newRegistry(t, f.opts()...)
	for name, s := range map[string]*registry.Service{
		"nil":      nil,
		"no nodes": {Name: "x"},
		"nil node": {Name: "x", Nodes: []*registry.Node{nil}},
	} {
		t.Run(name, func(t *testing.T) {
			assert.ErrorIs(t, r.Register(s), securereg.ErrInvalidConfig)
			assert.ErrorIs(t, r.Deregister(s), securereg.ErrInvalidConfig)
		})
	}
}

func TestString(t *testing.T) {
	f := newFixture(t)
	r := newRegistry(t, f.opts()...)
	assert.Equal(t, "consul", r.String(), "go-micro's MICRO_REGISTRY=consul must keep this registry")
}

// TestCloseStopsWatchers checks that no watcher goroutine outlives Close.
func TestCloseStopsWatchers(t *testing.T) {
	f := newFixture(t)
	r, err := securereg.New(f.opts()...)
	require.NoError(t, err)
	require.NoError(t, r.Register(testService("greeter", "g1")))
	for range 3 {
		_, err := r.Watch(registry.WatchService("greeter"))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return countGoroutines("securereg.(*svcWatcher).run") > 0 }, 5*time.Second, 10*time.Millisecond,
		"watch goroutines should be running")
	require.NoError(t, r.Close())
	require.Eventually(t, func() bool { return countGoroutines("securereg.(*svcWatcher).run") == 0 }, 5*time.Second, 10*time.Millisecond,
		"watch goroutines still running after Close:\n%s", goroutines("securereg.(*svcWatcher).run"))
}

func TestConcurrentUse(t *testing.T) {
	f := newFixture(t)
	r := newRegistry(t, f.opts()...)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := testService("greeter", fmt.Sprintf("g-%d", i))
			if err := r.Register(svc); err != nil {
				errs <- err
				return
			}
			if _, err := r.GetService("greeter"); err != nil {
				errs <- err
			}
			_ = r.Options()
			if i%25 == 0 {
				if err := r.Init(registry.Timeout(10 * time.Second)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := r.GetService("greeter")
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Len(t, got[0].Nodes, 100)
}

// goroutineStacks returns the stacks of the goroutines whose stack
// mentions substr.
func goroutineStacks(substr string) []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, substr) {
			out = append(out, g)
		}
	}
	return out
}

func goroutines(substr string) string { return strings.Join(goroutineStacks(substr), "\n\n") }

func countGoroutines(substr string) int { return len(goroutineStacks(substr)) }

// TestWatchStopRightAway is the regression test for consul/api's watch.Plan,
// which the plugin's watcher uses: stopped before its first query started,
// it panicked in its own goroutine and took the process down.
func TestWatchStopRightAway(t *testing.T) {
	f := newFixture(t)
	r := newRegistry(t, f.opts()...)
	for range 200 {
		w, err := r.Watch(registry.WatchService("greeter"))
		require.NoError(t, err)
		w.Stop()
		_, err = w.Next()
		require.ErrorIs(t, err, registry.ErrWatcherStopped)
	}
	for range 20 {
		r2, err := securereg.New(f.opts()...)
		require.NoError(t, err)
		_, err = r2.Watch(registry.WatchService("greeter"))
		require.NoError(t, err)
		require.NoError(t, r2.Close())
	}
	_, err := r.Watch()
	assert.ErrorIs(t, err, securereg.ErrInvalidConfig, "a service name is required")
}

func TestFailover(t *testing.T) {
	f := newFixture(t)
	down, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := down.Addr().String()
	require.NoError(t, down.Close()) // nothing listens there now

	r := newRegistry(t, f.opts(registry.Addrs(deadAddr, f.fake.Addr))...)
	assert.Equal(t, []string{deadAddr, f.fake.Addr}, r.Options().Addrs)
	for range 3 {
		_, err := r.GetService("greeter")
		require.NoError(t, err, "the second address answers")
	}
	require.NoError(t, r.Register(testService("greeter", "g1")), "writes fail over too")
	assert.Contains(t, f.logs.String(), "failed over")
	assert.Equal(t, 1, strings.Count(f.logs.String(), "failed over"), "then it stays on the address that works")
	for _, req := range f.fake.Requests() {
		assert.Equal(t, testToken, req.Token)
	}

	t.Run("no address answers", func(t *testing.T) {
		r := newRegistry(t, f.opts(registry.Addrs(deadAddr, deadAddr))...)
		_, err := r.GetService("greeter")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "connection refused")
	})
}
