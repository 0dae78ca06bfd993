package consultest

import (
	"fmt"
	"github.com/securereg/securereg/internal/agent"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Skip and Fatal instead of acting.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skip(args ...any)               { r.skipped = fmt.Sprint(args...) }
func (r *recorder) Fatalf(format string, a ...any) { r.failed = fmt.Sprintf(format, a...) }

func TestUnavailableSkipsOrFails(t *testing.T) {
	t.Setenv(EnvRequired, "")
	r := &recorder{TB: t}
	unavailable(r, "no consul here")
	if r.skipped != "no consul here" || r.failed != "" {
		t.Errorf("without %s: skipped=%q failed=%q; want a skip", EnvRequired, r.skipped, r.failed)
	}

	t.Setenv(EnvRequired, "1")
	r = &recorder{TB: t}
	unavailable(r, "no consul here")
	if !strings.Contains(r.failed, "no consul here") || !strings.Contains(r.failed, EnvRequired+"=1") {
		t.Errorf("with %s=1: failed=%q; want a failure naming the reason and the variable", EnvRequired, r.failed)
	}
}

func TestChooseBackend(t *testing.T) {
	dir := t.TempDir()
	fakeBin := filepath.Join(dir, "consul")
	if err := os.WriteFile(fakeBin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		s           settings
		wantBackend string
		wantReason  string
	}{
		{"forced binary with CONSUL_BIN", settings{backend: "binary", binary: fakeBin}, BackendBinary, ""},
		{"forced binary, missing file", settings{backend: "binary", binary: filepath.Join(dir, "nope")}, "", "CONSUL_TEST_BACKEND=binary"},
		{"unknown backend", settings{backend: "podman"}, "", `"podman" is not container or binary`},
		{"forced container, image missing", settings{backend: "container", image: "securereg/does-not-exist:0"}, "", "make consul-image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.s
			backend, reason := chooseBackend(&s)
			if backend != tt.wantBackend {
				t.Errorf("backend = %q; want %q (reason %q)", backend, tt.wantBackend, reason)
			}
			if tt.wantReason != "" && !strings.Contains(reason, tt.wantReason) {
				t.Errorf("reason = %q; want it to contain %q", reason, tt.wantReason)
			}
		})
	}
}

func TestAgentConfigIsSecure(t *testing.T) {
	b, err := agent.Config("/c", "/d", "127.0.0.1", agent.Ports{HTTP: -1, HTTPS: 8501, DNS: -1, GRPC: -1, GRPCTLS: -1, SerfLAN: 8301, SerfWAN: -1, Server: 8300}, "m", "a")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"http": -1`, `"verify_incoming": true`, `"verify_server_hostname": true`,
		`"tls_min_version": "TLSv1_2"`, `"default_policy": "deny"`, `"initial_management": "m"`, `"agent": "a"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("agent config lacks %s:\n%s", want, b)
		}
	}
}
