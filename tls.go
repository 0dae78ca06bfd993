package securereg

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go-micro.dev/v4/registry"
)

// NewTLSConfig returns the verified *tls.Config that [New] would use for the
// same options and environment, for callers that talk to Consul with a
// client of their own. It returns an error whenever New would, and
// [ErrPlaintext] when the options ask for plain HTTP (only possible in
// DevMode). The returned config is a new value the caller owns; it holds the
// files' contents as read now and is not reloaded.
func NewTLSConfig(opts ...registry.Option) (*tls.Config, error) {
	cfg, err := resolve(applyOptions(opts), os.LookupEnv)
	if err != nil {
		return nil, err
	}
	if cfg.tls == nil {
		return nil, fmt.Errorf("securereg: the options ask for plain HTTP, so there is no TLS config: %w", ErrPlaintext)
	}
	return cfg.tls.config(), nil
}

// tlsInputs is everything the TLS config is built from, after precedence
// between options, a caller's tls.Config, a consul.Config and the
// environment has been decided. Each *From field names the source for
// error messages ("CAFile option", "CONSUL_CACERT", ...).
type tlsInputs struct {
	base *tls.Config // caller's registry.TLSConfig; cloned, never mutated

	caFile, caFileFrom string
	caPath, caPathFrom string
	caPEM              []byte // consul.Config TLSConfig.CAPem

	certFile, keyFile, certFrom string
	certPEM, keyPEM             []byte // consul.Config TLSConfig.CertPEM/KeyPEM

	serverName string
	insecure   bool // allowed only in DevMode, checked by the caller
}

// tlsState is the TLS configuration of one registry: a fixed template plus
// the CA and client certificate when they come from files, which the
// reloader may swap while the registry runs.
type tlsState struct {
	base *tls.Config // template; never handed out, only cloned
	ca   *caFiles    // nil: RootCAs are the template's (caller's, PEM or system)
	cert *certFiles  // nil: the template's client certificate, if any

	static []labelledCert // certificates not from files, for expiry checks
}

// labelledCert is a certificate with what it is, for logs and events.
type labelledCert struct {
	what, file string
	cert       *x509.Certificate
}

// config returns a new *tls.Config with the current CA pool. Its
// GetClientCertificate always serves the current client certificate.
func (s *tlsState) config() *tls.Config {
	c := s.base.Clone()
	if s.ca != nil {
		c.RootCAs = s.ca.pool.Load()
	}
	if s.cert != nil {
		c.Certificates = nil
		c.GetClientCertificate = s.cert.get
	}
	return c
}

// certificates returns every certificate whose expiry is watched.
func (s *tlsState) certificates() []labelledCert {
	out := append([]labelledCert(nil), s.static...)
	if s.cert != nil {
		if c := s.cert.cur.Load(); c != nil && c.Leaf != nil {
			out = append(out, labelledCert{what: "client cert", file: s.cert.certFile, cert: c.Leaf})
		}
	}
	if s.ca != nil {
		if certs := s.ca.certs.Load(); certs != nil {
			for _, c := range *certs {
				out = append(out, labelledCert{what: "CA cert " + strconv.Quote(c.Subject.CommonName), file: s.ca.name(), cert: c})
			}
		}
	}
	return out
}

