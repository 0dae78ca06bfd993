package securereg

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-cleanhttp"
)

// maxIdleConnsPerHost keeps enough warm connections to the agent that
// concurrent callers do not pay a new TLS handshake; the stock plugin's
// transport keeps Go's default of 2.
const maxIdleConnsPerHost = 32

// newHTTPClient returns the client that consul/api uses: the token
// transport, then per-request timeouts, then failover between addresses,
// then a swappable pooled keep-alive transport of our own (never
// http.DefaultTransport) with the verified TLS config.
func newHTTPClient(c *config, sink *eventSink) (*http.Client, *rotatingTransport) {
	rt := &rotatingTransport{}
	var tlsCfg *tls.Config
	if c.tls != nil {
		tlsCfg = c.tls.config()
	}
	rt.swap(newPooledTransport(tlsCfg))
	var next http.RoundTripper = rt
	if len(c.addrs) > 1 {
		next = &failoverTransport{base: next, addrs: c.addrs, logger: c.logger}
	}
	if c.timeout > 0 {
		next = &timeoutTransport{base: next, timeout: c.timeout}
	}
	return &http.Client{Transport: &tokenTransport{base: next, src: c.tokens, sink: sink}}, rt
}

// newPooledTransport returns a keep-alive transport for tlsCfg (nil only for
// plain HTTP in DevMode).
func newPooledTransport(tlsCfg *tls.Config) *http.Transport {
	t := cleanhttp.DefaultPooledTransport()
	t.TLSClientConfig = tlsCfg
	t.MaxIdleConnsPerHost = maxIdleConnsPerHost
	t.ForceAttemptHTTP2 = true // a custom TLS config disables HTTP/2 otherwise
	// Consul's answers are small and the agent is usually local: gzip
	// costs both sides more CPU than it saves (measured: about 10% of a
	// lookup's time).
	t.DisableCompression = true
	return t
}

// rotatingTransport sends each request through the current transport. When
// the client certificate or CA changes, the reloader swaps in a transport
// built from the new TLS config: new requests open new, freshly verified
// connections, while requests in flight finish on the old ones.
type rotatingTransport struct {
	cur atomic.Pointer[http.Transport]
}

func (r *rotatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.cur.Load().RoundTrip(req)
}

// swap installs t and closes the idle connections of the one it replaces.
func (r *rotatingTransport) swap(t *http.Transport) {
	if old := r.cur.Swap(t); old != nil {
		old.CloseIdleConnections()
	}
}

// closeIdle closes the idle connections of the current transport.
func (r *rotatingTransport) closeIdle() {
	if t := r.cur.Load(); t != nil {
		t.CloseIdleConnections()
	}
}

// timeoutTransport bounds each request by timeout (registry.Timeout). A
// blocking query (one with an index parameter, as Watch sends) is given its
// wait time plus Consul's jitter on top, so the timeout does not break
// watches the way http.Client.Timeout would.
type timeoutTransport struct {
	base    http.RoundTripper
	timeout time.Duration
}

// consulDefaultWait is the wait of a blocking query that names none.
const consulDefaultWait = 5 * time.Minute

func (t *timeoutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	d := t.timeout
	if q := req.URL.Query(); q.Has("index") {
		wait := consulDefaultWait
		if w, err := time.ParseDuration(q.Get("wait")); err == nil && w > 0 {
			wait = w
		}
		d += wait + wait/16
	}
	ctx, cancel := context.WithTimeout(req.Context(), d)
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelOnClose releases a request's timeout context when the body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
