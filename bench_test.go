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
	rawClient := func(gzip bool) *api.Client {
		tr := cleanhttp.DefaultPooledTransport()
		tr.TLSClientConfig = tlsCfg
		tr.ForceAttemptHTTP2 = true
		tr.DisableCompression = !gzip
		c, err := api.NewClient(&api.Config{Address: srv.Addr, Scheme: "https", Token: tok, HttpClient: &http.Client{Transport: tr}})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	b.Run("securereg", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.GetService("bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Raw consul/api as users set it up, and with each of the levers
	// securereg could pull: no gzip, the agent cache.
	for _, rc := range []struct {
		name string
		c    *api.Client
		q    *api.QueryOptions
	}{
		{"raw-api", rawClient(true), &api.QueryOptions{AllowStale: true}},
		{"raw-api-nogzip", rawClient(false), &api.QueryOptions{AllowStale: true}},
		{"raw-api-cached", rawClient(true), &api.QueryOptions{AllowStale: true, UseCache: true}},
	} {
		b.Run(rc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := rc.c.Health().Service("bench", "", false, rc.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