// buildTLS returns a verified client TLS state. now is the clock used for
// certificate validity.
func buildTLS(in tlsInputs, now time.Time) (*tlsState, error) {
	var c *tls.Config
	if in.base != nil {
		c = in.base.Clone()
	} else {
		c = &tls.Config{}
	}
	// TLS 1.0 and 1.1 are deprecated (RFC 8996); Consul itself defaults
	// to TLS 1.2. A lower caller value was refused earlier with ErrInsecure
	// unless in DevMode, where we still raise it: DevMode relaxes
	// verification, not the protocol.
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	c.InsecureSkipVerify = in.insecure
	if in.serverName != "" {
		c.ServerName = in.serverName
	}
	st := &tlsState{base: c}

	switch {
	case in.caFile != "" || in.caPath != "":
		st.ca = &caFiles{file: in.caFile, fileFrom: in.caFileFrom, path: in.caPath, pathFrom: in.caPathFrom, extraPEM: in.caPEM}
		if _, err := st.ca.load(); err != nil {
			return nil, err
		}
	case len(in.caPEM) > 0:
		certs, err := parseCerts(in.caPEM)
		if err != nil {
			return nil, fmt.Errorf("securereg: CA PEM from consul.Config TLSConfig.CAPem: %w: %w", err, ErrInvalidConfig)
		}
		pool := x509.NewCertPool()
		for _, ca := range certs {
			pool.AddCert(ca)
			st.static = append(st.static, labelledCert{what: "CA cert " + strconv.Quote(ca.Subject.CommonName), file: "consul.Config TLSConfig.CAPem", cert: ca})
		}
		c.RootCAs = pool
	}

	switch {
	case in.certFile != "" || in.keyFile != "":
		st.cert = &certFiles{certFile: in.certFile, keyFile: in.keyFile, from: in.certFrom}
		if _, err := st.cert.load(now); err != nil {
			return nil, err
		}
	case len(in.certPEM) > 0 || len(in.keyPEM) > 0:
		cert, err := tls.X509KeyPair(in.certPEM, in.keyPEM)
		if err != nil {
			return nil, fmt.Errorf("securereg: client cert from consul.Config TLSConfig.CertPEM/KeyPEM: %w: %w", err, ErrInvalidConfig)
		}
		if err := checkValidity(cert.Leaf, "consul.Config TLSConfig.CertPEM", now); err != nil {
			return nil, err
		}
		c.Certificates = nil
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
		st.static = append(st.static, labelledCert{what: "client cert", file: "consul.Config TLSConfig.CertPEM", cert: cert.Leaf})
	default:
		if len(c.Certificates) > 0 && c.Certificates[0].Leaf != nil {
			st.static = append(st.static, labelledCert{what: "client cert", file: "registry.TLSConfig", cert: c.Certificates[0].Leaf})
		}
	}
	return st, nil
}

// caFiles is a CA bundle read from CAFile and/or CAPath.
type caFiles struct {
	file, fileFrom string
	path, pathFrom string
	extraPEM       []byte // consul.Config CAPem, added to every pool

	pool  atomic.Pointer[x509.CertPool]
	certs atomic.Pointer[[]*x509.Certificate]
	stamp []os.FileInfo // at the last load; only the loader touches it
}

func (c *caFiles) name() string {
	switch {
	case c.file != "" && c.path != "":
		return c.file + " and " + c.path
	case c.file != "":
		return c.file
	}
	return c.path
}

// load reads the bundle if its files changed since the last load and swaps
// the pool. It reports whether the certificates changed. On error the old
// pool stays. Only one goroutine may call it at a time.
func (c *caFiles) load() (bool, error) {
	stamp, err := c.stampFiles()
	if err == nil && c.stamp != nil && stampsEqual(stamp, c.stamp) {
		return false, nil
	}
	var certs []*x509.Certificate
	if c.file != "" {
		cs, err := readCAFile(c.file, c.fileFrom)
		if err != nil {
			return false, err
		}
		certs = append(certs, cs...)
	}
	if c.path != "" {
		cs, err := readCADir(c.path, c.pathFrom)
		if err != nil {
			return false, err
		}
		certs = append(certs, cs...)
	}
	if len(c.extraPEM) > 0 {
		cs, err := parseCerts(c.extraPEM)
		if err != nil {
			return false, fmt.Errorf("securereg: CA PEM from consul.Config TLSConfig.CAPem: %w: %w", err, ErrInvalidConfig)
		}
		certs = append(certs, cs...)
	}
	c.stamp = stamp
	if old := c.certs.Load(); old != nil && sameCerts(*old, certs) {
		return false, nil // touched, not changed
	}
	pool := x509.NewCertPool()
	for _, ca := range certs {
		pool.AddCert(ca)
	}
	c.pool.Store(pool)
	c.certs.Store(&certs)
	return true, nil
}

