package securereg_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-micro/plugins/v4/registry/consul"
	"github.com/hashicorp/consul/api"
	"github.com/securereg/securereg"
	"github.com/securereg/securereg/consultest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go-micro.dev/v4/registry"
)

// TestIntegrationDifferential registers random services, half through the
// stock plugin and half through securereg, and checks that both read every
// one of them identically from the same Consul: the two interoperate.
func TestIntegrationDifferential(t *testing.T) {
	clearEnv(t)
	srv := consultest.Start(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed^0x5eed))

	ours := newRegistry(t, srv.Options()...)
	tlsCfg, err := securereg.NewTLSConfig(srv.Options()...)
	require.NoError(t, err)
	stock := consul.NewRegistry(registry.Addrs(srv.Addr), registry.TLSConfig(tlsCfg),
		consul.Config(&api.Config{Token: srv.ManagementToken}))

	var svcNames []string
	for i := range 12 {
		name := fmt.Sprintf("svc-%d-%s", i, randWord(rnd, 4))
		svcNames = append(svcNames, name)
		for v := range 1 + rnd.IntN(2) {
			for n := range 1 + rnd.IntN(3) {
				s := randService(rnd, name, fmt.Sprintf("%d.%d.0", v, rnd.IntN(10)), fmt.Sprintf("%s-%d-%d", name, v, n))
				via := registry.Registry(ours)
				if (i+n)%2 == 0 {
					via = stock
				}
				require.NoError(t, via.Register(s), "register %s via %s", s.Nodes[0].Id, via.String())
			}
		}
	}
	for _, name := range svcNames {
		a, err := ours.GetService(name)
		require.NoError(t, err)
		b, err := stock.GetService(name)
		require.NoError(t, err)
		sortServices(a)
		sortServices(b)
		require.NotEmpty(t, a)
		assert.Equal(t, b, a, "service %s", name)
	}
	la, err := ours.ListServices()
	require.NoError(t, err)
	lb, err := stock.ListServices()
	require.NoError(t, err)
	assert.ElementsMatch(t, names(lb), names(la))
}

func randWord(r *rand.Rand, n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[r.IntN(len(letters))]
	}
	return string(b)
}

func randText(r *rand.Rand) string {
	parts := []string{"a", "é", "=", ",", "\"", " ", "{", "}", "ü", "1", "-", "/", "\\"}
	var b strings.Builder
	for range 1 + r.IntN(12) {
		b.WriteString(parts[r.IntN(len(parts))])
	}
	return b.String()
}

func randService(r *rand.Rand, name, version, id string) *registry.Service {
	md := map[string]string{}
	for range r.IntN(4) {
		md[randWord(r, 3)] = randText(r)
	}
	var eps []*registry.Endpoint
	for i := range r.IntN(4) {
		ep := &registry.Endpoint{Name: fmt.Sprintf("%s.M%d", name, i), Metadata: map[string]string{"stream": fmt.Sprint(r.IntN(2) == 0)}}
		if r.IntN(2) == 0 {
			ep.Request = &registry.Value{Name: "Req", Type: "Req", Values: []*registry.Value{{Name: randWord(r, 5), Type: "string"}}}
			ep.Response = &registry.Value{Name: "Rsp", Type: "Rsp"}
		}
		eps = append(eps, ep)
	}
	return &registry.Service{Name: name, Version: version, Endpoints: eps,
		Nodes: []*registry.Node{{Id: id, Address: fmt.Sprintf("127.0.0.1:%d", 20000+r.IntN(10000)), Metadata: md}}}
}

func sortServices(s []*registry.Service) {
	slices.SortFunc(s, func(a, b *registry.Service) int { return strings.Compare(a.Version, b.Version) })
	for _, x := range s {
		slices.SortFunc(x.Nodes, func(a, b *registry.Node) int { return strings.Compare(a.Id, b.Id) })
	}
}
