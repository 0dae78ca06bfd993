package securereg

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go-micro.dev/v4/registry"
)

const internalToken = "TOKEN-internal-never-print-me"

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in, scheme, hostport string
		bad                  bool
	}{
		{in: "127.0.0.1", hostport: "127.0.0.1:8501"},
		{in: "127.0.0.1:8500", hostport: "127.0.0.1:8500"},
		{in: " consul.internal ", hostport: "consul.internal:8501"},
		{in: "https://consul.internal", scheme: "https", hostport: "consul.internal:8501"},
		{in: "HTTPS://consul.internal:443/", scheme: "https", hostport: "consul.internal:443"},
		{in: "http://127.0.0.1:8500", scheme: "http", hostport: "127.0.0.1:8500"},
		{in: "[::1]", hostport: "[::1]:8501"},
		{in: "[::1]:9501", hostport: "[::1]:9501"},
		{in: "https://[::1]:9501", scheme: "https", hostport: "[::1]:9501"},
		{in: "", bad: true},
		{in: "unix:///var/run/consul.sock", bad: true},
		{in: "ftp://host", bad: true},
		{in: "host:0", bad: true},
		{in: "host:http", bad: true},
		{in: "https://user:pw@host", bad: true},
		{in: "https://host/prefix", bad: true},
		{in: "https://host?x=1", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			scheme, hp, err := parseAddr(tt.in, "test")
			if tt.bad {
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrInvalidConfig)
				assert.True(t, strings.HasPrefix(err.Error(), "securereg: "), "error %q", err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.scheme, scheme)
			assert.Equal(t, tt.hostport, hp)
		})
	}
}

func TestSecretFormatsRedacted(t *testing.T) {
	s := newSecret("  " + internalToken + "\n")
	assert.Equal(t, internalToken, s.reveal(), "trimmed")
	holder := struct {
		Exported *secret
		Value    secret
	}{s, *s}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		for _, v := range []any{s, *s, holder, &holder} {
			out := fmt.Sprintf(verb, v)
			assert.NotContains(t, out, internalToken, "%s of %T", verb, v)
		}
	}
	j, err := json.Marshal(holder)
	require.NoError(t, err)
	assert.NotContains(t, string(j), internalToken)
	var buf strings.Builder
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "token", s, "holder", holder)
	assert.NotContains(t, buf.String(), internalToken)
	assert.Contains(t, buf.String(), redacted)
}

// roundTripFunc records the request a RoundTripper below us receives.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestTokenTransport(t *testing.T) {
	tests := []struct {
		name   string
		url    string
		header string // X-Consul-Token on the way in
		src    TokenSource
		want   string // on the way out
	}{
		{"placeholder replaced", "https://h/v1/x", placeholderToken, StaticTokenSource(internalToken), internalToken},
		{"missing header set", "https://h/v1/x", "", StaticTokenSource(internalToken), internalToken},
		{"explicit token kept", "https://h/v1/x", "per-request", StaticTokenSource(internalToken), "per-request"},
		{"no source strips placeholder", "https://h/v1/x", placeholderToken, nil, ""},
		{"plain HTTP never carries a token", "http://h/v1/x", placeholderToken, StaticTokenSource(internalToken), ""},
		{"plain HTTP strips an explicit token", "http://h/v1/x", "per-request", StaticTokenSource(internalToken), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *http.Request
			tr := &tokenTransport{src: tt.src, base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				got = r
				return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
			})}
			req, err := http.NewRequest(http.MethodGet, tt.url, nil)
			require.NoError(t, err)
			if tt.header != "" {
				req.Header.Set(tokenHeader, tt.header)
			}
			_, err = tr.RoundTrip(req)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got.Header.Get(tokenHeader))
			if tt.want == "" || tt.want == tt.header {
				assert.Equal(t, tt.header, req.Header.Get(tokenHeader), "the caller's request is not mutated")
			}
		})
	}
	t.Run("source error closes the body", func(t *testing.T) {
		tr := &tokenTransport{src: errSource{}, base: roundTripFunc(func(*http.Request) (*http.Response, error) {
			t.Fatal("no request may be sent without its token")
			return nil, nil
		})}
		body := &closeRecorder{}
		req, err := http.NewRequest(http.MethodPut, "https://h/v1/x", body)
		require.NoError(t, err)
		_, err = tr.RoundTrip(req)
		require.ErrorIs(t, err, ErrNoToken)
		assert.True(t, body.closed)
	})
}