// stampFiles stats the bundle's files, following symlinks.
func (c *caFiles) stampFiles() ([]os.FileInfo, error) {
	var out []os.FileInfo
	if c.file != "" {
		fi, err := os.Stat(c.file)
		if err != nil {
			return nil, err
		}
		out = append(out, fi)
	}
	if c.path != "" {
		entries, err := os.ReadDir(c.path)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			fi, err := os.Stat(filepath.Join(c.path, e.Name()))
			if err != nil {
				return nil, err
			}
			out = append(out, fi)
		}
	}
	return out, nil
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// certFiles is a client certificate and key read from files.
type certFiles struct {
	certFile, keyFile, from string

	cur   atomic.Pointer[tls.Certificate] // never modified once stored
	stamp []os.FileInfo                   // at the last load; only the loader touches it
}

// get serves the current certificate to crypto/tls.
func (c *certFiles) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// load reads the pair if its files changed since the last load, checks it
// and swaps it in. It reports whether the certificate changed. On error (a
// half-written pair that does not match yet, an expired certificate) the
// old pair stays. Only one goroutine may call it at a time.
func (c *certFiles) load(now time.Time) (bool, error) {
	stamp, err := stampPaths(c.certFile, c.keyFile)
	if err == nil && c.stamp != nil && stampsEqual(stamp, c.stamp) {
		return false, nil
	}
	cert, err := loadKeyPair(c.certFile, c.keyFile, c.from, now)
	if err != nil {
		return false, err
	}
	c.stamp = stamp
	if old := c.cur.Load(); old != nil && old.Leaf != nil && old.Leaf.Equal(cert.Leaf) {
		return false, nil
	}
	c.cur.Store(cert)
	return true, nil
}

func stampPaths(paths ...string) ([]os.FileInfo, error) {
	out := make([]os.FileInfo, 0, len(paths))
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		out = append(out, fi)
	}
	return out, nil
}

func stampsEqual(a, b []os.FileInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameFile(a[i], b[i]) {
			return false
		}
	}
	return true
}

// readCAFile returns every certificate in a PEM file.
func readCAFile(path, from string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("securereg: read CA file (%s): %w: %w", from, err, ErrInvalidConfig)
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("securereg: CA file %q (%s): %w: %w", path, from, err, ErrInvalidConfig)
	}
	return certs, nil
}

// readCADir returns the certificates of every PEM file directly in dir.
// Files without any PEM block are skipped; a malformed certificate is an
// error, and so is a directory that yields no certificate at all.
func readCADir(dir, from string) ([]*x509.Certificate, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("securereg: read CA directory (%s): %w: %w", from, err, ErrInvalidConfig)
	}
	var all []*x509.Certificate
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue // hidden files and Kubernetes' ..data
		}
		path := filepath.Join(dir, e.Name())
		st, err := os.Stat(path) // follows symlinks
		if err != nil {
			return nil, fmt.Errorf("securereg: CA directory (%s): %w: %w", from, err, ErrInvalidConfig)
		}
		if !st.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("securereg: CA directory (%s): %w: %w", from, err, ErrInvalidConfig)
		}
		certs, err := parseCerts(data)
		if errors.Is(err, errNoPEM) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("securereg: CA file %q in %s: %w: %w", path, from, err, ErrInvalidConfig)
		}
		all = append(all, certs...)
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("securereg: CA directory %q (%s) holds no PEM certificate; put the CA bundle there or use CAFile: %w", dir, from, ErrInvalidConfig)
	}
	return all, nil
}

