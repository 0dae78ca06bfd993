package securereg

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCheckPlaintext(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(tokenHeader) != "" {
			t.Error("a plaintext probe must not carry a token")
		}
		w.Header().Set("X-Consul-Index", "1")
		_, _ = w.Write([]byte(`"127.0.0.1:8300"`))
	}))
	defer plain.Close()
	tlsOnly := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsOnly.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freePort := portOf(free.Addr().String())
	_ = free.Close()

	tests := []struct {
		name, port string
		want       CheckStatus
	}{
		{"plain HTTP answers", portOf(plain.Listener.Addr().String()), CheckWarn},
		{"TLS only", portOf(tlsOnly.Listener.Addr().String()), CheckPass},
		{"nothing listens", freePort, CheckPass},
		{"same port as HTTPS", "8501", CheckPass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := &Report{}
			checkPlaintextPort(context.Background(), rep, "127.0.0.1:8501", tt.port)
			if assert.Len(t, rep.Checks, 1) {
				assert.Equal(t, tt.want, rep.Checks[0].Status, rep.Checks[0].Detail)
			}
		})
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func TestReportStatus(t *testing.T) {
	r := &Report{}
	assert.Equal(t, CheckPass, r.Status())
	r.add("a", CheckPass, "ok")
	assert.Equal(t, CheckPass, r.Status())
	r.add("b", CheckWarn, "hm")
	assert.Equal(t, CheckWarn, r.Status())
	r.add("c", CheckFail, "no")
	r.add("d", CheckWarn, "hm")
	assert.Equal(t, CheckFail, r.Status())
	c, ok := r.Get("c")
	assert.True(t, ok)
	assert.Equal(t, "no", c.Detail)
}
