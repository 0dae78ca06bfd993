package securereg_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securereg/securereg"
	"github.com/securereg/securereg/consultest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go-micro.dev/v4/registry"
)

// TestIntegrationTokenRotation rotates the token file under a running load
// against a real Consul, then revokes the old token in Consul. No call may
// fail from 2 s after the rotation on (in practice none fails at all: a
// revoked token makes securereg re-read the file and retry).
func TestIntegrationTokenRotation(t *testing.T) {
	rotations := []struct {
		name  string
		setup func(t *testing.T, first string) (path string, rotate func(next string))
	}{
		{"atomic rename (Vault Agent sink)", func(t *testing.T, first string) (string, func(string)) {
			path := writeFile(t, t.TempDir(), "consul-token", first, 0o600)
			return path, func(next string) { atomicWrite(t, path, next, 0o600) }
		}},
		{"Kubernetes ..data symlink swap", func(t *testing.T, first string) (string, func(string)) {
			vol := newK8sVolume(t, map[string]string{"token": first})
			return vol.path("token"), func(next string) { vol.update(t, map[string]string{"token": next}) }
		}},
	}
	for _, rot := range rotations {
		t.Run(rot.name, func(t *testing.T) {
			clearEnv(t)
			srv := consultest.Start(t)
			oldTok, newTok := srv.TokenFor(t, "greeter"), srv.TokenFor(t, "greeter")
			path, rotate := rot.setup(t, oldTok)
			ev := &eventRecorder{}
			r := newRegistry(t, append(srv.Options(), securereg.TokenFile(path), securereg.OnEvent(ev.record))...)

			var (
				rotatedAt atomic.Int64 // unix nanos; 0 before the rotation
				calls     atomic.Int64
				late      atomic.Int64 // failures from 2 s after the rotation on
				early     atomic.Int64
				lastErr   atomic.Value
				stop      atomic.Bool
				wg        sync.WaitGroup
			)
			for i := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					svc := testService("greeter", fmt.Sprintf("greeter-%d", i))
					for !stop.Load() {
						var err error
						if i%2 == 0 {
							err = r.Register(svc, registry.RegisterTTL(time.Minute))
						} else {
							_, err = r.GetService("greeter")
						}
						calls.Add(1)
						if err != nil {
							lastErr.Store(err)
							if at := rotatedAt.Load(); at != 0 && time.Since(time.Unix(0, at)) > 2*time.Second {
								late.Add(1)
							} else {
								early.Add(1)
							}
						}
						time.Sleep(10 * time.Millisecond)
					}
				}()
			}
			time.Sleep(time.Second)
			rotate(newTok)
			rotatedAt.Store(time.Now().UnixNano())
			srv.RevokeToken(t, oldTok)
			time.Sleep(4 * time.Second)
			stop.Store(true)
			wg.Wait()

			t.Logf("%d calls, %d failed within 2 s of the rotation, %d after", calls.Load(), early.Load(), late.Load())
			require.Zero(t, late.Load(), "failed calls from 2 s after the rotation; last error: %v", lastErr.Load())
			assert.NotEmpty(t, ev.of(securereg.EventTokenRotated))
			for _, e := range ev.all() {
				assert.NotContains(t, e.String(), oldTok)
				assert.NotContains(t, e.String(), newTok)
			}
			if err, ok := lastErr.Load().(error); ok {
				assert.NotContains(t, err.Error(), oldTok)
				assert.NotContains(t, err.Error(), newTok)
			}
		})
	}
}
