package securereg

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/securereg/securereg/internal/testca"
	"go-micro.dev/v4/registry"
)

// newConsulStyleRequest builds a request the way consul/api does: a fresh
// header map holding the configured (placeholder) token.
func newConsulStyleRequest(b *testing.B, url string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header = http.Header{tokenHeader: []string{placeholderToken}}
	return req
}

// BenchmarkTokenTransport measures what token injection adds to a request:
// compare token with bare (same request construction, same base).
func BenchmarkTokenTransport(b *testing.B) {
	resp := &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}
	base := roundTripFunc(func(*http.Request) (*http.Response, error) { return resp, nil })
	path := filepath.Join(b.TempDir(), "token")
	if err := os.WriteFile(path, []byte(internalToken), 0o600); err != nil {
		b.Fatal(err)
	}
	watched := FileTokenSource(path).(*fileToken)
	watched.watched.Add(1)
	if _, err := watched.Token(); err != nil {
		b.Fatal(err)
	}
	// What a rotatingTransport adds, its atomic load, in front of the no-op base.
	rot := &rotatingTransport{}
	rot.cur.Store(&http.Transport{})
	rotBase := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		_ = rot.cur.Load()
		return base(req)
	})
	for _, bc := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"bare", base},
		{"static-token", &tokenTransport{base: base, src: StaticTokenSource(internalToken)}},
		{"rotating-file-token", &tokenTransport{base: rotBase, src: watched}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.rt.RoundTrip(newConsulStyleRequest(b, "https://consul:8501/v1/health/service/x")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTokenTransportHTTPTest is the same over real TLS round trips to
// an httptest server: the injection is lost in the noise of a request.
func BenchmarkTokenTransportHTTPTest(b *testing.B) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "[]")
	}))
	defer srv.Close()
	tr := srv.Client().Transport.(*http.Transport)
	for _, bc := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"bare", tr},
		{"token", &tokenTransport{base: tr, src: StaticTokenSource(internalToken)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := &http.Client{Transport: bc.rt}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.Do(newConsulStyleRequest(b, srv.URL+"/v1/health/service/x"))
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
}

// BenchmarkNew is New with a CA file, a client certificate and a token file.
func BenchmarkNew(b *testing.B) {
	for _, k := range []string{EnvHTTPAddr, EnvHTTPToken, EnvHTTPTokenFile, EnvCACert, EnvCAPath, EnvClientCert, EnvClientKey, EnvTLSServerName, EnvHTTPSSL, EnvHTTPSSLVerify, EnvRegistryAddress} {
		b.Setenv(k, "")
	}
	dir := b.TempDir()
	ca := testca.New(b)
	caFile := ca.WriteCA(b, dir, "ca.pem")
	cert, key := ca.Client(b, "c").Write(b, dir, "client")
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(internalToken), 0o600); err != nil {
		b.Fatal(err)
	}
	opts := []registry.Option{CAFile(caFile), ClientCert(cert, key), TokenFile(tok)}
	b.ReportAllocs()
	for b.Loop() {
		r, err := New(opts...)
		if err != nil {
			b.Fatal(err)
		}
		_ = r.Close()
	}
}

// BenchmarkDecode decodes a 5-instance health answer: the plugin's decoder
// against the cached one.
func BenchmarkDecode(b *testing.B) {
	tagsOf := func(i int) []string {
		t := pluginEncodeMetadata(map[string]string{"protocol": "grpc", "registry": "consul", "server": "grpc", "transport": "grpc", "broker": "http"})
		t = append(t, pluginEncodeEndpoints([]*registry.Endpoint{
			{Name: "Greeter.Hello", Metadata: map[string]string{"stream": "false"},
				Request:  &registry.Value{Name: "Request", Type: "Request", Values: []*registry.Value{{Name: "name", Type: "string"}}},
				Response: &registry.Value{Name: "Response", Type: "Response", Values: []*registry.Value{{Name: "msg", Type: "string"}}}},
			{Name: "Greeter.Stream", Metadata: map[string]string{"stream": "true"}},
		})...)
		return append(t, pluginEncodeVersion("latest")...)
	}
	var entries []*healthEntry
	for i := range 5 {
		e := &healthEntry{}
		e.Node = &struct{ Address string }{Address: "10.0.0.1"}
		e.Service = &struct {
			ID      string
			Service string
			Tags    []string
			Address string
			Port    int
		}{ID: "greeter-" + string(rune('a'+i)), Service: "greeter", Port: 9000 + i, Tags: tagsOf(i)}
		entries = append(entries, e)
	}
	b.Run("plugin", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, e := range entries {
				_, _ = pluginDecodeVersion(e.Service.Tags)
				_ = pluginDecodeEndpoints(e.Service.Tags)
				_ = pluginDecodeMetadata(e.Service.Tags)
			}
		}
	})
	b.Run("securereg", func(b *testing.B) {
		d := newTagDecoder()
		b.ReportAllocs()
		for b.Loop() {
			_ = d.services("greeter", entries)
		}
	})
}
