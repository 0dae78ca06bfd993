package securereg_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-cleanhttp"
	"github.com/securereg/securereg"
	"github.com/securereg/securereg/consultest"
)

// BenchmarkGetService is securereg's GetService against raw consul/api on
// a real Consul (skipped without one). make bench has the full comparison.
func BenchmarkGetService(b *testing.B) {
	srv := consultest.Start(b)
	admin, err := securereg.New(srv.Options()...)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	for i := range 5 {
		s := testService("bench", fmt.Sprintf("bench-%d", i))
		if err := admin.Register(s); err != nil {
			b.Fatal(err)
		}
	}
	tok := srv.TokenFor(b, "bench-client")
	r, err := securereg.New(append(srv.Options(), securereg.Token(tok))...)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	tlsCfg, err := securereg.NewTLSConfig(srv.Options()...)
	if err != nil {
		b.Fatal(err)
	}
	tr := cleanhttp.DefaultPooledTransport()
	tr.TLSClientConfig = tlsCfg
	tr.ForceAttemptHTTP2 = true
	raw, err := api.NewClient(&api.Config{Address: srv.Addr, Scheme: "https", Token: tok, HttpClient: &http.Client{Transport: tr}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("securereg", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.GetService("bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
	tr2 := cleanhttp.DefaultPooledTransport()
	tr2.TLSClientConfig = tlsCfg
	tr2.ForceAttemptHTTP2 = true
	tr2.DisableCompression = true
	raw2, err := api.NewClient(&api.Config{Address: srv.Addr, Scheme: "https", Token: tok, HttpClient: &http.Client{Transport: tr2}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("raw-api-nogzip", func(b *testing.B) {
		b.ReportAllocs()
		q := &api.QueryOptions{AllowStale: true}
		for b.Loop() {
			if _, _, err := raw2.Health().Service("bench", "", false, q); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-api-cached", func(b *testing.B) {
		b.ReportAllocs()
		q := &api.QueryOptions{AllowStale: true, UseCache: true}
		for b.Loop() {
			if _, _, err := raw.Health().Service("bench", "", false, q); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-api", func(b *testing.B) {
		b.ReportAllocs()
		q := &api.QueryOptions{AllowStale: true}
		for b.Loop() {
			if _, _, err := raw.Health().Service("bench", "", false, q); err != nil {
				b.Fatal(err)
			}
		}
	})
}
