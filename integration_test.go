package securereg_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-micro/plugins/v4/registry/consul"
	"github.com/hashicorp/consul/api"
	"github.com/securereg/securereg"
	"github.com/securereg/securereg/consultest"
	"github.com/securereg/securereg/internal/testca"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go-micro.dev/v4"
	"go-micro.dev/v4/broker"
	"go-micro.dev/v4/client"
	"go-micro.dev/v4/registry"
	"go-micro.dev/v4/selector"
	"go-micro.dev/v4/server"
)

// The integration tests run against a real Consul 1.16.1 with HTTPS,
// verify_incoming and ACL default deny (package consultest). They skip when
// no Consul is available, and fail instead with CONSUL_TEST_REQUIRED=1.

// leastPrivilege returns a registry for service using a least-privilege
// token read from a file, over mTLS.
func leastPrivilege(t *testing.T, srv *consultest.Server, service string, extra ...registry.Option) (*securereg.Registry, string) {
	t.Helper()
	tok := srv.TokenFor(t, service)
	file := srv.WriteTokenFile(t, tok)
	opts := append(srv.Options(), securereg.TokenFile(file))
	return newRegistry(t, append(opts, extra...)...), tok
}

func TestIntegrationLifecycle(t *testing.T) {
	clearEnv(t)
	srv := consultest.Start(t)
	r, tok := leastPrivilege(t, srv, "greeter")

	w, err := r.Watch(registry.WatchService("greeter"))
	require.NoError(t, err)
	defer w.Stop()
	events := watchEvents(t, w)

	a := testService("greeter", "greeter-a")
	b := testService("greeter", "greeter-b")
	b.Nodes[0].Address = "127.0.0.1:9091"

	// Register without a TTL, then with one.
	require.NoError(t, r.Register(a))
	events.waitFor(t, "create greeter-a", func(res *registry.Result) bool {
		return res.Action == "create" && hasNode(res.Service, "greeter-a")
	})
	require.NoError(t, r.Register(b, registry.RegisterTTL(time.Minute)))
	events.waitFor(t, "update with greeter-b", func(res *registry.Result) bool {
		return res.Action == "update" && hasNode(res.Service, "greeter-a") && hasNode(res.Service, "greeter-b")
	})
	// Registering the same service again is a no-op or a TTL pass.
	require.NoError(t, r.Register(b, registry.RegisterTTL(time.Minute)))

	got, err := r.GetService("greeter")
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.ElementsMatch(t, []string{"greeter-a", "greeter-b"}, nodeIDs(got[0]))

	list, err := r.ListServices()
	require.NoError(t, err)
	var names []string
	for _, s := range list {
		names = append(names, s.Name)
	}
	assert.Contains(t, names, "greeter")

	require.NoError(t, r.Deregister(a))
	events.waitFor(t, "delete greeter-a", func(res *registry.Result) bool {
		return res.Action == "delete" && hasNode(res.Service, "greeter-a")
	})
	require.NoError(t, r.Deregister(b))
	events.waitFor(t, "delete greeter-b", func(res *registry.Result) bool {
		return res.Action == "delete" && hasNode(res.Service, "greeter-b")
	})
	require.Eventually(t, func() bool {
		got, err := r.GetService("greeter")
		return err == nil && len(got) == 0
	}, 10*time.Second, 100*time.Millisecond, "the catalog keeps a deregistered service")
	// The watch's blocking queries carried the token too: had they not,
	// default deny would have shown it no service and no event above.
	_ = tok
}

