package securereg

import (
	"context"
	"log/slog"
	"time"

	"go-micro.dev/v4/registry"
)

// Environment variables read by [New] and [NewRegistry]. The names are
// Consul's own (see github.com/hashicorp/consul/api), plus go-micro's
// MICRO_REGISTRY_ADDRESS. An explicit option always wins over the
// environment; an empty variable counts as unset. Booleans are parsed with
// [strconv.ParseBool] and a value it rejects is an error naming the variable.
const (
	// EnvHTTPAddr is the Consul address: host, host:port or https://host:port.
	// A missing port means 8501. Used when neither [registry.Addrs] nor
	// EnvRegistryAddress is set.
	EnvHTTPAddr = "CONSUL_HTTP_ADDR"
	// EnvRegistryAddress is go-micro's comma-separated list of registry
	// addresses. It wins over EnvHTTPAddr.
	EnvRegistryAddress = "MICRO_REGISTRY_ADDRESS"
	// EnvHTTPToken is the ACL token itself. EnvHTTPTokenFile wins over it.
	EnvHTTPToken = "CONSUL_HTTP_TOKEN"
	// EnvHTTPTokenFile is the path of a file holding the ACL token.
	EnvHTTPTokenFile = "CONSUL_HTTP_TOKEN_FILE"
	// EnvCACert is a PEM file of CA certificates that sign Consul's server
	// certificate. EnvCACert and EnvCAPath may be combined.
	EnvCACert = "CONSUL_CACERT"
	// EnvCAPath is a directory of PEM CA certificates.
	EnvCAPath = "CONSUL_CAPATH"
	// EnvClientCert is the client certificate for mTLS. It needs EnvClientKey.
	EnvClientCert = "CONSUL_CLIENT_CERT"
	// EnvClientKey is the private key of EnvClientCert.
	EnvClientKey = "CONSUL_CLIENT_KEY"
	// EnvTLSServerName is the name expected in Consul's server certificate,
	// e.g. server.dc1.consul, when it differs from the address host.
	EnvTLSServerName = "CONSUL_TLS_SERVER_NAME"
	// EnvHTTPSSL set to false asks for plain HTTP, which is refused with
	// [ErrPlaintext] unless [DevMode] is set. True changes nothing: TLS is
	// the default.
	EnvHTTPSSL = "CONSUL_HTTP_SSL"
	// EnvHTTPSSLVerify set to false asks to skip certificate verification,
	// which is refused with [ErrInsecure] unless [DevMode] is set.
	EnvHTTPSSLVerify = "CONSUL_HTTP_SSL_VERIFY"
)

// Context keys. Unexported struct types, so no other package can collide
// with them or read them (compare go-micro's servicesKey).
type (
	caFileKey        struct{}
	caPathKey        struct{}
	clientCertKey    struct{}
	serverNameKey    struct{}
	tokenKey         struct{}
	devModeKey       struct{}
	loggerKey        struct{}
	onEventKey       struct{}
	expiryWarningKey struct{}
)

// clientCertFiles is the value stored under clientCertKey.
type clientCertFiles struct{ cert, key string }

// tokenSetting is the value stored under tokenKey. It holds no string field
// with the token: context.Context's String method prints plain string values,
// and fmt prints the fields of structs it cannot call methods on.
type tokenSetting struct {
	src  TokenSource
	from string // "Token", "TokenFile" or "TokenSource", for messages
}

// CAFile sets a PEM file of CA certificates that Consul's server certificate
// must chain to. Without CAFile, CAPath, a caller's [tls.Config.RootCAs] or
// CONSUL_CACERT / CONSUL_CAPATH, the system roots are used. CAFile and CAPath
// may be combined. An empty path is an error. Takes precedence over
// CONSUL_CACERT and over RootCAs in [registry.TLSConfig].
func CAFile(path string) registry.Option {
	return withValue(caFileKey{}, path)
}

// CAPath sets a directory whose PEM files hold CA certificates, like
// CONSUL_CAPATH. Only regular files directly in the directory are read
// (symlinks are followed; dot files are skipped). A directory without a
// certificate is an error. Takes precedence over CONSUL_CAPATH.
func CAPath(dir string) registry.Option {
	return withValue(caPathKey{}, dir)
}

