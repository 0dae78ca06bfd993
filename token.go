package securereg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// TokenSource supplies the Consul ACL token sent with every request.
//
// Token returns the current token, already trimmed. It must be safe for
// concurrent use by multiple goroutines, and its errors must never contain
// the token.
type TokenSource interface {
	Token() (string, error)
}

// StaticTokenSource returns a [TokenSource] that always returns token,
// trimmed of surrounding whitespace. A blank token yields [ErrNoToken].
func StaticTokenSource(token string) TokenSource {
	return &staticToken{tok: newSecret(token)}
}

// FileTokenSource returns a [TokenSource] that reads the token from path. The
// file is read on first use and again when its size, modification time or
// identity change (checked at most once a second), so a token rotated by
// Vault Agent (temp file and rename) or by a Kubernetes secret volume is
// picked up without a restart. If a re-read fails or finds a blank file, the
// last good token keeps being served; without one, Token returns the error.
// A file readable by others or writable by the group yields [ErrFileMode];
// a blank file yields [ErrNoToken].
func FileTokenSource(path string) TokenSource {
	return &fileToken{path: path, now: time.Now, stat: os.Stat, interval: time.Second}
}

var (
	_ TokenSource = (*staticToken)(nil)
	_ TokenSource = (*fileToken)(nil)
)

const redacted = "[redacted]"

// secret holds a token and formats as [redacted] under every fmt verb, in
// JSON and in slog. Keep it behind a pointer inside other structs: fmt prints
// unexported struct fields without calling their methods, but prints nested
// pointers as addresses.
type secret struct{ v string }

func newSecret(s string) *secret { return &secret{v: string(bytes.TrimSpace([]byte(s)))} }

func (secret) String() string               { return redacted }
func (secret) GoString() string             { return redacted }
func (secret) Format(f fmt.State, _ rune)   { _, _ = io.WriteString(f, redacted) }
func (secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (s *secret) empty() bool               { return s == nil || s.v == "" }
func (s *secret) reveal() string            { return s.v }
func (*staticToken) String() string         { return "securereg.StaticTokenSource(" + redacted + ")" }
func (f *fileToken) String() string         { return fmt.Sprintf("securereg.FileTokenSource(%q)", f.path) }
func (*staticToken) GoString() string       { return "securereg.StaticTokenSource(" + redacted + ")" }
func (f *fileToken) GoString() string       { return f.String() }
func (*staticToken) Format(s fmt.State, _ rune) {
	_, _ = io.WriteString(s, "securereg.StaticTokenSource("+redacted+")")
}
func (f *fileToken) Format(s fmt.State, _ rune) { _, _ = io.WriteString(s, f.String()) }

type staticToken struct{ tok *secret }

func (s *staticToken) Token() (string, error) {
	if s.tok.empty() {
		return "", fmt.Errorf("securereg: the Token option is blank; pass a token or use TokenFile: %w", ErrNoToken)
	}
	return s.tok.reveal(), nil
}

type fileToken struct {
	path     string
	now      func() time.Time
	stat     func(string) (os.FileInfo, error) // os.Stat; counted in tests
	interval time.Duration                     // minimum time between stats when nobody polls

	// watched > 0 while a registry's reloader polls the file: Token then
	// does no file I/O at all.
	watched atomic.Int32
	cur     atomic.Pointer[tokenSnap] // last good token; nil before the first
	mu      sync.Mutex                // serialises reads of the file; guards checked
	checked time.Time
}

// tokenSnap is a token and the file state it was read from.
type tokenSnap struct {
	tok *secret
	st  os.FileInfo
}

func (f *fileToken) Token() (string, error) {
	if f.watched.Load() > 0 {
		if s := f.cur.Load(); s != nil {
			return s.tok.reveal(), nil
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if s := f.cur.Load(); s != nil && now.Sub(f.checked) < f.interval {
		return s.tok.reveal(), nil
	}
	f.checked = now
	if _, err := f.pollLocked(); err != nil {
		if s := f.cur.Load(); s != nil {
			return s.tok.reveal(), nil // keep serving the last good token
		}
		return "", err
	}
	return f.cur.Load().tok.reveal(), nil
}

// poll re-reads the file if its identity, size or modification time
// changed. It reports whether the token changed. On error the last good
// token stays.
func (f *fileToken) poll() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pollLocked()
}

func (f *fileToken) pollLocked() (bool, error) {
	cur := f.cur.Load()
	if st, err := f.stat(f.path); err == nil && cur != nil && sameFile(st, cur.st) {
		return false, nil
	}
	tok, st, err := readTokenFile(f.path)
	if err != nil {
		return false, err
	}
	if cur != nil && cur.tok.v == tok.v {
		f.cur.Store(&tokenSnap{tok: cur.tok, st: st})
		return false, nil
	}
	f.cur.Store(&tokenSnap{tok: tok, st: st})
	return cur != nil, nil // the first read is not a rotation
}

// refresh re-reads the file now, whatever its stat says, because Consul
// has just refused the token. It reports whether the token changed.
func (f *fileToken) refresh() (changed bool, file string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tok, st, err := readTokenFile(f.path)
	if err != nil {
		return false, f.path
	}
	cur := f.cur.Load()
	if cur != nil && cur.tok.v == tok.v {
		return false, f.path
	}
	f.cur.Store(&tokenSnap{tok: tok, st: st})
	return true, f.path
}

// refresher is a TokenSource that can re-read its token on demand.
type refresher interface {
	refresh() (changed bool, file string)
}

// sameFile reports whether a and b describe the same unchanged file: same
// identity (a rename or a Kubernetes ..data swap changes it), size,
// modification time and mode (so a chmod is re-checked too).
func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && a.Mode() == b.Mode()
}

// readTokenFile reads and checks a token file. Errors name the path, never
// the contents.
func readTokenFile(path string) (*secret, os.FileInfo, error) {
	if path == "" {
		return nil, nil, fmt.Errorf("securereg: token file path is empty; set TokenFile or %s to the file's path: %w", EnvHTTPTokenFile, ErrInvalidConfig)
	}
	if err := checkPrivateFile(path, "token file", ""); err != nil {
		return nil, nil, err
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("securereg: read token file: %w: %w", err, ErrInvalidConfig)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("securereg: read token file: %w: %w", err, ErrInvalidConfig)
	}
	data, err := io.ReadAll(io.LimitReader(fh, 64<<10))
	if err != nil {
		return nil, nil, fmt.Errorf("securereg: read token file: %w: %w", err, ErrInvalidConfig)
	}
	tok := newSecret(string(data))
	if tok.empty() {
		return nil, nil, fmt.Errorf("securereg: token file %q is empty; write the ACL token's SecretID into it: %w", path, ErrNoToken)
	}
	return tok, st, nil
}

// tokenHeader is the header Consul reads the ACL token from.
const tokenHeader = "X-Consul-Token"

// placeholderToken is what we give consul/api as its configured token. The
// api copies it into every request; tokenTransport replaces it with the real
// token. A request that carries any other value was given an explicit token
// (a per-request QueryOptions.Token) and is left alone. The placeholder also
// stops consul/api from loading CONSUL_HTTP_TOKEN(_FILE) on its own.
const placeholderToken = "securereg-token-placeholder"

// tokenTransport is an http.RoundTripper that sets X-Consul-Token from a
// TokenSource. It never sends a token over plain HTTP. It is not a
// general-purpose RoundTripper: it only serves requests built for one use
// by consul/api or securereg, whose placeholder token it replaces in place. When Consul answers
// 403 "ACL not found" and the source can re-read its token, it does so at
// once and retries the request once if the token changed.
type tokenTransport struct {
	base http.RoundTripper // must not be nil
	src  TokenSource       // nil: send no token
	sink *eventSink        // nil: no events
}

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	h := req.Header.Get(tokenHeader)
	switch {
	case req.URL.Scheme != "https":
		// Plain HTTP is only possible in DevMode, and even there the
		// token stays home.
		if h != "" {
			req = cloneRequest(req)
			req.Header.Del(tokenHeader)
		}
		return t.base.RoundTrip(req)
	case h != "" && h != placeholderToken:
		// explicit per-request token: leave it alone
		return t.base.RoundTrip(req)
	case t.src == nil:
		if h != "" {
			req = cloneRequest(req)
			req.Header.Del(tokenHeader)
		}
		return t.base.RoundTrip(req)
	}
	tok, err := t.src.Token()
	if err != nil {
		closeBody(req)
		return nil, err
	}
	// The requests that reach this transport are built for one use by
	// consul/api (a fresh header map per request, see api.Client.Headers)
	// or by securereg itself, and carry our placeholder: swapping the
	// value in place is safe and costs no allocation, where cloning the
	// request, as a general-purpose RoundTripper must, costs several.
	if vals := req.Header[tokenHeader]; len(vals) == 1 && vals[0] == placeholderToken {
		vals[0] = tok
	} else {
		req.Header.Set(tokenHeader, tok)
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		return resp, err
	}
	return t.forbidden(req, resp)
}

