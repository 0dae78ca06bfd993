package securereg

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/go-micro/plugins/v4/registry/consul"
	"github.com/hashicorp/consul/api"
	"go-micro.dev/v4/registry"
)

// Sentinel errors. Every error securereg returns starts with "securereg: ",
// names the setting, file or variable at fault and says how to fix it; test
// for the condition with [errors.Is].
var (
	// ErrInsecure is returned when certificate verification would be
	// skipped (InsecureSkipVerify in a registry.TLSConfig or a
	// consul.Config, or CONSUL_HTTP_SSL_VERIFY=false), or a TLS MinVersion
	// or MaxVersion below 1.2 or an insecure cipher suite is asked for,
	// without [DevMode]. Also returned by an Init that tries to turn
	// DevMode on.
	ErrInsecure = errors.New("insecure TLS refused")

	// ErrPlaintext is returned when plain HTTP is asked for (an http://
	// address, registry.Secure(false) or CONSUL_HTTP_SSL=false) without
	// [DevMode].
	ErrPlaintext = errors.New("plain HTTP refused")

	// ErrNoToken is returned when no ACL token is configured by option,
	// consul.Config or environment, or the one configured is blank (an
	// empty or whitespace-only token file counts), without [DevMode].
	ErrNoToken = errors.New("no ACL token")

	// ErrFileMode is returned when a private key or token file is
	// readable or writable by others, or writable by its group. Symlinks
	// are followed. 0600, 0400 and 0640 pass.
	ErrFileMode = errors.New("file permissions too open")

	// ErrCertExpired is returned when the client certificate is expired
	// or not yet valid. The message names the file and the date.
	ErrCertExpired = errors.New("certificate expired or not yet valid")

	// ErrPermissionDenied is returned when Consul answers 403 "Permission
	// denied": the token is valid but its policies lack the permission.
	ErrPermissionDenied = errors.New("permission denied by Consul ACL")

	// ErrTokenInvalid is returned when Consul answers 403 "ACL not found":
	// the token is unknown to Consul, expired or revoked.
	ErrTokenInvalid = errors.New("ACL token not found by Consul")

	// ErrInvalidConfig is returned for malformed input: a missing or
	// unreadable file, a malformed PEM, a cert/key mismatch, a bad
	// address or environment value. The underlying cause is wrapped too,
	// so errors.Is(err, fs.ErrNotExist) works for a missing file.
	ErrInvalidConfig = errors.New("invalid configuration")

	// ErrClosed is returned by every method after [Registry.Close].
	ErrClosed = errors.New("registry closed")
)

// Registry is a go-micro [registry.Registry] backed by Consul over verified
// TLS, with the ACL token sent by an http.RoundTripper on every request. It
// uses go-micro's Consul plugin for the registry logic (so the data in Consul
// is the same) but builds the HTTP client, TLS and token itself.
//
// A Registry is safe for concurrent use. Its zero value is not usable: get
// one from [New] or [NewRegistry].
type Registry struct {
	mu       sync.RWMutex // guards the fields below
	opts     registry.Options
	st       *state // current working configuration; nil if none validated yet
	err      error  // why st is nil
	closed   bool
	watchers map[*svcWatcher]struct{}
	devWarn  sync.Once
}

// state is one validated configuration and the clients built from it.
type state struct {
	cfg      *config
	inner    registry.Registry // go-micro's Consul plugin, on our HTTP client
	api      *api.Client       // consul/api on the same HTTP client, for watches and checks
	client   *http.Client      // the HTTP client both use
	query    *api.QueryOptions // the plugin's: AllowStale unless told otherwise; read-only
	connect  bool              // consul.Connect(): look up Connect-capable instances
	rt       *rotatingTransport
	reloader *reloader // nil when there is nothing to watch
}

// close stops the reloader and closes idle connections.
func (s *state) close() {
	if s.reloader != nil {
		s.reloader.close()
	}
	s.rt.closeIdle()
}

var _ registry.Registry = (*Registry)(nil)

// New returns a Registry for the given options, or an error if they (or the
// environment) are incomplete or insecure. It mixes our options ([CAFile],
// [ClientCert], [TokenFile], ...) with go-micro's (registry.Addrs, Timeout,
// Secure, TLSConfig) and the plugin's (consul.TCPCheck, consul.HTTPCheck,
// consul.Connect, consul.QueryOptions, consul.AllowStale, consul.Config),
// which pass through. From a consul.Config only the HTTP client, TLS
// settings and token are ours; the rest is kept.
//
// New reads the files it is given and checks them, but does not contact
// Consul. Use [Registry.Close] to release the connections and watchers.
func New(opts ...registry.Option) (*Registry, error) {
	o := applyOptions(opts)
	st, err := newState(o)
	if err != nil {
		return nil, err
	}
	r := &Registry{opts: o, st: st, watchers: make(map[*svcWatcher]struct{})}
	r.warnDevMode(st.cfg)
	return r, nil
}

