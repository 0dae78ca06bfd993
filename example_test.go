package securereg_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/go-micro/plugins/v4/registry/consul"
	"github.com/securereg/securereg"
	"go-micro.dev/v4"
	"go-micro.dev/v4/registry"
)

// The one-line switch: a go-micro service that used consul.NewRegistry. With
// no options, everything comes from the CONSUL_* environment variables
// (CONSUL_HTTP_ADDR, CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY,
// CONSUL_HTTP_TOKEN_FILE, ...). A configuration error makes every registry
// call fail; it never falls back to an insecure connection.
func ExampleNewRegistry() {
	service := micro.NewService(
		micro.Name("greeter"),
		micro.Registry(securereg.NewRegistry()), // was: consul.NewRegistry()
	)
	service.Init()
	if err := service.Run(); err != nil {
		log.Fatal(err)
	}
}

// Options in code, mixed with go-micro's and the plugin's own. The token file
// is re-read when Vault Agent or Kubernetes replaces it.
func ExampleNewRegistry_tokenFile() {
	reg := securereg.NewRegistry(
		registry.Addrs("consul.service.internal:8501"),
		registry.Timeout(5*time.Second),
		securereg.CAFile("/etc/consul/tls/ca.pem"),
		securereg.ClientCert("/etc/consul/tls/client.pem", "/etc/consul/tls/client-key.pem"),
		securereg.ServerName("server.dc1.consul"),
		securereg.TokenFile("/var/run/secrets/consul/token"),
		consul.TCPCheck(10*time.Second),
	)
	if err := reg.Init(); err != nil { // Init reports a bad configuration
		log.Fatal(err)
	}
	service := micro.NewService(micro.Name("greeter"), micro.Registry(reg))
	if err := service.Run(); err != nil {
		log.Fatal(err)
	}
}

// New returns configuration errors directly. Asking to skip certificate
// verification is refused unless DevMode is set in code.
func ExampleNew() {
	_, err := securereg.New(
		registry.Addrs("127.0.0.1:8501"),
		registry.TLSConfig(&tls.Config{InsecureSkipVerify: true}),
		securereg.Token("example-token"),
	)
	fmt.Println(errors.Is(err, securereg.ErrInsecure))
	// Output: true
}

// A missing token is refused too: with ACLs in default-deny mode every call
// would fail later and less clearly.
func ExampleNew_noToken() {
	for _, k := range []string{securereg.EnvHTTPToken, securereg.EnvHTTPTokenFile} {
		_ = os.Unsetenv(k)
	}
	_, err := securereg.New(registry.Addrs("127.0.0.1:8501"))
	fmt.Println(errors.Is(err, securereg.ErrNoToken))
	// Output: true
}

// Branch on Consul's ACL answers with errors.Is.
func ExampleErrPermissionDenied() {
	reg, err := securereg.New(securereg.TokenFile("/var/run/secrets/consul/token"))
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()
	_, err = reg.GetService("greeter")
	switch {
	case errors.Is(err, securereg.ErrTokenInvalid):
		log.Print("the token was revoked or expired: rotate it")
	case errors.Is(err, securereg.ErrPermissionDenied):
		log.Print("the token's policy lacks service:read on greeter")
	case err != nil:
		log.Print(err)
	}
}

// DevMode is for a laptop running `consul agent -dev`: plain HTTP, no token.
// It logs a loud warning. Never ship it.
func ExampleDevMode() {
	reg, err := securereg.New(
		registry.Addrs("http://127.0.0.1:8500"),
		securereg.DevMode(),
		securereg.Logger(slog.New(slog.NewTextHandler(os.Stderr, nil))),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()
}

// NewTLSConfig gives the same verified TLS config to a client of your own.
func ExampleNewTLSConfig() {
	cfg, err := securereg.NewTLSConfig(
		securereg.CAFile("/etc/consul/tls/ca.pem"),
		securereg.ClientCert("/etc/consul/tls/client.pem", "/etc/consul/tls/client-key.pem"),
		securereg.TokenFile("/var/run/secrets/consul/token"),
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tls.VersionName(cfg.MinVersion))
}
