package securereg

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"go-micro.dev/v4/registry"
)

// defaultAddr is Consul's HTTPS port on the local agent.
const (
	defaultHost = "127.0.0.1"
	defaultPort = "8501"
)

// pluginConfigKey is the string key under which the plugin's consul.Config
// option stores its value; we read it to take the parts that are not ours.
const pluginConfigKey = "consul_config"

// config is the validated result of options plus environment.
type config struct {
	dev       bool
	scheme    string      // "https", or "http" in DevMode only
	addrs     []string    // host:port, at least one
	tls       *tlsState   // nil for plain HTTP (DevMode only)
	tokens    TokenSource // nil only in DevMode
	tokenFrom string      // where the token comes from, for reports
	consul    *api.Config // copy of a caller's consul.Config, or nil
	timeout   time.Duration
	logger    *slog.Logger
	onEvent   func(Event)   // nil: none
	expiry    time.Duration // warn when a certificate expires within this
	warnings  []string      // DevMode relaxations, logged once
}

// applyOptions applies opts to fresh Options. Secure starts true so that an
// explicit registry.Secure(false) can be told apart from the default: TLS is
// on unless someone asked for it to be off.
func applyOptions(opts []registry.Option) registry.Options {
	o := registry.Options{Context: context.Background(), Secure: true}
	for _, opt := range opts {
		opt(&o)
	}
	if o.Context == nil {
		o.Context = context.Background()
	}
	return o
}

// resolve validates options and environment and builds the config. env is
// os.LookupEnv outside tests.
func resolve(o registry.Options, env func(string) (string, bool)) (*config, error) {
	getenv := func(k string) string {
		v, ok := env(k)
		if !ok {
			return ""
		}
		return strings.TrimSpace(v)
	}
	ctx := o.Context
	c := &config{timeout: o.Timeout}
	c.dev, _ = lookup[bool](ctx, devModeKey{})
	c.logger, _ = lookup[*slog.Logger](ctx, loggerKey{})
	if c.logger == nil {
		c.logger = slog.Default()
	}
	c.onEvent, _ = lookup[func(Event)](ctx, onEventKey{})
	c.expiry = defaultExpiryWarning
	if d, ok := lookup[time.Duration](ctx, expiryWarningKey{}); ok {
		if d < 0 {
			return nil, fmt.Errorf("securereg: ExpiryWarning is negative (%s); use a positive duration, or 0 to warn only at expiry: %w", d, ErrInvalidConfig)
		}
		c.expiry = d
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("securereg: registry.Timeout is negative (%s); use a positive duration or 0 for none: %w", o.Timeout, ErrInvalidConfig)
	}

	if uc, ok := lookup[*api.Config](ctx, pluginConfigKey); ok && uc != nil {
		cp := *uc
		c.consul = &cp
	}

	// Environment booleans first: a bad value is an error even when an
	// option would make it irrelevant, so typos do not lie dormant.
	sslOff, err := envBool(getenv, EnvHTTPSSL)
	if err != nil {
		return nil, err
	}
	verifyOff, err := envBool(getenv, EnvHTTPSSLVerify)
	if err != nil {
		return nil, err
	}

	// Addresses: registry.Addrs > consul.Config.Address > MICRO_REGISTRY_ADDRESS > CONSUL_HTTP_ADDR > default.
	var raw []string
	from := ""
	switch {
	case len(o.Addrs) > 0:
		raw, from = o.Addrs, "registry.Addrs"
	case c.consul != nil && c.consul.Address != "":
		raw, from = []string{c.consul.Address}, "consul.Config Address"
	case getenv(EnvRegistryAddress) != "":
		raw, from = strings.Split(getenv(EnvRegistryAddress), ","), EnvRegistryAddress
	case getenv(EnvHTTPAddr) != "":
		raw, from = []string{getenv(EnvHTTPAddr)}, EnvHTTPAddr
	default:
		raw, from = []string{net.JoinHostPort(defaultHost, defaultPort)}, "default"
	}
	var schemes []string
	for _, a := range raw {
		scheme, hostport, err := parseAddr(a, from)
		if err != nil {
			return nil, err
		}
		c.addrs = append(c.addrs, hostport)
		schemes = append(schemes, scheme)
	}

	// Plain HTTP: asked for by an http:// address, registry.Secure(false) or CONSUL_HTTP_SSL=false.
	plainWhy := ""
	explicitHTTPS := false
	for i, s := range schemes {
		switch s {
		case "http":
			plainWhy = fmt.Sprintf("address %q from %s uses http://", raw[i], from)
		case "https":
			explicitHTTPS = true
		}
	}
	if plainWhy != "" && explicitHTTPS {
		return nil, fmt.Errorf("securereg: addresses from %s mix http:// and https://; use https:// for all: %w", from, ErrPlaintext)
	}
	if plainWhy == "" && !o.Secure {
		plainWhy = "registry.Secure(false) was given"
	}
	if plainWhy == "" && sslOff && (!explicitHTTPS || !c.dev) {
		// Without DevMode this is refused even next to https://
		// addresses: a setting that asks for plaintext is a mistake to
		// surface, not to outvote.
		plainWhy = EnvHTTPSSL + "=false is set"
	}
	if plainWhy != "" {
		if !c.dev {
			return nil, fmt.Errorf("securereg: %s, but plain HTTP exposes the ACL token and the registry to the network; use https:// and port 8501, or set DevMode() in code for local development: %w", plainWhy, ErrPlaintext)
		}
		c.scheme = "http"
		c.warnings = append(c.warnings, "plain HTTP to Consul ("+plainWhy+"); the ACL token will not be sent")
	} else {
		c.scheme = "https"
	}

	if c.scheme == "https" {
		in, err := tlsInputsFor(o, c, getenv, verifyOff)
		if err != nil {
			return nil, err
		}
		c.tls, err = buildTLS(in, time.Now())
		if err != nil {
			return nil, err
		}
	}

	if err := resolveToken(c, ctx, getenv); err != nil {
		return nil, err
	}
	return c, nil
}