// TestIntegrationConformance registers services of several shapes and
// checks that what comes back is what went in, and that the stock plugin
// reads the same data identically.
func TestIntegrationConformance(t *testing.T) {
	clearEnv(t)
	srv := consultest.Start(t)
	r := newRegistry(t, srv.Options()...) // management token: it registers several names

	services := []*registry.Service{
		{Name: "alpha", Version: "1.0.0", Nodes: []*registry.Node{{Id: "alpha-1", Address: "127.0.0.1:7001"}}},
		{Name: "beta", Version: "2.3.4", Nodes: []*registry.Node{
			{Id: "beta-1", Address: "127.0.0.1:7101", Metadata: map[string]string{"zone": "a", "protocol": "grpc"}},
			{Id: "beta-2", Address: "127.0.0.1:7102", Metadata: map[string]string{"zone": "b", "protocol": "grpc"}},
		}},
		{Name: "gamma", Version: "0.0.1-rc.1", Nodes: []*registry.Node{{Id: "gamma-1", Address: "127.0.0.1:7201", Metadata: map[string]string{"x": "y=z,w"}}},
			Endpoints: []*registry.Endpoint{
				{Name: "Gamma.Call", Request: &registry.Value{Name: "Request", Type: "Request", Values: []*registry.Value{{Name: "name", Type: "string"}}},
					Response: &registry.Value{Name: "Response", Type: "Response"}, Metadata: map[string]string{"stream": "false"}},
				{Name: "Gamma.Stream", Metadata: map[string]string{"stream": "true"}},
			}},
		{Name: "delta.with.dots", Version: "latest", Nodes: []*registry.Node{{Id: "delta-1", Address: "127.0.0.1:7301", Metadata: map[string]string{"long": strings.Repeat("v", 300)}}}},
	}
	for _, s := range services {
		for _, n := range s.Nodes {
			one := *s
			one.Nodes = []*registry.Node{n}
			require.NoError(t, r.Register(&one), "register %s/%s", s.Name, n.Id)
		}
	}
	t.Cleanup(func() {
		for _, s := range services {
			for _, n := range s.Nodes {
				one := *s
				one.Nodes = []*registry.Node{n}
				assert.NoError(t, r.Deregister(&one))
			}
		}
	})

	tlsCfg, err := securereg.NewTLSConfig(srv.Options()...)
	require.NoError(t, err)
	stock := consul.NewRegistry(registry.Addrs(srv.Addr), registry.TLSConfig(tlsCfg),
		consul.Config(&api.Config{Token: srv.ManagementToken}))

	for _, want := range services {
		t.Run(want.Name, func(t *testing.T) {
			got, err := r.GetService(want.Name)
			require.NoError(t, err)
			require.Len(t, got, 1)
			norm(got[0])
			exp := *want
			exp.Metadata = nil // the plugin's encoding keeps node, not service, metadata
			exp.Nodes = slices.Clone(want.Nodes)
			norm(&exp)
			assert.Equal(t, &exp, got[0])

			fromStock, err := stock.GetService(want.Name)
			require.NoError(t, err)
			require.Len(t, fromStock, 1)
			norm(fromStock[0])
			assert.Equal(t, fromStock[0], got[0], "identical to the stock plugin's reading")
		})
	}
	ours, err := r.ListServices()
	require.NoError(t, err)
	theirs, err := stock.ListServices()
	require.NoError(t, err)
	assert.ElementsMatch(t, names(theirs), names(ours))
	for _, s := range services {
		assert.Contains(t, names(ours), s.Name)
	}
}

func TestIntegrationFailures(t *testing.T) {
	clearEnv(t)
	srv := consultest.Start(t)
	tok := srv.TokenFor(t, "greeter")
	tokFile := srv.WriteTokenFile(t, tok)
	dir := t.TempDir()
	otherCA := testca.New(t).WriteCA(t, dir, "other-ca.pem")
	base := append(srv.Options(), securereg.TokenFile(tokFile))

	tests := []struct {
		name    string
		opts    []registry.Option
		call    func(r registry.Registry) error
		wantIs  error
		wantMsg string
	}{
		{"another service's name", base, func(r registry.Registry) error { return r.Register(testService("billing", "billing-1")) },
			securereg.ErrPermissionDenied, "lacks permission"},
		{"unknown token", append(srv.Options(), securereg.Token("00000000-1111-4222-8333-444444444444")),
			func(r registry.Registry) error { _, err := r.GetService("greeter"); return err }, securereg.ErrTokenInvalid, "ACL not found"},
		{"no client cert", []registry.Option{registry.Addrs(srv.Addr), securereg.CAFile(srv.CAFile), securereg.TokenFile(tokFile)},
			func(r registry.Registry) error { _, err := r.GetService("greeter"); return err }, nil, "client certificate"},
		{"wrong CA", append(slices.Clone(base), securereg.CAFile(otherCA)),
			func(r registry.Registry) error { _, err := r.GetService("greeter"); return err }, nil, "not signed by a trusted CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRegistry(t, tt.opts...)
			err := tt.call(r)
			require.Error(t, err)
			if tt.wantIs != nil {
				assert.ErrorIs(t, err, tt.wantIs)
			}
			assert.Contains(t, err.Error(), tt.wantMsg)
			assert.NotContains(t, err.Error(), tok)
			assert.NotContains(t, err.Error(), srv.ManagementToken)
		})
	}

	t.Run("http address is refused before any request", func(t *testing.T) {
		_, err := securereg.New(append(slices.Clone(base), registry.Addrs("http://"+srv.Addr))...)
		require.ErrorIs(t, err, securereg.ErrPlaintext)
		assert.NotContains(t, err.Error(), tok)
	})
}

// Greeter is a go-micro handler for the end-to-end test.
type Greeter struct{}

// HelloRequest and HelloResponse travel as JSON.
type HelloRequest struct {
	Name string `json:"name"`
}

type HelloResponse struct {
	Greeting string `json:"greeting"`
}

func (*Greeter) Hello(_ context.Context, req *HelloRequest, rsp *HelloResponse) error {
	rsp.Greeting = "Hello, " + req.Name
	return nil
}

