// Command server is a go-micro greeter that registers in Consul through
// securereg. It is configured only by environment variables: CONSUL_HTTP_ADDR,
// CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME
// and CONSUL_HTTP_TOKEN_FILE, plus GREETER_ADDRESS (default 127.0.0.1:0).
package main

import (
	"context"
	"log"
	"os"

	"github.com/securereg/securereg"
	"github.com/securereg/securereg/examples/greeter/proto"
	"go-micro.dev/v4"
	"go-micro.dev/v4/broker"
)

// Greeter is the handler.
type Greeter struct{}

// Hello greets req.Name.
func (*Greeter) Hello(_ context.Context, req *proto.HelloRequest, rsp *proto.HelloResponse) error {
	rsp.Greeting = "Hello, " + req.Name + "!"
	return nil
}

func main() {
	addr := os.Getenv("GREETER_ADDRESS")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	service := micro.NewService(
		micro.Name("greeter"),
		micro.Address(addr),
		micro.Broker(broker.NewMemoryBroker()),  // this example does not publish
		micro.Registry(securereg.NewRegistry()), // was: consul.NewRegistry()
	)
	service.Init()
	if err := micro.RegisterHandler(service.Server(), new(Greeter)); err != nil {
		log.Fatal(err)
	}
	if err := service.Run(); err != nil {
		log.Fatal(err)
	}
}