// tlsInputsFor decides, field by field, which source wins: our options, then
// the caller's registry.TLSConfig, then a consul.Config, then the environment.
func tlsInputsFor(o registry.Options, c *config, getenv func(string) string, verifyOff bool) (tlsInputs, error) {
	ctx := o.Context
	in := tlsInputs{base: o.TLSConfig}
	var ctls api.TLSConfig
	if c.consul != nil {
		ctls = c.consul.TLSConfig
	}

	// Refusals of insecure settings.
	var insecureWhy []string
	if o.TLSConfig != nil && o.TLSConfig.InsecureSkipVerify {
		insecureWhy = append(insecureWhy, "registry.TLSConfig has InsecureSkipVerify")
	}
	if ctls.InsecureSkipVerify {
		insecureWhy = append(insecureWhy, "consul.Config TLSConfig has InsecureSkipVerify")
	}
	if verifyOff {
		insecureWhy = append(insecureWhy, EnvHTTPSSLVerify+"=false is set")
	}
	if o.TLSConfig != nil && o.TLSConfig.MinVersion != 0 && o.TLSConfig.MinVersion < tls.VersionTLS12 {
		if !c.dev {
			return in, fmt.Errorf("securereg: registry.TLSConfig has MinVersion %s, below TLS 1.2; remove it or set tls.VersionTLS12 or higher: %w",
				tls.VersionName(o.TLSConfig.MinVersion), ErrInsecure)
		}
		c.warnings = append(c.warnings, "registry.TLSConfig MinVersion below TLS 1.2 was raised to TLS 1.2")
	}
	// Weak protocol settings: refused like skipped verification, but in
	// DevMode they only warn and leave verification on.
	var weakWhy []string
	if o.TLSConfig != nil && o.TLSConfig.MaxVersion != 0 && o.TLSConfig.MaxVersion < tls.VersionTLS12 {
		weakWhy = append(weakWhy, "registry.TLSConfig has MaxVersion "+tls.VersionName(o.TLSConfig.MaxVersion)+", below TLS 1.2")
	}
	if o.TLSConfig != nil {
		for _, id := range o.TLSConfig.CipherSuites {
			if isInsecureSuite(id) {
				weakWhy = append(weakWhy, "registry.TLSConfig lists the insecure cipher suite "+tls.CipherSuiteName(id))
			}
		}
	}
	if len(weakWhy) > 0 {
		if !c.dev {
			return in, fmt.Errorf("securereg: %s; remove it and let crypto/tls choose: %w", strings.Join(weakWhy, " and "), ErrInsecure)
		}
		c.warnings = append(c.warnings, strings.Join(weakWhy, ", "))
	}
	if len(insecureWhy) > 0 {
		if !c.dev {
			return in, fmt.Errorf("securereg: %s, which accepts any server certificate and hands the ACL token to a machine in the middle; give the CA with CAFile or %s instead, or set DevMode() in code for local development: %w",
				strings.Join(insecureWhy, " and "), EnvCACert, ErrInsecure)
		}
		in.insecure = true
		c.warnings = append(c.warnings, "TLS certificate verification is OFF ("+strings.Join(insecureWhy, ", ")+")")
	}

	// CA.
	caFile, hasCAFile := lookup[string](ctx, caFileKey{})
	caPath, hasCAPath := lookup[string](ctx, caPathKey{})
	if hasCAFile && strings.TrimSpace(caFile) == "" {
		return in, fmt.Errorf("securereg: CAFile option is empty; give the path of the CA PEM file: %w", ErrInvalidConfig)
	}
	if hasCAPath && strings.TrimSpace(caPath) == "" {
		return in, fmt.Errorf("securereg: CAPath option is empty; give a directory of CA PEM files: %w", ErrInvalidConfig)
	}
	switch {
	case hasCAFile || hasCAPath:
		in.caFile, in.caFileFrom = caFile, "CAFile option"
		in.caPath, in.caPathFrom = caPath, "CAPath option"
	case o.TLSConfig != nil && o.TLSConfig.RootCAs != nil:
		// the caller's pool, kept by Clone
	case ctls.CAFile != "" || ctls.CAPath != "" || len(ctls.CAPem) > 0:
		in.caFile, in.caFileFrom = ctls.CAFile, "consul.Config TLSConfig.CAFile"
		in.caPath, in.caPathFrom = ctls.CAPath, "consul.Config TLSConfig.CAPath"
		in.caPEM = ctls.CAPem
	default:
		in.caFile, in.caFileFrom = getenv(EnvCACert), EnvCACert
		in.caPath, in.caPathFrom = getenv(EnvCAPath), EnvCAPath
	}

	// Client certificate.
	cc, hasCC := lookup[clientCertFiles](ctx, clientCertKey{})
	switch {
	case hasCC:
		in.certFile, in.keyFile, in.certFrom = cc.cert, cc.key, "ClientCert option"
		if cc.cert == "" && cc.key == "" {
			return in, fmt.Errorf("securereg: ClientCert option has an empty cert and key; give both paths: %w", ErrInvalidConfig)
		}
	case o.TLSConfig != nil && (len(o.TLSConfig.Certificates) > 0 || o.TLSConfig.GetClientCertificate != nil):
		// the caller's certificate, kept by Clone
	case ctls.CertFile != "" || ctls.KeyFile != "":
		in.certFile, in.keyFile, in.certFrom = ctls.CertFile, ctls.KeyFile, "consul.Config TLSConfig.CertFile/KeyFile"
	case len(ctls.CertPEM) > 0 || len(ctls.KeyPEM) > 0:
		in.certPEM, in.keyPEM = ctls.CertPEM, ctls.KeyPEM
	default:
		in.certFile, in.keyFile = getenv(EnvClientCert), getenv(EnvClientKey)
		in.certFrom = EnvClientCert + "/" + EnvClientKey
	}

	// Server name.
	if sn, ok := lookup[string](ctx, serverNameKey{}); ok {
		if strings.TrimSpace(sn) == "" {
			return in, fmt.Errorf("securereg: ServerName option is empty; give the name in Consul's certificate, e.g. server.dc1.consul: %w", ErrInvalidConfig)
		}
		in.serverName = strings.TrimSpace(sn)
	} else if o.TLSConfig != nil && o.TLSConfig.ServerName != "" {
		// the caller's, kept by Clone
	} else if ctls.Address != "" {
		in.serverName = ctls.Address
	} else {
		in.serverName = getenv(EnvTLSServerName)
	}
	return in, nil
}

