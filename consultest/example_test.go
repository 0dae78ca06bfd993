package consultest_test

import (
	"testing"

	"github.com/securereg/securereg"
	"github.com/securereg/securereg/consultest"
	"go-micro.dev/v4/registry"
)

// A test in your own service's repository: start a secured Consul, mint a
// least-privilege token for the service, and register through securereg
// exactly as production does.
func Example() {
	testRegister := func(t *testing.T) {
		srv := consultest.Start(t) // skipped (or failed, with CONSUL_TEST_REQUIRED=1) without Consul
		tokenFile := srv.WriteTokenFile(t, srv.TokenFor(t, "greeter"))

		reg, err := securereg.New(append(srv.Options(), securereg.TokenFile(tokenFile))...)
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Close()

		svc := &registry.Service{Name: "greeter", Version: "1.0.0",
			Nodes: []*registry.Node{{Id: "greeter-1", Address: "127.0.0.1:9090"}}}
		if err := reg.Register(svc); err != nil {
			t.Fatal(err)
		}
		got, err := reg.GetService("greeter")
		if err != nil || len(got) != 1 {
			t.Fatalf("GetService = %v, %v", got, err)
		}
	}
	_ = testRegister // run by go test as func TestRegister(t *testing.T)
}