// NewRegistry is the drop-in replacement for the plugin's consul.NewRegistry.
// It never returns nil. If the configuration is invalid it logs the error
// and returns a Registry whose Init and every other method return that
// error; it never falls back to an insecure connection. Prefer [New] where
// an error can be handled.
func NewRegistry(opts ...registry.Option) registry.Registry {
	r, err := New(opts...)
	if err == nil {
		return r
	}
	o := applyOptions(opts)
	logger, _ := lookup[*slog.Logger](o.Context, loggerKey{})
	if logger == nil {
		logger = slog.Default()
	}
	logger.Error("securereg: registry disabled by configuration error; every call will fail", "error", err)
	return &Registry{opts: o, err: err, watchers: make(map[*svcWatcher]struct{})}
}

func newState(o registry.Options) (*state, error) {
	cfg, err := resolve(o, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	sink := &eventSink{logger: cfg.logger, fn: cfg.onEvent}
	client, rt := newHTTPClient(cfg, sink)

	// The consul/api config: a caller's consul.Config minus what is ours.
	var ac api.Config
	if cfg.consul != nil {
		ac = *cfg.consul
	}
	ac.Address = cfg.addrs[0]
	ac.Scheme = cfg.scheme
	ac.HttpClient = client
	ac.Transport = nil
	ac.TLSConfig = api.TLSConfig{}
	ac.Token = placeholderToken // replaced by tokenTransport
	ac.TokenFile = ""

	// The plugin sees no Addrs (so it makes no probe needing
	// operator:read), no Secure or TLSConfig (so it keeps our transport)
	// and no Timeout (our timeoutTransport spares blocking queries).
	po := o
	po.Addrs, po.Secure, po.TLSConfig, po.Timeout = nil, false, nil, 0
	pluginCfg, apiCfg := ac, ac
	inner := consul.NewRegistry(func(x *registry.Options) { *x = po }, consul.Config(&pluginCfg))
	apiClient, err := api.NewClient(&apiCfg)
	if err != nil {
		return nil, fmt.Errorf("securereg: consul client: %w: %w", err, ErrInvalidConfig)
	}
	st := &state{cfg: cfg, inner: inner, api: apiClient, client: client, rt: rt, query: &api.QueryOptions{AllowStale: true}}
	// The plugin's own query settings, read from the same context keys
	// (consul.QueryOptions, consul.AllowStale, consul.Connect), copied so
	// the caller's value is never changed.
	if q, ok := lookup[*api.QueryOptions](o.Context, "consul_query_options"); ok && q != nil {
		cp := *q
		st.query = &cp
	}
	if stale, ok := lookup[bool](o.Context, "consul_allow_stale"); ok {
		st.query.AllowStale = stale
	}
	st.connect, _ = lookup[bool](o.Context, "consul_connect")
	if rl := newReloader(cfg, rt, sink); rl.needed() {
		st.reloader = rl
		rl.start()
	}
	return st, nil
}

func (r *Registry) warnDevMode(cfg *config) {
	if !cfg.dev {
		return
	}
	r.devWarn.Do(func() {
		cfg.logger.Warn("securereg: DEVMODE IS ON: the Consul connection is NOT secure; never ship this",
			"relaxed", strings.Join(append([]string{"DevMode() set in code"}, cfg.warnings...), "; "))
	})
}

// Init applies more options and re-validates the whole configuration,
// including re-reading the files. If the result is invalid, or would
// downgrade a registry built without DevMode (DevMode, InsecureSkipVerify,
// http://, Secure(false)), Init returns the error and the registry keeps
// working with its previous configuration. On a registry whose construction
// failed, a successful Init makes it usable.
func (r *Registry) Init(opts ...registry.Option) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errClosed()
	}
	o := r.opts
	o.Addrs = append([]string(nil), r.opts.Addrs...)
	for _, opt := range opts {
		opt(&o)
	}
	if o.Context == nil {
		o.Context = r.opts.Context
	}
	if r.st != nil && !r.st.cfg.dev {
		if dev, _ := lookup[bool](o.Context, devModeKey{}); dev {
			return fmt.Errorf("securereg: Init cannot turn on DevMode for a registry built without it; build a new registry with DevMode() for local development: %w", ErrInsecure)
		}
	}
	st, err := newState(o)
	if err != nil {
		if r.st == nil {
			r.err = err
		}
		return err
	}
	old := r.st
	r.opts, r.st, r.err = o, st, nil
	if old != nil {
		// Watchers started before keep their own client, no longer
		// reloaded; new calls use the new one.
		old.close()
	}
	r.warnDevMode(st.cfg)
	return nil
}

