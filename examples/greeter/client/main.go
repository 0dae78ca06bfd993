// Command client finds the greeter through securereg and calls it once. It
// is configured only by the same CONSUL_* environment variables as the
// server. It prints the greeting, or the error and exits 1.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/securereg/securereg"
	"github.com/securereg/securereg/examples/greeter/proto"
	"go-micro.dev/v4"
	"go-micro.dev/v4/broker"
	"go-micro.dev/v4/client"
)

func main() {
	name := "world"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	service := micro.NewService(
		micro.Name("greeter-client"),
		micro.Broker(broker.NewMemoryBroker()),
		micro.Registry(securereg.NewRegistry()), // was: consul.NewRegistry()
	)
	cli := service.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := cli.NewRequest("greeter", "Greeter.Hello", &proto.HelloRequest{Name: name},
		client.WithContentType("application/json"))
	var rsp proto.HelloResponse
	if err := cli.Call(ctx, req, &rsp, client.WithRetries(0)); err != nil {
		fmt.Fprintln(os.Stderr, "call failed:", err)
		os.Exit(1)
	}
	fmt.Println(rsp.Greeting)
}
