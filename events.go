package securereg

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// EventKind says what happened to a credential.
type EventKind int

// Event kinds, for [OnEvent].
const (
	// EventTokenRotated: the token file changed and the new token is in use.
	EventTokenRotated EventKind = iota + 1
	// EventCertRotated: the client certificate changed and new connections
	// present it.
	EventCertRotated
	// EventCARotated: the CA bundle changed and new connections verify
	// against it.
	EventCARotated
	// EventReloadFailed: a changed file could not be used (unreadable,
	// blank, malformed, a cert and key that do not match, an expired
	// certificate); the previous credential stays in use.
	EventReloadFailed
	// EventExpiring: a certificate expires within the ExpiryWarning window.
	EventExpiring
	// EventExpired: a certificate in use has expired.
	EventExpired
	// EventAuthFailed: Consul refused the token (403 "ACL not found" or
	// "Permission denied").
	EventAuthFailed
)

var kindNames = map[EventKind]string{
	EventTokenRotated: "token rotated",
	EventCertRotated:  "cert rotated",
	EventCARotated:    "CA rotated",
	EventReloadFailed: "reload failed",
	EventExpiring:     "expiring",
	EventExpired:      "expired",
	EventAuthFailed:   "auth failed",
}

// String returns the kind in words, e.g. "token rotated".
func (k EventKind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one credential event. It never contains the token.
type Event struct {
	Kind EventKind
	Time time.Time
	// File is the file concerned, if any.
	File string
	// NotAfter is the certificate's expiry, for EventExpiring and
	// EventExpired.
	NotAfter time.Time
	// Err says what went wrong, for EventReloadFailed and EventAuthFailed.
	Err error
}

// String describes the event on one line.
func (e Event) String() string {
	s := e.Kind.String()
	if e.File != "" {
		s += " " + e.File
	}
	if !e.NotAfter.IsZero() {
		s += " notAfter=" + e.NotAfter.UTC().Format(time.RFC3339)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// eventSink delivers events to the user's callback and the log.
type eventSink struct {
	logger *slog.Logger
	fn     func(Event) // nil: log only
}

// emit logs the event at level and calls the callback. A panicking callback
// is recovered and logged, so it cannot take down a reload or a request.
func (s *eventSink) emit(level slog.Level, msg string, e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	attrs := []any{"event", e.Kind.String()}
	if e.File != "" {
		attrs = append(attrs, "file", e.File)
	}
	if !e.NotAfter.IsZero() {
		attrs = append(attrs, "not_after", e.NotAfter.UTC().Format(time.RFC3339))
	}
	if e.Err != nil {
		attrs = append(attrs, "error", e.Err.Error())
	}
	s.logger.Log(context.Background(), level, msg, attrs...)
	if s.fn == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("securereg: OnEvent callback panicked", "event", e.Kind.String(), "panic", fmt.Sprint(r))
		}
	}()
	s.fn(e)
}
