package securereg

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securereg/securereg/internal/testca"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWatchedTokenDoesNoFileIO: once a reloader polls the file, Token is an
// atomic load: no stat, no read, however many requests.
func TestWatchedTokenDoesNoFileIO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte(internalToken), 0o600))
	var stats atomic.Int64
	ft := &fileToken{path: path, now: time.Now, interval: time.Second,
		stat: func(p string) (os.FileInfo, error) { stats.Add(1); return os.Stat(p) }}
	_, err := ft.Token() // first read
	require.NoError(t, err)
	ft.watched.Add(1)
	stats.Store(0)
	for range 10000 {
		tok, err := ft.Token()
		require.NoError(t, err)
		require.Equal(t, internalToken, tok)
	}
	assert.Zero(t, stats.Load(), "stats in the request path while watched")

	// Unwatched (a FileTokenSource used on its own): at most one stat a second.
	ft.watched.Add(-1)
	for range 10000 {
		_, err := ft.Token()
		require.NoError(t, err)
	}
	assert.LessOrEqual(t, stats.Load(), int64(1))
}

// TestExpiryCheckedPeriodically: expiry is checked again while running,
// not only at construction; a certificate that has expired meanwhile is an
// Error and an EventExpired.
func TestExpiryCheckedPeriodically(t *testing.T) {
	ca := testca.New(t)
	dir := t.TempDir()
	certFile, keyFile := ca.Client(t, "c").Write(t, dir, "client")
	st, err := buildTLS(tlsInputs{certFile: certFile, keyFile: keyFile, certFrom: "test"}, time.Now())
	require.NoError(t, err)

	var mu sync.Mutex
	var events []Event
	var logs strings.Builder
	sink := &eventSink{logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil)), fn: func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}}
	cfg := &config{tls: st, expiry: 30 * 24 * time.Hour}
	r := newReloader(cfg, &rotatingTransport{}, sink)
	r.expiryEvery = 20 * time.Millisecond
	future := time.Now().Add(400 * 24 * time.Hour) // past the client certificate's NotAfter
	r.now = func() time.Time { return future }
	r.start()
	defer r.close()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, e := range events {
			if e.Kind == EventExpired {
				n++
			}
		}
		return n >= 2 // at start and at least once more
	}, 5*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	assert.Contains(t, logs.String(), "level=ERROR")
	assert.Contains(t, logs.String(), "has expired")
}

type lockedWriter struct {
	w  *strings.Builder
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestEventSinkRecoversPanics(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	s := &eventSink{logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil)), fn: func(Event) { panic("boom") }}
	assert.NotPanics(t, func() { s.emit(slog.LevelInfo, "x", Event{Kind: EventCertRotated}) })
	assert.Contains(t, logs.String(), "OnEvent callback panicked")
}

// BenchmarkFileToken measures Token on the request path: watched (a
// registry's reloader polls the file) against a FileTokenSource on its own.
func BenchmarkFileToken(b *testing.B) {
	path := filepath.Join(b.TempDir(), "token")
	require.NoError(b, os.WriteFile(path, []byte(internalToken), 0o600))
	for _, watched := range []bool{true, false} {
		name := "unwatched"
		if watched {
			name = "watched"
		}
		b.Run(name, func(b *testing.B) {
			ft := FileTokenSource(path).(*fileToken)
			if watched {
				ft.watched.Add(1)
			}
			_, err := ft.Token()
			require.NoError(b, err)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ft.Token(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