// forbidden handles a 403: it reports the refusal and, for "ACL not found",
// re-reads the token and retries once if it changed.
func (t *tokenTransport) forbidden(req *http.Request, resp *http.Response) (*http.Response, error) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	notFound := bytes.Contains(body, []byte("ACL not found"))
	if t.sink != nil && (notFound || bytes.Contains(body, []byte("Permission denied"))) {
		reason := "Consul answered 403 Permission denied: the token's policy lacks a rule"
		if notFound {
			reason = "Consul answered 403 ACL not found: the token is unknown, expired or revoked"
		}
		t.sink.emit(slog.LevelWarn, "securereg: Consul refused the ACL token", Event{Kind: EventAuthFailed, Err: errors.New(reason)})
	}
	rf, ok := t.src.(refresher)
	if !notFound || !ok || (req.Body != nil && req.GetBody == nil) {
		return resp, nil
	}
	changed, file := rf.refresh()
	if !changed {
		return resp, nil
	}
	if t.sink != nil {
		t.sink.emit(slog.LevelInfo, "securereg: ACL token re-read after Consul refused the old one", Event{Kind: EventTokenRotated, File: file})
	}
	tok, err := t.src.Token()
	if err != nil {
		return resp, nil
	}
	retry := cloneRequest(req)
	if req.Body != nil {
		if retry.Body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	retry.Header.Set(tokenHeader, tok)
	return t.base.RoundTrip(retry)
}

// cloneRequest returns a shallow copy of r with a deep copy of its headers,
// as a RoundTripper must not modify the request it was given.
func cloneRequest(r *http.Request) *http.Request {
	r2 := new(http.Request)
	*r2 = *r
	r2.Header = r.Header.Clone()
	return r2
}

func closeBody(r *http.Request) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
}