// loadKeyPair loads and validates a client certificate and key.
func loadKeyPair(certFile, keyFile, from string, now time.Time) (*tls.Certificate, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, fmt.Errorf("securereg: client cert and key (%s) are empty; give both paths: %w", from, ErrInvalidConfig)
	case certFile == "":
		return nil, fmt.Errorf("securereg: client key %q given without a client cert (%s); both client cert and client key must be provided: %w", keyFile, from, ErrInvalidConfig)
	case keyFile == "":
		return nil, fmt.Errorf("securereg: client cert %q given without a client key (%s); both client cert and client key must be provided: %w", certFile, from, ErrInvalidConfig)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("securereg: read client cert (%s): %w: %w", from, err, ErrInvalidConfig)
	}
	if err := checkPrivateFile(keyFile, "client key", from); err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("securereg: read client key (%s): %w: %w", from, err, ErrInvalidConfig)
	}
	if _, err := parseCerts(certPEM); err != nil {
		return nil, fmt.Errorf("securereg: client cert %q (%s): %w: %w", certFile, from, err, ErrInvalidConfig)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("securereg: client cert %q and key %q (%s) do not form a pair; check that the key belongs to the certificate: %w: %w",
			certFile, keyFile, from, err, ErrInvalidConfig)
	}
	if err := checkValidity(cert.Leaf, fmt.Sprintf("client cert %q (%s)", certFile, from), now); err != nil {
		return nil, err
	}
	return &cert, nil
}

// checkValidity returns ErrCertExpired when leaf is not valid at now.
func checkValidity(leaf *x509.Certificate, what string, now time.Time) error {
	if leaf == nil {
		return nil
	}
	if now.After(leaf.NotAfter) {
		return fmt.Errorf("securereg: %s expired at %s (NotAfter); renew it: %w",
			what, leaf.NotAfter.UTC().Format(time.RFC3339), ErrCertExpired)
	}
	if now.Before(leaf.NotBefore) {
		return fmt.Errorf("securereg: %s is not valid until %s (NotBefore); check the clock or the issuer: %w",
			what, leaf.NotBefore.UTC().Format(time.RFC3339), ErrCertExpired)
	}
	return nil
}

var errNoPEM = errors.New("no PEM data found; expected -----BEGIN CERTIFICATE-----")

// parseCerts parses every PEM block of data as an X.509 certificate and says
// why when it cannot (x509.CertPool.AppendCertsFromPEM only returns a bool).
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, not a CERTIFICATE", len(certs)+1, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d is not a valid certificate: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errNoPEM
	}
	if len(bytes.TrimSpace(rest)) > 0 && bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, fmt.Errorf("PEM block %d is truncated or malformed", len(certs)+1)
	}
	return certs, nil
}

// checkPrivateFile returns ErrFileMode when path (after following symlinks,
// as Kubernetes secret volumes use them) is readable or writable by others,
// or writable by its group. 0600, 0400 and 0640 pass. Windows has no such
// mode bits, so the check is skipped there.
func checkPrivateFile(path, what, from string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("securereg: %s: %w: %w", what, err, ErrInvalidConfig)
	}
	if runtime.GOOS == "windows" {
		return nil
	}
	return modeError(path, what, from, st.Mode())
}

func modeError(path, what, from string, mode fs.FileMode) error {
	perm := mode.Perm()
	var problems []string
	if perm&0o004 != 0 {
		problems = append(problems, "readable by others")
	}
	if perm&0o002 != 0 {
		problems = append(problems, "writable by others")
	}
	if perm&0o020 != 0 {
		problems = append(problems, "writable by its group")
	}
	if len(problems) == 0 {
		return nil
	}
	if from != "" {
		from = " (" + from + ")"
	}
	return fmt.Errorf("securereg: %s %q%s has mode %#o, %s; run chmod 600 %s (on Kubernetes set defaultMode: 0440 on the secret volume): %w",
		what, path, from, perm, strings.Join(problems, " and "), path, ErrFileMode)
}
