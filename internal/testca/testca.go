// Package testca generates short-lived certificate authorities and leaf
// certificates for tests, so that no test depends on a committed certificate
// that will one day expire. It wraps package pki; every function takes a
// [testing.TB] and fails the test on error.
package testca

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/securereg/securereg/internal/pki"
)

// CA is a certificate authority that lives for the length of a test.
type CA struct{ *pki.CA }

// Leaf describes a certificate to issue; see pki.Leaf.
type Leaf = pki.Leaf

// Pair is an issued certificate and its private key.
type Pair struct{ *pki.Pair }

// New returns a CA valid from an hour ago until a year from now, well
// outside securereg's 30-day expiry warning.
func New(t testing.TB) *CA {
	t.Helper()
	return NewWithValidity(t, time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour))
}

// NewWithValidity returns a CA valid between notBefore and notAfter.
func NewWithValidity(t testing.TB, notBefore, notAfter time.Time) *CA {
	t.Helper()
	ca, err := pki.NewCA(notBefore, notAfter)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return &CA{ca}
}

// WriteCA writes the CA certificate to dir/name and returns its path.
func (ca *CA) WriteCA(t testing.TB, dir, name string) string {
	t.Helper()
	p, err := ca.CA.WriteCA(dir, name)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return p
}

// Issue signs a new leaf certificate.
func (ca *CA) Issue(t testing.TB, l Leaf) *Pair {
	t.Helper()
	p, err := ca.CA.Issue(l)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return &Pair{p}
}

// Server issues a server certificate for localhost and 127.0.0.1 plus any
// extra DNS names.
func (ca *CA) Server(t testing.TB, dnsNames ...string) *Pair {
	t.Helper()
	return ca.Issue(t, Leaf{
		CommonName: "server",
		DNSNames:   append([]string{"localhost"}, dnsNames...),
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Server:     true,
	})
}

// Client issues a client certificate.
func (ca *CA) Client(t testing.TB, name string) *Pair {
	t.Helper()
	return ca.Issue(t, Leaf{CommonName: name, Client: true})
}

// TLS returns the pair as a tls.Certificate.
func (p *Pair) TLS(t testing.TB) tls.Certificate {
	t.Helper()
	c, err := p.Pair.TLS()
	if err != nil {
		t.Fatalf("testca: key pair: %v", err)
	}
	return c
}

// Write writes the pair to dir/name.crt (0644) and dir/name.key (0600) and
// returns both paths.
func (p *Pair) Write(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	c, k, err := p.Pair.Write(dir, name)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return c, k
}
