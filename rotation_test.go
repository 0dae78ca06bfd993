package securereg_test

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securereg/securereg"
	"github.com/securereg/securereg/internal/fakeconsul"
	"github.com/securereg/securereg/internal/testca"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go-micro.dev/v4/registry"
)

// pickup is how long tests wait for a rotation to be seen. The promise is
// 2 s; tests allow more so a loaded machine does not make them flaky. They
// assert that rotation happens, not how fast.
const pickup = 15 * time.Second

func lastToken(f *fakeconsul.Server) string {
	reqs := f.Requests()
	if len(reqs) == 0 {
		return ""
	}
	return reqs[len(reqs)-1].Token
}

func TestTokenFileRotation(t *testing.T) {
	tests := []struct {
		name   string
		rotate func(t *testing.T, f *fixture, path string)
	}{
		{"in-place write", func(t *testing.T, f *fixture, path string) {
			require.NoError(t, os.WriteFile(path, []byte(readToken+"\n"), 0o600))
		}},
		{"atomic rename (Vault Agent sink)", func(t *testing.T, f *fixture, path string) {
			atomicWrite(t, path, readToken+"\n", 0o600)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			ev := &eventRecorder{}
			r := newRegistry(t, f.opts(securereg.OnEvent(ev.record))...)
			_, err := r.GetService("greeter")
			require.NoError(t, err)
			require.Equal(t, testToken, lastToken(f.fake))

			tt.rotate(t, f, f.tokenFile)
			require.Eventually(t, func() bool {
				_, err := r.GetService("greeter")
				return err == nil && lastToken(f.fake) == readToken
			}, pickup, 20*time.Millisecond)
			require.NotEmpty(t, ev.of(securereg.EventTokenRotated))
			assert.Equal(t, f.tokenFile, ev.of(securereg.EventTokenRotated)[0].File)
			assertNoSecrets(t, "events", fmt.Sprint(ev.all()))
		})
	}

	t.Run("Kubernetes ..data symlink swap", func(t *testing.T) {
		f := newFixture(t)
		vol := newK8sVolume(t, map[string]string{"token": testToken})
		r := newRegistry(t, f.opts(securereg.TokenFile(vol.path("token")))...)
		_, err := r.GetService("greeter")
		require.NoError(t, err)
		require.Equal(t, testToken, lastToken(f.fake))

		vol.update(t, map[string]string{"token": readToken})
		require.Eventually(t, func() bool {
			_, err := r.GetService("greeter")
			return err == nil && lastToken(f.fake) == readToken
		}, pickup, 20*time.Millisecond)
	})
}

func TestTokenFileBrieflyBroken(t *testing.T) {
	for _, breakIt := range []struct {
		name string
		fn   func(t *testing.T, path string)
	}{
		{"missing", func(t *testing.T, path string) { require.NoError(t, os.Remove(path)) }},
		{"empty", func(t *testing.T, path string) { require.NoError(t, os.WriteFile(path, nil, 0o600)) }},
		{"unreadable mode", func(t *testing.T, path string) { require.NoError(t, os.Chmod(path, 0o644)) }},
	} {
		t.Run(breakIt.name, func(t *testing.T) {
			f := newFixture(t)
			ev := &eventRecorder{}
			r := newRegistry(t, f.opts(securereg.OnEvent(ev.record))...)
			breakIt.fn(t, f.tokenFile)
			require.Eventually(t, func() bool { return len(ev.of(securereg.EventReloadFailed)) > 0 }, pickup, 20*time.Millisecond)
			assert.Contains(t, f.logs.String(), "reload failed")

			// The last good token stays in use.
			_, err := r.GetService("greeter")
			require.NoError(t, err)
			assert.Equal(t, testToken, lastToken(f.fake))
			assert.Len(t, ev.of(securereg.EventReloadFailed), 1, "reported once per episode")

			// And a good file is picked up again.
			atomicWrite(t, f.tokenFile, readToken, 0o600)
			require.Eventually(t, func() bool {
				_, err := r.GetService("greeter")
				return err == nil && lastToken(f.fake) == readToken
			}, pickup, 20*time.Millisecond)
		})
	}
}

// TestTokenRevokedMidFlight: the file is rotated and the old token deleted
// in Consul at once, before the poller can notice. The 403 "ACL not found"
// makes securereg re-read the file and retry, so the call still succeeds.
func TestTokenRevokedMidFlight(t *testing.T) {
	f := newFixture(t)
	ev := &eventRecorder{}
	r := newRegistry(t, f.opts(securereg.OnEvent(ev.record))...)
	for i := range 20 {
		old, next := testToken, readToken
		if i%2 == 1 {
			old, next = readToken, testToken
		}
		atomicWrite(t, f.tokenFile, next, 0o600)
		f.fake.SetToken(old, 0) // revoked now
		_, err := r.GetService("greeter")
		require.NoError(t, err, "round %d", i)
		assert.Equal(t, next, lastToken(f.fake))
		f.fake.SetToken(old, fakeconsul.Write)
	}
	assert.NotEmpty(t, ev.of(securereg.EventAuthFailed))
}

