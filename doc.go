// Package securereg is a drop-in replacement for go-micro's Consul registry
// (github.com/go-micro/plugins/v4/registry/consul) that is secure by default.
//
// Change one line:
//
//	reg := consul.NewRegistry(opts...)    // before
//	reg := securereg.NewRegistry(opts...) // after
//
// # Why
//
// The stock plugin (v1.2.1) is unsafe by default:
//
//   - registry.Secure(true) without a TLS config becomes
//     InsecureSkipVerify: true, so any machine in the middle is accepted and
//     handed the ACL token on every request;
//   - CONSUL_CACERT, CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY are ignored,
//     because the plugin builds the HTTP client before consul/api reads them;
//   - a token file is read once, so a token rotated by Vault Agent breaks the
//     service, and an unreadable one causes a nil-pointer panic;
//   - NewRegistry cannot return an error and Init always returns nil;
//   - its address probe needs operator:read, fails with least-privilege
//     tokens and hides that failure.
//
// # What securereg changes
//
// TLS is on and verified unless [DevMode] is set in code: the default address
// is 127.0.0.1:8501, Secure(true) alone means verification against the system
// roots, and CAFile/CAPath/CONSUL_CACERT narrow that to Consul's CA. mTLS
// comes from [ClientCert] or CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY. The ACL
// token comes from [Token], [TokenFile], [Tokens], CONSUL_HTTP_TOKEN_FILE or
// CONSUL_HTTP_TOKEN, and an http.RoundTripper sends it on every request, the
// watch's blocking queries included, over TLS only.
//
// Credentials rotate without a restart: a token file, client certificate or
// CA bundle replaced on disk (by Vault Agent, cert-manager or a Kubernetes
// secret) is picked up within two seconds by one goroutine per registry,
// which [Registry.Close] stops; a token Consul no longer knows is re-read and
// the call retried at once. Certificates close to expiry are logged, and
// [OnEvent] reports every rotation, failure and expiry.
//
// Anything insecure is refused with an error that says how to fix it:
// [ErrInsecure], [ErrPlaintext], [ErrNoToken], [ErrFileMode],
// [ErrCertExpired], [ErrInvalidConfig]. [New] returns the error;
// [NewRegistry], which must keep the plugin's signature, returns a Registry
// whose every method returns it. Nothing falls back to an insecure
// connection. Consul's 403 answers map to [ErrPermissionDenied] and
// [ErrTokenInvalid].
//
// The token is kept in a type that formats as [redacted]: it never appears in
// an error, a log line, or %v/%+v/%#v of the registry or its options.
//
// [Check] (and the securereg CLI's check command) verifies a deployment
// against the live Consul: TLS chain and names, certificate expiry, enforced
// client certificates, the token and its least privilege ([ACLPolicy] prints
// one), and a plain-HTTP listener left open.
//
// Registration is the plugin's own code, run on securereg's HTTP client.
// Lookups and watches are securereg's: each distinct tag of the plugin's
// encoding is decoded once and cached, with results identical to the
// plugin's, so services registered by either library see each other; a
// lookup costs less client CPU than raw consul/api. Watches use Consul
// blocking queries. With several addresses, a registry fails over to the
// next one that accepts a connection.
package securereg