// TestIntegrationGoMicro runs a greeter server that registers through
// securereg and a client that discovers it through securereg and calls it.
// Fresh server, client, broker and selector keep go-micro's globals out.
func TestIntegrationGoMicro(t *testing.T) {
	clearEnv(t)
	srv := consultest.Start(t)
	serverReg, _ := leastPrivilege(t, srv, "greeter")
	clientReg, _ := leastPrivilege(t, srv, "greeter-client")

	svc := micro.NewService(
		micro.Server(server.NewServer()),
		micro.Client(client.NewClient()),
		micro.Broker(broker.NewMemoryBroker()),
		micro.Registry(serverReg),
		micro.Name("greeter"),
		micro.Address("127.0.0.1:0"), // loopback only
		micro.RegisterTTL(30*time.Second),
	)
	require.NoError(t, micro.RegisterHandler(svc.Server(), new(Greeter)))
	require.NoError(t, svc.Server().Start())
	t.Cleanup(func() { assert.NoError(t, svc.Server().Stop()) })

	cli := client.NewClient(
		client.Registry(clientReg),
		client.Selector(selector.NewSelector(selector.Registry(clientReg))),
		client.ContentType("application/json"),
		client.RequestTimeout(5*time.Second),
	)
	var rsp HelloResponse
	require.Eventually(t, func() bool {
		err := cli.Call(context.Background(), cli.NewRequest("greeter", "Greeter.Hello", &HelloRequest{Name: "Ada"}), &rsp)
		if err != nil {
			t.Logf("call: %v", err)
		}
		return err == nil
	}, 15*time.Second, 200*time.Millisecond)
	assert.Equal(t, "Hello, Ada", rsp.Greeting)

	got, err := clientReg.GetService("greeter")
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Len(t, got[0].Nodes, 1)
	assert.True(t, strings.HasPrefix(got[0].Nodes[0].Address, "127.0.0.1:"), "registered address %q", got[0].Nodes[0].Address)
}

// eventLog collects watch results in the background.
type eventLog struct {
	ch chan *registry.Result
}

func watchEvents(t *testing.T, w registry.Watcher) *eventLog {
	t.Helper()
	l := &eventLog{ch: make(chan *registry.Result, 100)}
	go func() {
		for {
			res, err := w.Next()
			if err != nil {
				if !errors.Is(err, registry.ErrWatcherStopped) {
					t.Logf("watch: %v", err)
				}
				close(l.ch)
				return
			}
			l.ch <- res
		}
	}()
	return l
}

func (l *eventLog) waitFor(t *testing.T, what string, match func(*registry.Result) bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	var seen []string
	for {
		select {
		case res, ok := <-l.ch:
			if !ok {
				t.Fatalf("watcher stopped before %s; saw %v", what, seen)
			}
			seen = append(seen, fmt.Sprintf("%s %s %v", res.Action, res.Service.Name, nodeIDs(res.Service)))
			if match(res) {
				return
			}
		case <-deadline:
			t.Fatalf("no watch event %s within 20s; saw %v", what, seen)
		}
	}
}

func hasNode(s *registry.Service, id string) bool { return slices.Contains(nodeIDs(s), id) }

func nodeIDs(s *registry.Service) []string {
	var ids []string
	for _, n := range s.Nodes {
		ids = append(ids, n.Id)
	}
	return ids
}

func names(svcs []*registry.Service) []string {
	var out []string
	for _, s := range svcs {
		out = append(out, s.Name)
	}
	return out
}

// norm sorts nodes and turns empty maps into nil so results compare.
func norm(s *registry.Service) {
	slices.SortFunc(s.Nodes, func(a, b *registry.Node) int { return strings.Compare(a.Id, b.Id) })
	for _, n := range s.Nodes {
		if len(n.Metadata) == 0 {
			n.Metadata = nil
		}
	}
	if len(s.Metadata) == 0 {
		s.Metadata = nil
	}
	if len(s.Endpoints) == 0 {
		s.Endpoints = nil
	}
	for _, e := range s.Endpoints {
		if len(e.Metadata) == 0 {
			e.Metadata = nil
		}
	}
}

// TestIntegrationFailoverAndRestart: a dead first address is skipped, and a
// registry recovers by itself when Consul comes back after a restart.
func TestIntegrationFailoverAndRestart(t *testing.T) {
	clearEnv(t)
	srv := consultest.Start(t)
	down, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := down.Addr().String()
	require.NoError(t, down.Close())

	r, _ := leastPrivilege(t, srv, "greeter", registry.Addrs(dead, srv.Addr))
	require.NoError(t, r.Register(testService("greeter", "greeter-1")))
	got, err := r.GetService("greeter")
	require.NoError(t, err)
	require.Len(t, got, 1)

	require.NoError(t, srv.Stop())
	_, err = r.GetService("greeter")
	require.Error(t, err, "no address answers while Consul is down")

	require.NoError(t, srv.Restart())
	require.Eventually(t, func() bool {
		got, err := r.GetService("greeter")
		return err == nil && len(got) == 1
	}, 30*time.Second, 200*time.Millisecond, "the registry recovers after Consul restarts")
}
