// Package greetertest shows how a service's own repository tests its
// registration against a real, secured Consul with consultest: HTTPS only,
// mTLS, ACL default deny and a least-privilege token, exactly like
// production. Run it with `go test`; it skips when no Consul is available
// (build one with `make consul`) unless CONSUL_TEST_REQUIRED=1.
package greetertest

import (
	"context"
	"testing"
	"time"

	"github.com/securereg/securereg"
	"github.com/securereg/securereg/consultest"
	"github.com/securereg/securereg/examples/greeter/proto"
	"go-micro.dev/v4"
	"go-micro.dev/v4/broker"
	"go-micro.dev/v4/client"
	"go-micro.dev/v4/selector"
	"go-micro.dev/v4/server"
)

// Greeter is the handler under test; go-micro requires an exported type.
type Greeter struct{}

// Hello greets req.Name.
func (Greeter) Hello(_ context.Context, req *proto.HelloRequest, rsp *proto.HelloResponse) error {
	rsp.Greeting = "Hello, " + req.Name + "!"
	return nil
}

func TestGreeterRegistersAndAnswers(t *testing.T) {
	srv := consultest.Start(t)

	// The server gets a token that may register "greeter" and nothing else.
	serverReg, err := securereg.New(append(srv.Options(),
		securereg.TokenFile(srv.WriteTokenFile(t, srv.TokenFor(t, "greeter"))))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serverReg.Close() })

	svc := micro.NewService(
		micro.Server(server.NewServer()),
		micro.Client(client.NewClient()),
		micro.Broker(broker.NewMemoryBroker()),
		micro.Registry(serverReg),
		micro.Name("greeter"),
		micro.Address("127.0.0.1:0"),
	)
	if err := micro.RegisterHandler(svc.Server(), Greeter{}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Server().Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Server().Stop() })

	// The caller discovers it with a token of its own.
	clientReg, err := securereg.New(append(srv.Options(),
		securereg.TokenFile(srv.WriteTokenFile(t, srv.TokenFor(t, "greeter-client"))))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = clientReg.Close() })
	cli := client.NewClient(
		client.Registry(clientReg),
		client.Selector(selector.NewSelector(selector.Registry(clientReg))),
		client.ContentType("application/json"),
	)

	var rsp proto.HelloResponse
	deadline := time.Now().Add(15 * time.Second)
	for {
		err = cli.Call(context.Background(), cli.NewRequest("greeter", "Greeter.Hello", &proto.HelloRequest{Name: "Ada"}), &rsp)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("call greeter: %v", err)
	}
	if rsp.Greeting != "Hello, Ada!" {
		t.Errorf("greeting = %q; want %q", rsp.Greeting, "Hello, Ada!")
	}
}
