package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/securereg/securereg/consultest"
	"github.com/securereg/securereg/internal/testca"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cli runs the command in-process and returns its exit code and output.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

type report struct {
	Checks []struct {
		Name, Status, Detail string
	} `json:"checks"`
}

func (r report) status(prefix string) string {
	for _, c := range r.Checks {
		if strings.HasPrefix(c.Name, prefix) {
			return c.Status
		}
	}
	return "missing"
}

func TestCheckAgainstConsul(t *testing.T) {
	srv := consultest.Start(t)
	lp := srv.TokenFor(t, "greeter")
	lpFile := srv.WriteTokenFile(t, lp)
	mgmtFile := srv.WriteTokenFile(t, srv.ManagementToken)
	env := map[string]string{
		"CONSUL_HTTP_ADDR":       srv.Addr,
		"CONSUL_CACERT":          srv.CAFile,
		"CONSUL_CLIENT_CERT":     srv.ClientCertFile,
		"CONSUL_CLIENT_KEY":      srv.ClientKeyFile,
		"CONSUL_TLS_SERVER_NAME": srv.ServerName,
		"CONSUL_HTTP_TOKEN_FILE": lpFile,
		"CONSUL_HTTP_TOKEN":      "",
		"CONSUL_CAPATH":          "",
		"CONSUL_HTTP_SSL":        "",
		"CONSUL_HTTP_SSL_VERIFY": "",
		"MICRO_REGISTRY_ADDRESS": "",
	}
	var all strings.Builder // every byte the command printed
	setEnv := func(t *testing.T, overrides map[string]string) {
		for k, v := range env {
			t.Setenv(k, v)
		}
		for k, v := range overrides {
			t.Setenv(k, v)
		}
	}
	otherCA := testca.New(t).WriteCA(t, t.TempDir(), "other-ca.pem")

	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
		check    func(t *testing.T, stdout string)
	}{
		{"good config, JSON", nil, []string{"check", "--service", "greeter", "--json"}, 0, func(t *testing.T, out string) {
			var r report
			require.NoError(t, json.Unmarshal([]byte(out), &r), out)
			for _, name := range []string{"configuration", "tls ", "mtls ", "token", "least privilege", "plaintext "} {
				assert.Equal(t, "pass", r.status(name), "%s in %s", name, out)
			}
		}},
		{"good config, table", nil, []string{"check", "--service", "greeter"}, 0, func(t *testing.T, out string) {
			assert.Contains(t, out, "STATUS")
			assert.Contains(t, out, "result: pass")
		}},
		{"management token warns", map[string]string{"CONSUL_HTTP_TOKEN_FILE": mgmtFile}, []string{"check", "--json"}, 0, func(t *testing.T, out string) {
			var r report
			require.NoError(t, json.Unmarshal([]byte(out), &r))
			assert.Equal(t, "warn", r.status("token"))
			assert.Contains(t, out, "global-management")
		}},
		{"management token with --strict", map[string]string{"CONSUL_HTTP_TOKEN_FILE": mgmtFile}, []string{"check", "--strict"}, 1, nil},
		{"token flag wins over env", map[string]string{"CONSUL_HTTP_TOKEN_FILE": mgmtFile}, []string{"check", "--token-file", lpFile, "--service", "greeter", "--strict"}, 0, nil},
		{"wrong CA", nil, []string{"check", "--ca-file", otherCA}, 1, func(t *testing.T, out string) {
			assert.Contains(t, out, "not signed by a trusted CA")
		}},
		{"missing client cert", map[string]string{"CONSUL_CLIENT_CERT": "", "CONSUL_CLIENT_KEY": ""}, []string{"check", "--json"}, 1, func(t *testing.T, out string) {
			var r report
			require.NoError(t, json.Unmarshal([]byte(out), &r))
			assert.Equal(t, "fail", r.status("tls "))
		}},
		{"bad env value", map[string]string{"CONSUL_HTTP_SSL_VERIFY": "sometimes"}, []string{"check"}, 2, nil},
		{"insecure env is a failed check", map[string]string{"CONSUL_HTTP_SSL_VERIFY": "false"}, []string{"check"}, 1, nil},
		{"unknown flag", nil, []string{"check", "--nope"}, 2, nil},
		{"stray argument", nil, []string{"check", "extra"}, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, tt.env)
			code, out, errOut := cli(t, tt.args...)
			all.WriteString(out + errOut)
			assert.Equal(t, tt.wantCode, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
			if tt.check != nil {
				tt.check(t, out)
			}
		})
	}
	for _, secret := range []string{lp, srv.ManagementToken} {
		assert.NotContains(t, all.String(), secret, "a token in the command's output")
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{nil, 2, "Usage:"},
		{[]string{"--help"}, 0, "securereg check"},
		{[]string{"--version"}, 0, "securereg "},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"check", "--help"}, 0, "--token-file"},
		{[]string{"policy"}, 2, "--service NAME is required"},
		{[]string{"policy", "--service", `bad"name`}, 2, "not a valid service name"},
		{[]string{"policy", "--service", "greeter", "--discover", ","}, 2, "give all, none or service names"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := cli(t, tt.args...)
			assert.Equal(t, tt.wantCode, code)
			assert.Contains(t, out+errOut, tt.want)
		})
	}
}

func TestPolicy(t *testing.T) {
	tests := []struct {
		discover string
		want     []string
		not      []string
	}{
		{"all", []string{`service "greeter"`, `node_prefix ""`, `service_prefix ""`, "consul acl policy create", "consul acl token create"}, nil},
		{"none", []string{`service "greeter"`, `node_prefix ""`}, []string{"service_prefix"}},
		{"billing,users", []string{`service "billing" {` + "\n  policy = \"read\"", `service "users"`}, []string{"service_prefix"}},
	}
	for _, tt := range tests {
		t.Run(tt.discover, func(t *testing.T) {
			code, out, _ := cli(t, "policy", "--service", "greeter", "--discover", tt.discover)
			require.Equal(t, 0, code)
			for _, w := range tt.want {
				assert.Contains(t, out, w)
			}
			for _, n := range tt.not {
				assert.NotContains(t, out, n)
			}
		})
	}
}