// ClientCert sets the certificate and private key files presented to Consul
// for mTLS (verify_incoming). Both must be given. The key file must not be
// readable by others or writable by the group ([ErrFileMode]). The
// certificate must be valid now ([ErrCertExpired]). Takes precedence over
// CONSUL_CLIENT_CERT / CONSUL_CLIENT_KEY and over Certificates in
// [registry.TLSConfig].
func ClientCert(certFile, keyFile string) registry.Option {
	return withValue(clientCertKey{}, clientCertFiles{cert: certFile, key: keyFile})
}

// ServerName sets the name that Consul's server certificate must carry, e.g.
// "server.dc1.consul". If unset, CONSUL_TLS_SERVER_NAME is used, then the
// ServerName of a caller's [registry.TLSConfig], then the host of each address.
func ServerName(name string) registry.Option {
	return withValue(serverNameKey{}, name)
}

// Token sets a fixed Consul ACL token, sent as X-Consul-Token over TLS only.
// Surrounding whitespace is trimmed; an empty token is [ErrNoToken]. Token,
// [TokenFile] and [Tokens] replace each other: the last one given wins, and
// any of them wins over CONSUL_HTTP_TOKEN_FILE and CONSUL_HTTP_TOKEN.
// The token is never printed: not by %v of the options, nor in errors or logs.
func Token(token string) registry.Option {
	return withValue(tokenKey{}, tokenSetting{src: StaticTokenSource(token), from: "Token option"})
}

// TokenFile reads the ACL token from a file, as Vault Agent or a Kubernetes
// secret provide it. The file must not be readable by others or writable by
// the group ([ErrFileMode]) and must hold a non-blank token ([ErrNoToken]).
// It is read at construction and re-read when it changes; see
// [FileTokenSource]. See [Token] for precedence.
func TokenFile(path string) registry.Option {
	return withValue(tokenKey{}, tokenSetting{src: FileTokenSource(path), from: "TokenFile option"})
}

// Tokens sets a custom [TokenSource], e.g. one that fetches tokens from a
// secrets manager. A nil source is [ErrNoToken]. See [Token] for precedence.
func Tokens(src TokenSource) registry.Option {
	return withValue(tokenKey{}, tokenSetting{src: src, from: "Tokens option"})
}

// DevMode allows what is otherwise refused: plain HTTP ([ErrPlaintext]),
// skipping certificate verification ([ErrInsecure]) and running without an
// ACL token ([ErrNoToken]). Even in DevMode the token is never sent over
// plain HTTP. A registry in DevMode logs a loud warning once.
//
// DevMode can only be set in code, never by the environment, and an Init on
// a registry built without it cannot turn it on. Do not ship it: a registry
// in DevMode is open to machine-in-the-middle attacks.
func DevMode() registry.Option {
	return withValue(devModeKey{}, true)
}

// Logger sets the structured logger for warnings (DevMode, insecure settings)
// and errors. If nil or unset, [slog.Default] is used. No log line ever
// contains the token.
func Logger(l *slog.Logger) registry.Option {
	return withValue(loggerKey{}, l)
}

// OnEvent sets a function called on credential events: a token, client
// certificate or CA rotated, a reload that failed, a certificate expiring or
// expired, Consul refusing the token. Wire it to metrics or alerts. It is
// called from the registry's reload goroutine or from a request, so it must
// be safe for concurrent use and must not block; a panic in it is recovered
// and logged. An Event never contains the token. If nil or unset, events are
// only logged.
func OnEvent(fn func(Event)) registry.Option {
	return withValue(onEventKey{}, fn)
}

// ExpiryWarning sets how long before a client certificate or CA expires
// securereg starts to log a warning and send an [EventExpiring]. The default
// is 30 days. Expiry is checked at start and every hour; at expiry an Error
// is logged and an [EventExpired] sent. 0 warns only at expiry.
func ExpiryWarning(d time.Duration) registry.Option {
	return withValue(expiryWarningKey{}, d)
}

func withValue(key, value any) registry.Option {
	return func(o *registry.Options) {
		if o.Context == nil {
			o.Context = context.Background()
		}
		o.Context = context.WithValue(o.Context, key, value)
	}
}

// lookup returns the value stored under key, if any.
func lookup[T any](ctx context.Context, key any) (T, bool) {
	var zero T
	if ctx == nil {
		return zero, false
	}
	v, ok := ctx.Value(key).(T)
	if !ok {
		return zero, false
	}
	return v, true
}