// Options returns the options in effect: Addrs holds the resolved
// host:port addresses and Secure reports whether TLS is on. Printing them
// never shows the token.
func (r *Registry) Options() registry.Options {
	r.mu.RLock()
	defer r.mu.RUnlock()
	o := r.opts
	if r.st != nil {
		o.Addrs = append([]string(nil), r.st.cfg.addrs...)
		o.Secure = r.st.cfg.scheme == "https"
	} else {
		o.Addrs = append([]string(nil), r.opts.Addrs...)
	}
	return o
}

// current returns the working state, or the reason there is none.
func (r *Registry) current() (*state, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return nil, errClosed()
	}
	if r.st == nil {
		return nil, r.err
	}
	return r.st, nil
}

func errClosed() error {
	return fmt.Errorf("securereg: the registry was closed; create a new one: %w", ErrClosed)
}

// Register registers a service node with the local Consul agent, as the
// plugin does (TTL, TCP and HTTP checks, Connect).
func (r *Registry) Register(s *registry.Service, opts ...registry.RegisterOption) error {
	st, err := r.current()
	if err != nil {
		return err
	}
	if err := checkService(s, "register"); err != nil {
		return err
	}
	return wrapErr(st, fmt.Sprintf("register %q", s.Name), st.inner.Register(s, opts...))
}

// Deregister removes a service node from the local Consul agent.
func (r *Registry) Deregister(s *registry.Service, opts ...registry.DeregisterOption) error {
	st, err := r.current()
	if err != nil {
		return err
	}
	if err := checkService(s, "deregister"); err != nil {
		return err
	}
	return wrapErr(st, fmt.Sprintf("deregister %q", s.Name), st.inner.Deregister(s, opts...))
}

// GetService returns the healthy nodes of a service, grouped by version,
// exactly as the plugin decodes them, but with each distinct tag decoded
// once and cached.
func (r *Registry) GetService(name string, opts ...registry.GetOption) ([]*registry.Service, error) {
	st, err := r.current()
	if err != nil {
		return nil, err
	}
	svcs, err := st.getService(name)
	return svcs, wrapErr(st, fmt.Sprintf("get service %q", name), err)
}

// getService looks the service up with the registry's query options.
func (s *state) getService(name string) ([]*registry.Service, error) {
	entries, _, err := healthQuery(s.api, name, s.connect, s.query)
	if err != nil {
		return nil, err
	}
	return tags.services(name, entries), nil
}

// ListServices returns the names of all services in the catalog.
func (r *Registry) ListServices(opts ...registry.ListOption) ([]*registry.Service, error) {
	st, err := r.current()
	if err != nil {
		return nil, err
	}
	svcs, err := st.inner.ListServices(opts...)
	return svcs, wrapErr(st, "list services", err)
}

// Watch returns a watcher of one service's changes (registry.WatchService
// is required, as with the plugin), driven by Consul blocking queries. Its
// results are the plugin's: create, update and delete per version. Stop it
// when done; [Registry.Close] stops any still running.
func (r *Registry) Watch(opts ...registry.WatchOption) (registry.Watcher, error) {
	st, err := r.current()
	if err != nil {
		return nil, err
	}
	var wo registry.WatchOptions
	for _, o := range opts {
		o(&wo)
	}
	if wo.Service == "" {
		return nil, fmt.Errorf("securereg: watch: name the service with registry.WatchService; watching every service is not supported: %w", ErrInvalidConfig)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errClosed()
	}
	w := newSvcWatcher(r, st, wo.Service)
	r.watchers[w] = struct{}{}
	return w, nil
}

// forget drops a stopped watcher.
func (r *Registry) forget(w *svcWatcher) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.watchers, w)
}

// String returns "consul", as the plugin does, so go-micro's
// MICRO_REGISTRY=consul keeps this registry instead of replacing it with
// the insecure plugin.
func (r *Registry) String() string { return "consul" }

// GoString describes the registry for %#v without any secret.
func (r *Registry) GoString() string {
	o := r.Options()
	return fmt.Sprintf("&securereg.Registry{Addrs:%q, Secure:%t, Token:%s}", o.Addrs, o.Secure, redacted)
}

// Close stops every watcher and closes idle connections. Calls after Close
// return [ErrClosed]. Close is idempotent and always returns nil.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	ws := r.watchers
	r.watchers = nil
	st := r.st
	r.mu.Unlock()
	for w := range ws {
		w.Stop()
	}
	if st != nil {
		st.close()
	}
	return nil
}