func TestClientCertRotation(t *testing.T) {
	f := newFixture(t)
	ev := &eventRecorder{}
	r := newRegistry(t, f.opts(securereg.OnEvent(ev.record))...)
	serial := func() string {
		t.Helper()
		_, err := r.GetService("greeter")
		require.NoError(t, err)
		reqs := f.fake.Requests()
		return reqs[len(reqs)-1].PeerSerial
	}
	first := serial()
	require.NotEmpty(t, first)

	next := f.ca.Client(t, "client-2")
	atomicWrite(t, f.certFile, string(next.CertPEM), 0o644)
	atomicWrite(t, f.keyFile, string(next.KeyPEM), 0o600)
	require.Eventually(t, func() bool { return serial() == next.Cert.SerialNumber.String() }, pickup, 20*time.Millisecond)
	require.NotEmpty(t, ev.of(securereg.EventCertRotated))

	t.Run("half-written pair keeps the old one", func(t *testing.T) {
		third := f.ca.Client(t, "client-3")
		atomicWrite(t, f.certFile, string(third.CertPEM), 0o644) // key not yet
		time.Sleep(3 * pollInterval())
		assert.Equal(t, next.Cert.SerialNumber.String(), serial(), "old pair until both match")
		atomicWrite(t, f.keyFile, string(third.KeyPEM), 0o600)
		require.Eventually(t, func() bool { return serial() == third.Cert.SerialNumber.String() }, pickup, 20*time.Millisecond)
		assert.Empty(t, ev.of(securereg.EventReloadFailed), "a pair completed within the grace period is not a failure")
	})

	t.Run("expired new cert is refused, old pair stays", func(t *testing.T) {
		cur := serial()
		expired := f.ca.Issue(t, testca.Leaf{CommonName: "old", Client: true,
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
		atomicWrite(t, f.certFile, string(expired.CertPEM), 0o644)
		atomicWrite(t, f.keyFile, string(expired.KeyPEM), 0o600)
		require.Eventually(t, func() bool { return len(ev.of(securereg.EventReloadFailed)) > 0 }, pickup, 20*time.Millisecond)
		failed := ev.of(securereg.EventReloadFailed)[0]
		assert.ErrorIs(t, failed.Err, securereg.ErrCertExpired)
		assert.Contains(t, f.logs.String(), "level=ERROR")
		assert.Equal(t, cur, serial())
	})
}

func TestCARotation(t *testing.T) {
	f := newFixture(t, noMTLS)
	newCA := testca.New(t)
	moved := fakeconsul.Start(t, fakeconsul.Config{Cert: newCA.Server(t).TLS(t),
		Tokens: map[string]fakeconsul.Role{testToken: fakeconsul.Write}})
	ev := &eventRecorder{}
	r := newRegistry(t, registry.Addrs(moved.Addr), securereg.CAFile(f.caFile), securereg.TokenFile(f.tokenFile),
		securereg.Logger(f.logger), securereg.OnEvent(ev.record))

	_, err := r.GetService("greeter")
	require.Error(t, err, "a server from a CA not yet in the bundle is refused")
	assert.Contains(t, err.Error(), "not signed by a trusted CA")
	assert.Empty(t, moved.Requests())

	// Rotation bundle: new CA plus old, as operators roll CAs.
	atomicWrite(t, f.caFile, string(newCA.CertPEM)+string(f.ca.CertPEM), 0o644)
	require.Eventually(t, func() bool {
		_, err := r.GetService("greeter")
		return err == nil
	}, pickup, 20*time.Millisecond)
	require.NotEmpty(t, ev.of(securereg.EventCARotated))

	// Verification is still on: a third CA is still refused.
	stranger := fakeconsul.Start(t, fakeconsul.Config{Cert: testca.New(t).Server(t).TLS(t),
		Tokens: map[string]fakeconsul.Role{testToken: fakeconsul.Write}})
	require.NoError(t, r.Init(registry.Addrs(stranger.Addr)))
	_, err = r.GetService("greeter")
	require.Error(t, err)
	assert.Empty(t, stranger.Requests())

	t.Run("a malformed bundle keeps the old one", func(t *testing.T) {
		require.NoError(t, r.Init(registry.Addrs(moved.Addr)))
		atomicWrite(t, f.caFile, "-----BEGIN CERTIFICATE-----\ngarbage\n", 0o644)
		require.Eventually(t, func() bool { return len(ev.of(securereg.EventReloadFailed)) > 0 }, pickup, 20*time.Millisecond)
		_, err := r.GetService("greeter")
		require.NoError(t, err)
	})
}

func TestExpiryWarning(t *testing.T) {
	f := newFixture(t)
	soon := f.ca.Issue(t, testca.Leaf{CommonName: "soon", Client: true, NotAfter: time.Now().Add(10 * 24 * time.Hour)})
	cert, key := soon.Write(t, f.dir, "soon")

	t.Run("within the default 30 days", func(t *testing.T) {
		ev := &eventRecorder{}
		r := newRegistry(t, f.opts(securereg.ClientCert(cert, key), securereg.OnEvent(ev.record))...)
		_ = r
		exp := ev.of(securereg.EventExpiring)
		require.Len(t, exp, 1, "warned at start")
		assert.Equal(t, cert, exp[0].File)
		assert.WithinDuration(t, soon.Cert.NotAfter, exp[0].NotAfter, time.Second)
		assert.Contains(t, f.logs.String(), "level=WARN")
		assert.Contains(t, f.logs.String(), "client cert expires in")
	})
	t.Run("ExpiryWarning narrower than 10 days", func(t *testing.T) {
		ev := &eventRecorder{}
		newRegistry(t, f.opts(securereg.ClientCert(cert, key), securereg.ExpiryWarning(5*24*time.Hour), securereg.OnEvent(ev.record))...)
		assert.Empty(t, ev.of(securereg.EventExpiring))
	})
}

func TestCloseStopsReloader(t *testing.T) {
	f := newFixture(t)
	const frame = "securereg.(*reloader).run"
	// Reloaders of earlier tests may still be exiting.
	require.Eventually(t, func() bool { return countGoroutines(frame) == 0 }, 5*time.Second, 10*time.Millisecond,
		"reloaders left running:\n%s", goroutines(frame))
	r, err := securereg.New(f.opts()...)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return countGoroutines(frame) == 1 }, 5*time.Second, 10*time.Millisecond,
		"one reloader per registry:\n%s", goroutines(frame))
	require.NoError(t, r.Close())
	require.Eventually(t, func() bool { return countGoroutines(frame) == 0 }, 5*time.Second, 10*time.Millisecond,
		"reloader still running after Close:\n%s", goroutines(frame))

	// Init replaces the reloader; it does not add one.
	r2 := newRegistry(t, f.opts()...)
	for range 3 {
		require.NoError(t, r2.Init(registry.Timeout(time.Second)))
	}
	require.Eventually(t, func() bool { return countGoroutines(frame) == 1 }, 5*time.Second, 10*time.Millisecond)
}

