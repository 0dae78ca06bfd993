package securereg

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
)

// failoverTransport spreads a registry over several Consul addresses
// (registry.Addrs("a:8501", "b:8501")): requests go to the address that
// last worked, and one that cannot be connected to is skipped for the next.
// The stock plugin picks one address at start and never moves.
//
// It fails over only when no connection could be made (a dial error), so a
// request that reached a server is never sent twice, and a certificate that
// fails verification is never "solved" by trying elsewhere without saying so:
// every address is verified the same way.
type failoverTransport struct {
	base   http.RoundTripper
	addrs  []string // host:port; addrs[0] is what consul/api puts in URLs
	cur    atomic.Int32
	logger *slog.Logger
}

func (f *failoverTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	n := int32(len(f.addrs))
	start := f.cur.Load()
	var lastErr error
	for i := int32(0); i < n; i++ {
		idx := (start + i) % n
		r := req
		if i > 0 && req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, lastErr
			}
			body, err := req.GetBody()
			if err != nil {
				return nil, lastErr
			}
			r = cloneRequest(req)
			r.Body = body
		}
		if addr := f.addrs[idx]; req.URL.Host != addr {
			if r == req {
				r = cloneRequest(req)
			}
			u := *req.URL
			u.Host = addr
			r.URL, r.Host = &u, addr
		}
		resp, err := f.base.RoundTrip(r)
		if err == nil {
			if idx != start && f.cur.CompareAndSwap(start, idx) {
				f.logger.Warn("securereg: Consul address unreachable; failed over", "from", f.addrs[start], "to", f.addrs[idx])
			}
			return resp, nil
		}
		if !isDialError(err) || req.Context().Err() != nil {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
}

// isDialError reports whether err means no connection was made.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