// resolveToken picks the token source: our options (last one wins), then a
// consul.Config's TokenFile and Token, then CONSUL_HTTP_TOKEN_FILE, then
// CONSUL_HTTP_TOKEN. It reads the token once so that a bad file fails now.
func resolveToken(c *config, ctx context.Context, getenv func(string) string) error {
	var src TokenSource
	var from string
	if ts, ok := lookup[tokenSetting](ctx, tokenKey{}); ok {
		src, from = ts.src, ts.from
		if src == nil {
			return fmt.Errorf("securereg: the Tokens option was given a nil TokenSource: %w", ErrNoToken)
		}
	} else if c.consul != nil && c.consul.TokenFile != "" {
		src, from = FileTokenSource(c.consul.TokenFile), "consul.Config TokenFile"
	} else if c.consul != nil && strings.TrimSpace(c.consul.Token) != "" {
		src, from = StaticTokenSource(c.consul.Token), "consul.Config Token"
	} else if p := getenv(EnvHTTPTokenFile); p != "" {
		src, from = FileTokenSource(p), EnvHTTPTokenFile
	} else if v := getenv(EnvHTTPToken); v != "" {
		src, from = StaticTokenSource(v), EnvHTTPToken
	}
	if src == nil {
		if c.dev {
			c.warnings = append(c.warnings, "no ACL token configured")
			c.tokenFrom = "nowhere (DevMode)"
			return nil
		}
		return fmt.Errorf("securereg: no Consul ACL token: set %s (preferred) or %s, or use the TokenFile or Token option; with ACLs in default-deny mode every call would fail: %w",
			EnvHTTPTokenFile, EnvHTTPToken, ErrNoToken)
	}
	if _, err := src.Token(); err != nil {
		return fmt.Errorf("securereg: ACL token from %s: %w", from, stripPrefix(err))
	}
	c.tokens, c.tokenFrom = src, from
	return nil
}

