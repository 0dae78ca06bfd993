package securereg

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/go-cleanhttp"
)

// maxIdleConnsPerHost keeps enough warm connections to the agent that
// concurrent callers do not pay a new TLS handshake; the stock plugin's
// transport keeps Go's default of 2.
const maxIdleConnsPerHost = 32

// newHTTPClient returns the client that consul/api uses: a pooled
// keep-alive transport of our own (never http.DefaultTransport) carrying the
// verified TLS config, then per-request timeouts, then the token.
func newHTTPClient(c *config) (*http.Client, *http.Transport) {
	t := cleanhttp.DefaultPooledTransport()
	t.TLSClientConfig = c.tls // nil only for plain HTTP in DevMode
	t.MaxIdleConnsPerHost = maxIdleConnsPerHost
	t.ForceAttemptHTTP2 = true // a custom TLS config disables HTTP/2 otherwise
	var rt http.RoundTripper = t
	if c.timeout > 0 {
		rt = &timeoutTransport{base: rt, timeout: c.timeout}
	}
	rt = &tokenTransport{base: rt, src: c.tokens}
	return &http.Client{Transport: rt}, t
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