// TestConcurrentRotation runs 100 goroutines of calls while the token,
// the client certificate and the CA bundle rotate underneath; run it with
// -race. Every call must succeed.
func TestConcurrentRotation(t *testing.T) {
	f := newFixture(t)
	ev := &eventRecorder{}
	r := newRegistry(t, f.opts(securereg.OnEvent(ev.record))...)
	var (
		wg       sync.WaitGroup
		stop     atomic.Bool
		calls    atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
	)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				var err error
				if i%10 == 0 {
					err = r.Register(testService("greeter", fmt.Sprintf("g-%d", i)))
				} else {
					_, err = r.GetService("greeter")
				}
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	extraCA := testca.New(t)
	for round := range 4 {
		tok := testToken
		if round%2 == 0 {
			tok = readToken
		}
		// readToken may not write: keep rotations to tokens that can.
		f.fake.SetToken(readToken, fakeconsul.Write)
		atomicWrite(t, f.tokenFile, tok, 0o600)
		next := f.ca.Client(t, fmt.Sprintf("client-r%d", round))
		atomicWrite(t, f.certFile, string(next.CertPEM), 0o644)
		atomicWrite(t, f.keyFile, string(next.KeyPEM), 0o600)
		bundle := string(f.ca.CertPEM)
		if round%2 == 0 {
			bundle += string(extraCA.CertPEM)
		}
		atomicWrite(t, f.caFile, bundle, 0o644)
		time.Sleep(4 * pollInterval())
	}
	stop.Store(true)
	wg.Wait()
	require.Zero(t, failures.Load(), "failed calls out of %d; first: %v", calls.Load(), firstErr.Load())
	assert.NotEmpty(t, ev.of(securereg.EventTokenRotated))
	assert.NotEmpty(t, ev.of(securereg.EventCertRotated))
	assert.NotEmpty(t, ev.of(securereg.EventCARotated))
	assertNoSecrets(t, "events", fmt.Sprint(ev.all()))
}

func pollInterval() time.Duration { return 500 * time.Millisecond }

func TestEventKindString(t *testing.T) {
	for k, want := range map[securereg.EventKind]string{
		securereg.EventTokenRotated: "token rotated", securereg.EventCertRotated: "cert rotated",
		securereg.EventCARotated: "CA rotated", securereg.EventReloadFailed: "reload failed",
		securereg.EventExpiring: "expiring", securereg.EventExpired: "expired", securereg.EventAuthFailed: "auth failed",
	} {
		assert.Equal(t, want, k.String())
	}
	assert.True(t, strings.HasPrefix(securereg.EventKind(99).String(), "EventKind("))
}
