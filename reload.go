package securereg

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

const (
	// pollInterval is how often the reloader stats the credential files.
	// Rotations are picked up within two intervals (one to see the
	// change, one of slack), well inside the 2 s promised.
	pollInterval = 500 * time.Millisecond
	// expiryCheckInterval is how often certificates are checked for
	// upcoming expiry after the check at start.
	expiryCheckInterval = time.Hour
	// defaultExpiryWarning is the ExpiryWarning default.
	defaultExpiryWarning = 30 * 24 * time.Hour
	// mismatchGrace is how long a cert/key pair may stay mismatched before
	// it is reported: writers replace the two files one after the other.
	mismatchGrace = 5 * time.Second
)

// reloader watches the files a registry's credentials come from and swaps
// in new ones when they change, so that rotation needs no restart. One
// goroutine per registry, stopped by close. Requests never touch the files:
// they read atomically swapped values.
type reloader struct {
	sink   *eventSink
	tls    *tlsState  // nil for plain HTTP
	token  *fileToken // nil unless the token comes from a file
	rt     *rotatingTransport
	within time.Duration // ExpiryWarning
	now    func() time.Time

	pollEvery, expiryEvery time.Duration // pollInterval, expiryCheckInterval; shorter in tests

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	// Failure episodes, so a persisting failure is reported once. Only
	// the reloader goroutine touches them.
	failingSince map[string]time.Time
	reported     map[string]bool
}

func newReloader(cfg *config, rt *rotatingTransport, sink *eventSink) *reloader {
	r := &reloader{
		sink:         sink,
		tls:          cfg.tls,
		rt:           rt,
		within:       cfg.expiry,
		now:          time.Now,
		pollEvery:    pollInterval,
		expiryEvery:  expiryCheckInterval,
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
		failingSince: map[string]time.Time{},
		reported:     map[string]bool{},
	}
	if ft, ok := cfg.tokens.(*fileToken); ok {
		r.token = ft
	}
	return r
}

// needed reports whether there is anything to watch or check.
func (r *reloader) needed() bool {
	if r.token != nil {
		return true
	}
	if r.tls == nil {
		return false
	}
	return r.tls.ca != nil || r.tls.cert != nil || len(r.tls.static) > 0
}

// start checks expiry now, then polls in a goroutine until close.
func (r *reloader) start() {
	r.checkExpiry()
	if r.token != nil {
		r.token.watched.Add(1)
	}
	go r.run()
}

// close stops the goroutine and waits for it. It is idempotent.
func (r *reloader) close() {
	r.stopOnce.Do(func() {
		close(r.stop)
		<-r.done
		if r.token != nil {
			r.token.watched.Add(-1)
		}
	})
}

func (r *reloader) run() {
	defer close(r.done)
	poll := time.NewTicker(r.pollEvery)
	defer poll.Stop()
	expiry := time.NewTicker(r.expiryEvery)
	defer expiry.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-poll.C:
			r.poll()
		case <-expiry.C:
			r.checkExpiry()
		}
	}
}

// poll reloads whatever changed.
func (r *reloader) poll() {
	if r.token != nil {
		changed, err := r.token.poll()
		r.outcome("token", r.token.path, changed, err, EventTokenRotated,
			"securereg: ACL token file changed; using the new token")
	}
	if r.tls == nil {
		return
	}
	swap := false
	if r.tls.cert != nil {
		changed, err := r.tls.cert.load(r.now())
		r.outcome("cert", r.tls.cert.certFile, changed, err, EventCertRotated,
			"securereg: client certificate changed; new connections present it")
		swap = swap || changed
		if changed {
			r.checkExpiry()
		}
	}
	if r.tls.ca != nil {
		changed, err := r.tls.ca.load()
		r.outcome("ca", r.tls.ca.name(), changed, err, EventCARotated,
			"securereg: CA bundle changed; new connections verify against it")
		swap = swap || changed
	}
	if swap {
		// New requests get new connections with the new credentials;
		// idle old ones close, busy ones finish their request.
		r.rt.swap(newPooledTransport(r.tls.config()))
	}
}

// outcome reports a reload: the rotation, or the start of a failure
// episode. The previous credential stays in use on failure.
func (r *reloader) outcome(key, file string, changed bool, err error, kind EventKind, msg string) {
	if err == nil {
		delete(r.failingSince, key)
		delete(r.reported, key)
		if changed {
			r.sink.emit(slog.LevelInfo, msg, Event{Kind: kind, File: file})
		}
		return
	}
	since, ok := r.failingSince[key]
	if !ok {
		since = r.now()
		r.failingSince[key] = since
	}
	if r.reported[key] {
		return
	}
	// A half-written pair (one file replaced, not yet the other) is
	// expected for a moment during a rotation. Expiry and file modes are
	// not going to fix themselves.
	if key == "cert" && !errors.Is(err, ErrCertExpired) && !errors.Is(err, ErrFileMode) && r.now().Sub(since) < mismatchGrace {
		return
	}
	r.reported[key] = true
	level := slog.LevelWarn
	if errors.Is(err, ErrCertExpired) || errors.Is(err, ErrFileMode) {
		level = slog.LevelError
	}
	r.sink.emit(level, "securereg: reload failed; still using the previous credential", Event{Kind: EventReloadFailed, File: file, Err: err})
}

// checkExpiry warns about certificates that expire within the window and
// reports those that have expired.
func (r *reloader) checkExpiry() {
	if r.tls == nil {
		return
	}
	now := r.now()
	for _, c := range r.tls.certificates() {
		left := c.cert.NotAfter.Sub(now)
		switch {
		case left <= 0:
			r.sink.emit(slog.LevelError, fmt.Sprintf("securereg: %s has expired; renew it now", c.what),
				Event{Kind: EventExpired, File: c.file, NotAfter: c.cert.NotAfter})
		case left <= r.within:
			r.sink.emit(slog.LevelWarn, fmt.Sprintf("securereg: %s expires in %s; renew it", c.what, humanDuration(left)),
				Event{Kind: EventExpiring, File: c.file, NotAfter: c.cert.NotAfter})
		}
	}
}

// humanDuration renders d as days, or hours under two days.
func humanDuration(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
	if d >= 2*time.Hour {
		return fmt.Sprintf("%d hours", int(d.Hours()))
	}
	return d.Round(time.Minute).String()
}