// checkService refuses input the plugin would panic on.
func checkService(s *registry.Service, op string) error {
	if s == nil {
		return fmt.Errorf("securereg: %s: service is nil: %w", op, ErrInvalidConfig)
	}
	if len(s.Nodes) == 0 {
		return fmt.Errorf("securereg: %s %q: service has no nodes; add at least one registry.Node: %w", op, s.Name, ErrInvalidConfig)
	}
	for i, n := range s.Nodes {
		if n == nil {
			return fmt.Errorf("securereg: %s %q: node %d is nil: %w", op, s.Name, i, ErrInvalidConfig)
		}
	}
	return nil
}

// wrapErr prefixes err once, maps Consul's 403 answers to sentinels and adds
// a hint for the usual TLS failures. It never adds the token: Consul's
// bodies name a token's AccessorID at most, never its SecretID.
func wrapErr(st *state, op string, err error) error {
	if err == nil {
		return nil
	}
	// An error of our own inside *url.Error (from tokenTransport) is
	// already prefixed and explained.
	var ue *url.Error
	if errors.As(err, &ue) && strings.HasPrefix(ue.Err.Error(), "securereg: ") {
		return fmt.Errorf("securereg: %s: %w", op, stripPrefix(ue.Err))
	}
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusForbidden {
		switch {
		case strings.Contains(se.Body, "ACL not found"):
			return fmt.Errorf("securereg: %s: Consul does not know the ACL token (unknown, expired or revoked); put a valid token in the token file or %s: %w: %w",
				op, EnvHTTPToken, ErrTokenInvalid, err)
		case strings.Contains(se.Body, "Permission denied"):
			return fmt.Errorf("securereg: %s: the ACL token lacks a permission; add it to the token's policy (securereg policy prints one): %w: %w",
				op, ErrPermissionDenied, err)
		}
	}
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var verr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &hostErr):
		return fmt.Errorf("securereg: %s: Consul's certificate does not carry the expected name; set ServerName or %s (e.g. server.dc1.consul): %w",
			op, EnvTLSServerName, err)
	case errors.As(err, &unknownCA), errors.As(err, &verr):
		return fmt.Errorf("securereg: %s: Consul's certificate is not signed by a trusted CA; set CAFile or %s to Consul's CA: %w",
			op, EnvCACert, err)
	case strings.Contains(err.Error(), "tls: unknown certificate authority"):
		return fmt.Errorf("securereg: %s: Consul rejected the client certificate: it is not signed by a CA that Consul trusts (its tls ca_file); check ClientCert or %s: %w",
			op, EnvClientCert, err)
	case st != nil && st.hasClientCert() && isConnFailure(err):
		return fmt.Errorf("securereg: %s: the TLS connection to Consul failed; if Consul rejected the client certificate, check that it is signed by a CA Consul trusts (its tls ca_file), is valid now and allows client auth (ClientCert or %s): %w",
			op, EnvClientCert, err)
	case st != nil && !st.hasClientCert() && isConnFailure(err):
		// With TLS 1.3 the server checks the client certificate after
		// the client has finished its handshake, so a missing one shows
		// up as an alert, a reset, a broken pipe or an HTTP/2 setup
		// failure on first use.
		return fmt.Errorf("securereg: %s: the connection to Consul failed and no client certificate is configured; if Consul has verify_incoming (as it should), set ClientCert or %s and %s: %w",
			op, EnvClientCert, EnvClientKey, err)
	case strings.Contains(err.Error(), "tls: certificate required"), strings.Contains(err.Error(), "tls: bad certificate"):
		return fmt.Errorf("securereg: %s: Consul refused the client certificate; check ClientCert or %s and %s: %w",
			op, EnvClientCert, EnvClientKey, err)
	}
	return fmt.Errorf("securereg: %s: %w", op, err)
}

// hasClientCert reports whether a client certificate is configured.
func (s *state) hasClientCert() bool {
	t := s.cfg.tls
	return t != nil && (t.cert != nil || len(t.base.Certificates) > 0 || t.base.GetClientCertificate != nil)
}

// isConnFailure reports whether err happened below HTTP: the request never
// got an answer. Refused connections and timeouts do not count; they are
// not about certificates.
func isConnFailure(err error) bool {
	var ue *url.Error
	if !errors.As(err, &ue) || ue.Timeout() || errors.Is(err, syscall.ECONNREFUSED) {
		return false
	}
	var ne *net.OpError
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) || strings.Contains(err.Error(), "tls: ") ||
		strings.Contains(err.Error(), "http2: client conn could not be established")
}
