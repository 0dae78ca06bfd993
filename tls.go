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
	"strings"
	"time"

	"go-micro.dev/v4/registry"
)

// NewTLSConfig returns the verified *tls.Config that [New] would use for the
// same options and environment, for callers that talk to Consul with a
// client of their own. It returns an error whenever New would, and
// [ErrPlaintext] when the options ask for plain HTTP (only possible in
// DevMode). The returned config is a new value the caller owns.
func NewTLSConfig(opts ...registry.Option) (*tls.Config, error) {
	cfg, err := resolve(applyOptions(opts), os.LookupEnv)
	if err != nil {
		return nil, err
	}
	if cfg.tls == nil {
		return nil, fmt.Errorf("securereg: the options ask for plain HTTP, so there is no TLS config: %w", ErrPlaintext)
	}
	return cfg.tls.Clone(), nil
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

// buildTLS returns a verified client TLS config. now is the clock used for
// certificate validity.
func buildTLS(in tlsInputs, now time.Time) (*tls.Config, error) {
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

	if in.caFile != "" || in.caPath != "" || len(in.caPEM) > 0 {
		pool := x509.NewCertPool()
		if in.caFile != "" {
			if err := addCAFile(pool, in.caFile, in.caFileFrom); err != nil {
				return nil, err
			}
		}
		if in.caPath != "" {
			if err := addCADir(pool, in.caPath, in.caPathFrom); err != nil {
				return nil, err
			}
		}
		if len(in.caPEM) > 0 {
			if _, err := parseCerts(in.caPEM); err != nil {
				return nil, fmt.Errorf("securereg: CA PEM from consul.Config TLSConfig.CAPem: %w: %w", err, ErrInvalidConfig)
			}
			pool.AppendCertsFromPEM(in.caPEM)
		}
		c.RootCAs = pool
	}

	switch {
	case in.certFile != "" || in.keyFile != "":
		cert, err := loadKeyPair(in.certFile, in.keyFile, in.certFrom, now)
		if err != nil {
			return nil, err
		}
		setClientCert(c, cert)
	case len(in.certPEM) > 0 || len(in.keyPEM) > 0:
		cert, err := tls.X509KeyPair(in.certPEM, in.keyPEM)
		if err != nil {
			return nil, fmt.Errorf("securereg: client cert from consul.Config TLSConfig.CertPEM/KeyPEM: %w: %w", err, ErrInvalidConfig)
		}
		if err := checkValidity(cert.Leaf, "consul.Config TLSConfig.CertPEM", now); err != nil {
			return nil, err
		}
		setClientCert(c, &cert)
	}
	return c, nil
}

// setClientCert serves cert through GetClientCertificate, which wins over
// Certificates in crypto/tls, and clears the caller's Certificates so the
// clone holds one answer only. The returned certificate is never modified.
func setClientCert(c *tls.Config, cert *tls.Certificate) {
	c.Certificates = nil
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return cert, nil
	}
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

// addCAFile adds every certificate in a PEM file to pool.
func addCAFile(pool *x509.CertPool, path, from string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("securereg: read CA file (%s): %w: %w", from, err, ErrInvalidConfig)
	}
	certs, err := parseCerts(data)
	if err != nil {
		return fmt.Errorf("securereg: CA file %q (%s): %w: %w", path, from, err, ErrInvalidConfig)
	}
	for _, c := range certs {
		pool.AddCert(c)
	}
	return nil
}

// addCADir adds the certificates of every PEM file directly in dir. Files
// without any PEM block are skipped; a malformed certificate is an error, and
// so is a directory that yields no certificate at all.
func addCADir(pool *x509.CertPool, dir, from string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("securereg: read CA directory (%s): %w: %w", from, err, ErrInvalidConfig)
	}
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue // hidden files and Kubernetes' ..data
		}
		path := filepath.Join(dir, e.Name())
		st, err := os.Stat(path) // follows symlinks
		if err != nil {
			return fmt.Errorf("securereg: CA directory (%s): %w: %w", from, err, ErrInvalidConfig)
		}
		if !st.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("securereg: CA directory (%s): %w: %w", from, err, ErrInvalidConfig)
		}
		certs, err := parseCerts(data)
		if errors.Is(err, errNoPEM) {
			continue
		}
		if err != nil {
			return fmt.Errorf("securereg: CA file %q in %s: %w: %w", path, from, err, ErrInvalidConfig)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
		n += len(certs)
	}
	if n == 0 {
		return fmt.Errorf("securereg: CA directory %q (%s) holds no PEM certificate; put the CA bundle there or use CAFile: %w", dir, from, ErrInvalidConfig)
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