type errSource struct{}

func (errSource) Token() (string, error) {
	return "", fmt.Errorf("securereg: test source: %w", ErrNoToken)
}

type closeRecorder struct{ closed bool }

func (c *closeRecorder) Read([]byte) (int, error) { return 0, errors.New("eof") }
func (c *closeRecorder) Close() error             { c.closed = true; return nil }

func TestFileTokenSourceKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/token"
	write := func(s string) {
		t.Helper()
		require.NoError(t, writePrivate(path, s))
	}
	write(internalToken)
	now := time.Unix(1000, 0)
	ft := &fileToken{path: path, now: func() time.Time { return now }, stat: os.Stat, interval: time.Second}
	tok, err := ft.Token()
	require.NoError(t, err)
	assert.Equal(t, internalToken, tok)

	write("") // a half-written rotation
	now = now.Add(2 * time.Second)
	tok, err = ft.Token()
	require.NoError(t, err, "a blank file after a good one keeps the last good token")
	assert.Equal(t, internalToken, tok)

	write("second-" + internalToken)
	now = now.Add(2 * time.Second)
	tok, err = ft.Token()
	require.NoError(t, err)
	assert.Equal(t, "second-"+internalToken, tok)

	// Within the interval no stat happens, so a change is not yet seen.
	write("third-" + internalToken)
	now = now.Add(100 * time.Millisecond)
	tok, err = ft.Token()
	require.NoError(t, err)
	assert.Equal(t, "second-"+internalToken, tok)

	fresh := &fileToken{path: dir + "/missing", now: time.Now, stat: os.Stat, interval: time.Second}
	_, err = fresh.Token()
	require.Error(t, err)
	assert.NotContains(t, err.Error(), internalToken)
}

func writePrivate(path, s string) error {
	return os.WriteFile(path, []byte(s), 0o600)
}

func TestDiffServices(t *testing.T) {
	node := func(id string) *registry.Node { return &registry.Node{Id: id} }
	svc := func(version string, nodes ...string) *registry.Service {
		s := &registry.Service{Name: "greeter", Version: version}
		for _, n := range nodes {
			s.Nodes = append(s.Nodes, node(n))
		}
		return s
	}
	type ev struct {
		action, version string
		nodes           []string
	}
	tests := []struct {
		name     string
		old, new []*registry.Service
		want     []ev
	}{
		{"first sight", nil, []*registry.Service{svc("1", "a")}, []ev{{"create", "1", []string{"a"}}}},
		{"node added", []*registry.Service{svc("1", "a")}, []*registry.Service{svc("1", "a", "b")}, []ev{{"update", "1", []string{"a", "b"}}}},
		{"node removed", []*registry.Service{svc("1", "a", "b")}, []*registry.Service{svc("1", "a")},
			[]ev{{"delete", "1", []string{"b"}}, {"update", "1", []string{"a"}}}},
		{"new version next to old", []*registry.Service{svc("1", "a")}, []*registry.Service{svc("1", "a"), svc("2", "b")},
			[]ev{{"update", "1", []string{"a"}}, {"create", "2", []string{"b"}}}},
		{"version gone", []*registry.Service{svc("1", "a"), svc("2", "b")}, []*registry.Service{svc("2", "b")},
			[]ev{{"update", "2", []string{"b"}}, {"delete", "1", []string{"a"}}}},
		{"all gone", []*registry.Service{svc("1", "a")}, nil, []ev{{"delete", "1", []string{"a"}}}},
		{"nothing", nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []ev
			for _, r := range diffServices(tt.old, tt.new) {
				var ids []string
				for _, n := range r.Service.Nodes {
					ids = append(ids, n.Id)
				}
				got = append(got, ev{r.Action, r.Service.Version, ids})
			}
			assert.Equal(t, tt.want, got)
		})
	}
}