// stripPrefix keeps wrapped errors from repeating "securereg: ".
func stripPrefix(err error) error {
	return prefixless{err}
}

type prefixless struct{ err error }

func (p prefixless) Error() string { return strings.TrimPrefix(p.err.Error(), "securereg: ") }
func (p prefixless) Unwrap() error { return p.err }

// envBool parses a boolean environment variable strictly. It returns true
// when the variable is set and false.
func envBool(getenv func(string) string, name string) (off bool, err error) {
	v := getenv(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("securereg: %s=%q is not a boolean; use true or false: %w", name, v, ErrInvalidConfig)
	}
	return !b, nil
}

// parseAddr splits an address into scheme ("" when none was given) and
// host:port, adding port 8501 when it is missing.
func parseAddr(raw, from string) (scheme, hostport string, err error) {
	a := strings.TrimSpace(raw)
	if a == "" {
		return "", "", fmt.Errorf("securereg: empty address in %s; give host:port, e.g. 127.0.0.1:8501: %w", from, ErrInvalidConfig)
	}
	rest := a
	if i := strings.Index(a, "://"); i >= 0 {
		scheme, rest = strings.ToLower(a[:i]), a[i+3:]
		switch scheme {
		case "http", "https":
		case "unix":
			return "", "", fmt.Errorf("securereg: address %q from %s is a unix socket, which has no TLS; use https://host:8501: %w", a, from, ErrInvalidConfig)
		default:
			return "", "", fmt.Errorf("securereg: address %q from %s has unknown scheme %q; use https://: %w", a, from, scheme, ErrInvalidConfig)
		}
	}
	rest = strings.TrimSuffix(rest, "/")
	u, err := url.Parse("//" + rest)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" {
		return "", "", fmt.Errorf("securereg: address %q from %s is not host:port; path prefixes, user info and queries are not supported: %w", a, from, ErrInvalidConfig)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return "", "", fmt.Errorf("securereg: address %q from %s has no host: %w", a, from, ErrInvalidConfig)
	}
	if port == "" {
		port = defaultPort
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("securereg: address %q from %s has port %q out of range: %w", a, from, port, ErrInvalidConfig)
	}
	return scheme, net.JoinHostPort(host, port), nil
}

// isInsecureSuite reports whether id is one of crypto/tls's known-insecure
// cipher suites (RC4, 3DES, CBC-SHA256, NULL...).
func isInsecureSuite(id uint16) bool {
	for _, cs := range tls.InsecureCipherSuites() {
		if cs.ID == id {
			return true
		}
	}
	return false
}
