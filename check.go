package securereg

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"go-micro.dev/v4/registry"
)

// CheckStatus is the outcome of one check.
type CheckStatus string

// Check outcomes, worst last.
const (
	CheckPass CheckStatus = "pass"
	CheckWarn CheckStatus = "warn"
	CheckFail CheckStatus = "fail"
)

// CheckResult is one line of a [Report].
type CheckResult struct {
	Name   string      `json:"name"`
	Status CheckStatus `json:"status"`
	Detail string      `json:"detail"`
}

// Report is the outcome of [Check]: whether a registry's connection to
// Consul is secure. It never contains the token.
type Report struct {
	Checks []CheckResult `json:"checks"`
}

// Status returns the worst status in the report: fail, else warn, else pass.
func (r *Report) Status() CheckStatus {
	worst := CheckPass
	for _, c := range r.Checks {
		switch {
		case c.Status == CheckFail:
			return CheckFail
		case c.Status == CheckWarn:
			worst = CheckWarn
		}
	}
	return worst
}

// Get returns the first check with this name, and whether there is one.
func (r *Report) Get(name string) (CheckResult, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return CheckResult{}, false
}

func (r *Report) add(name string, status CheckStatus, format string, args ...any) {
	r.Checks = append(r.Checks, CheckResult{Name: name, Status: status, Detail: fmt.Sprintf(format, args...)})
}

// checkServiceKey holds the service name for the least-privilege check.
type checkServiceKey struct{}

// CheckService names the service whose least-privilege rights [Check]
// verifies: write on the service itself, read on nodes and services, and no
// write on other services, operator or acl. Without it that check is
// skipped. It changes nothing else.
func CheckService(name string) registry.Option {
	return withValue(checkServiceKey{}, name)
}

// Check verifies, against the live Consul, that a registry built from opts
// would be secure: the configuration (the same validation as [New]), the TLS
// handshake with each address, whether Consul enforces client certificates,
// the token and, with [CheckService], its least privilege, and whether the
// agent also serves plain HTTP on 8500. Problems are checks with status
// warn or fail in the report. The error is non-nil only when the
// configuration is malformed (errors.Is(err, ErrInvalidConfig): a bad
// environment value, a missing file) or ctx ends; the report then says so
// too. Check takes at most a few seconds per address; bound it with ctx.
func Check(ctx context.Context, opts ...registry.Option) (*Report, error) {
	o := applyOptions(opts)
	st, err := newState(o)
	if err != nil {
		rep := &Report{}
		rep.add("configuration", CheckFail, "%s", err)
		if errors.Is(err, ErrInvalidConfig) {
			return rep, err
		}
		return rep, nil
	}
	defer st.close()
	return checkState(ctx, st, o)
}

// Check runs [Check] with the registry's current configuration. A registry
// whose configuration failed reports that as a failed check.
func (r *Registry) Check(ctx context.Context) (*Report, error) {
	r.mu.RLock()
	st, o, cerr, closed := r.st, r.opts, r.err, r.closed
	r.mu.RUnlock()
	if closed {
		return nil, errClosed()
	}
	if st == nil {
		rep := &Report{}
		rep.add("configuration", CheckFail, "%s", cerr)
		if errors.Is(cerr, ErrInvalidConfig) {
			return rep, cerr
		}
		return rep, nil
	}
	return checkState(ctx, st, o)
}

// checkTimeout bounds each network step of a check.
const checkTimeout = 5 * time.Second

func checkState(ctx context.Context, st *state, o registry.Options) (*Report, error) {
	rep := &Report{}
	cfg := st.cfg
	service, _ := lookup[string](o.Context, checkServiceKey{})

	// configuration
	detail := fmt.Sprintf("%s to %s; %s; %s; token from %s", strings.ToUpper(cfg.scheme), strings.Join(cfg.addrs, ", "),
		describeCA(cfg), describeClientCert(cfg), cfg.tokenFrom)
	switch {
	case cfg.dev:
		rep.add("configuration", CheckWarn, "DevMode is on (%s): %s", strings.Join(cfg.warnings, "; "), detail)
	default:
		rep.add("configuration", CheckPass, "%s", detail)
	}

	if cfg.tls != nil {
		for _, addr := range cfg.addrs {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			checkTLS(ctx, rep, st, addr)
		}
		checkCertificates(rep, cfg)
	} else {
		rep.add("tls", CheckFail, "plain HTTP (DevMode): the token is not sent and the traffic is readable and forgeable")
	}

	checkToken(ctx, rep, st, service)

	for _, addr := range cfg.addrs {
		checkPlaintext(ctx, rep, addr)
	}
	return rep, ctx.Err()
}

func describeCA(cfg *config) string {
	switch {
	case cfg.tls == nil:
		return "no TLS"
	case cfg.tls.ca != nil:
		return "CA from " + cfg.tls.ca.name()
	case cfg.tls.base.RootCAs != nil:
		return "CA from the caller's tls.Config"
	default:
		return "system roots (no CAFile or CONSUL_CACERT)"
	}
}

func describeClientCert(cfg *config) string {
	switch {
	case cfg.tls == nil:
		return "no client certificate"
	case cfg.tls.cert != nil:
		return "client cert " + cfg.tls.cert.certFile
	case cfg.tls.base.GetClientCertificate != nil || len(cfg.tls.base.Certificates) > 0:
		return "client cert from the caller's configuration"
	default:
		return "no client certificate"
	}
}

// checkTLS handshakes with addr as the registry would and reports the
// connection, the server certificate and whether Consul enforces mTLS.
func checkTLS(ctx context.Context, rep *Report, st *state, addr string) {
	name := "tls " + addr
	host, _, _ := net.SplitHostPort(addr)
	cfg := st.cfg.tls.config()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	cfg.NextProtos = []string{"http/1.1"} // the probes below speak HTTP/1.1
	requested := false
	if get := cfg.GetClientCertificate; get != nil {
		cfg.GetClientCertificate = func(i *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			requested = true
			return get(i)
		}
	} else {
		certs := cfg.Certificates
		cfg.Certificates = nil
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			requested = true
			if len(certs) > 0 {
				return &certs[0], nil
			}
			return &tls.Certificate{}, nil
		}
	}
	dctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(dctx, "tcp", addr)
	if err != nil {
		rep.add(name, CheckFail, "%s", wrapErr(st, "TLS handshake with "+addr, err))
		return
	}
	cs := conn.(*tls.Conn).ConnectionState()
	// With TLS 1.3 a server that rejects the client certificate says so
	// only after the handshake: make one request to find out.
	_, _, probeErr := probeLeader(dctx, conn, host)
	_ = conn.Close()
	if probeErr != nil {
		rep.add(name, CheckFail, "%s", wrapErr(st, "request to "+addr, probeErr))
		return
	}
	leaf := cs.PeerCertificates[0]
	root := "the system roots"
	if cfg.InsecureSkipVerify {
		root = "nothing: verification is OFF (DevMode)"
	} else if len(cs.VerifiedChains) > 0 {
		chain := cs.VerifiedChains[0]
		root = strconv.Quote(chain[len(chain)-1].Subject.CommonName)
	}
	status := CheckPass
	if cfg.InsecureSkipVerify {
		status = CheckFail
	}
	rep.add(name, status, "%s %s; chain verified to %s; %q is in the server certificate's SANs %s",
		tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), root, cfg.ServerName, sanList(leaf))

	left := time.Until(leaf.NotAfter)
	switch {
	case left <= 0:
		rep.add("server cert "+addr, CheckFail, "expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	case left <= st.cfg.expiry:
		rep.add("server cert "+addr, CheckWarn, "expires in %s (%s)", humanDuration(left), leaf.NotAfter.UTC().Format(time.RFC3339))
	default:
		rep.add("server cert "+addr, CheckPass, "expires in %s (%s)", humanDuration(left), leaf.NotAfter.UTC().Format(time.RFC3339))
	}

	checkMTLS(dctx, rep, st, addr, cfg, requested)
}

// checkMTLS reports whether Consul refuses a client without a certificate.
func checkMTLS(ctx context.Context, rep *Report, st *state, addr string, cfg *tls.Config, requested bool) {
	name := "mtls " + addr
	bare := cfg.Clone()
	bare.Certificates, bare.GetClientCertificate = nil, nil
	if conn, err := (&tls.Dialer{Config: bare}).DialContext(ctx, "tcp", addr); err == nil {
		_, _, err := probeLeader(ctx, conn, bare.ServerName) // any failure means refused
		_ = conn.Close()
		if err == nil {
			rep.add(name, CheckWarn, "Consul answered a client without a certificate: verify_incoming is off for HTTPS; set tls.https.verify_incoming = true")
			return
		}
	}
	detail := "Consul refuses clients without a certificate (verify_incoming)"
	if requested {
		detail += " and asked for ours"
	}
	if !st.hasClientCert() {
		rep.add(name, CheckFail, "%s, but no client certificate is configured: set ClientCert or %s/%s", detail, EnvClientCert, EnvClientKey)
		return
	}
	rep.add(name, CheckPass, "%s", detail)
}

// probeLeader sends GET /v1/status/leader on conn, without a token, and
// returns the answer's status line and the start of its body. An error
// means no HTTP answer came back.
func probeLeader(ctx context.Context, conn net.Conn, host string) (status string, body []byte, err error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, "GET /v1/status/leader HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n"); err != nil {
		return "", nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
	return resp.Status, body, nil
}

func sanList(c *x509.Certificate) string {
	var sans []string
	sans = append(sans, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		sans = append(sans, ip.String())
	}
	return "[" + strings.Join(sans, " ") + "]"
}

// checkCertificates reports days left on the client certificate and CAs.
func checkCertificates(rep *Report, cfg *config) {
	for _, c := range cfg.tls.certificates() {
		name := c.what
		if strings.HasPrefix(c.what, "CA cert") {
			name = "ca " + c.cert.Subject.CommonName
		}
		left := time.Until(c.cert.NotAfter)
		when := c.cert.NotAfter.UTC().Format(time.RFC3339)
		switch {
		case left <= 0:
			rep.add(name, CheckFail, "%s (%s) expired at %s", c.what, c.file, when)
		case left <= cfg.expiry:
			rep.add(name, CheckWarn, "%s (%s) expires in %s (%s); renew it", c.what, c.file, humanDuration(left), when)
		default:
			rep.add(name, CheckPass, "%s (%s) expires in %s (%s)", c.what, c.file, humanDuration(left), when)
		}
	}
}

// Well-known ACL identifiers.
const (
	globalManagementPolicyID = "00000000-0000-0000-0000-000000000001"
	anonymousAccessorID      = "00000000-0000-0000-0000-000000000002"
)

// checkToken reads the token's own record and, for a service, its rights.
func checkToken(ctx context.Context, rep *Report, st *state, service string) {
	if st.cfg.tokens == nil {
		rep.add("token", CheckWarn, "no ACL token configured (DevMode): with ACLs in default-deny mode every call fails")
		return
	}
	if st.cfg.scheme != "https" {
		rep.add("token", CheckWarn, "not checked: the token is never sent over plain HTTP")
		return
	}
	qctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	self, _, err := st.api.ACL().TokenReadSelf((&api.QueryOptions{}).WithContext(qctx))
	if err != nil {
		rep.add("token", CheckFail, "%s", wrapErr(st, "read the token's own record (/v1/acl/token/self)", err))
		return
	}
	var policies []string
	global := false
	for _, p := range self.Policies {
		policies = append(policies, p.Name)
		if p.ID == globalManagementPolicyID || p.Name == "global-management" {
			global = true
		}
	}
	for _, si := range self.ServiceIdentities {
		policies = append(policies, "service-identity:"+si.ServiceName)
	}
	expires := "never expires"
	if self.ExpirationTime != nil {
		expires = "expires " + self.ExpirationTime.UTC().Format(time.RFC3339)
	}
	desc := fmt.Sprintf("AccessorID %s; policies [%s]; %s", self.AccessorID, strings.Join(policies, ", "), expires)

	// Rights, from Consul's own authorizer (the endpoint the UI uses).
	lp := &Report{} // reported after the token itself
	defer func() { rep.Checks = append(rep.Checks, lp.Checks...) }()
	var excess, missing []string
	canWriteOthers := false
	if service != "" {
		need := []authzReq{
			{Resource: "service", Segment: service, Access: "write"},
			{Resource: "node", Segment: "securereg-check-node", Access: "read"},
			{Resource: "service", Segment: "securereg-check-other", Access: "read"},
		}
		avoid := []authzReq{
			{Resource: "service", Segment: "securereg-check-other", Access: "write"},
			{Resource: "operator", Access: "write"},
			{Resource: "acl", Access: "write"},
		}
		allowed, err := authorize(qctx, st, append(need, avoid...))
		if err != nil {
			lp.add("least privilege", CheckFail, "%s", wrapErr(st, "ask Consul what the token may do (/v1/internal/acl/authorize)", err))
		} else {
			for i, r := range need {
				if !allowed[i] {
					missing = append(missing, r.String())
				}
			}
			for i, r := range avoid {
				if allowed[len(need)+i] {
					excess = append(excess, r.String())
					canWriteOthers = canWriteOthers || r.Resource == "service"
				}
			}
			switch {
			case len(missing) > 0:
				lp.add("least privilege", CheckFail, "the token lacks %s, which service %q needs; `securereg policy --service %s` prints a policy that has them",
					strings.Join(missing, ", "), service, service)
			case len(excess) > 0:
				lp.add("least privilege", CheckWarn, "the token may also %s: more than service %q needs", strings.Join(excess, ", "), service)
			default:
				lp.add("least privilege", CheckPass, "write on service %q, read on nodes and services; no write on other services, operator or acl", service)
			}
		}
	}

	switch {
	case self.AccessorID == anonymousAccessorID:
		rep.add("token", CheckWarn, "this is the anonymous token: every client without a token has its rights (%s)", desc)
	case global:
		rep.add("token", CheckWarn, "the token has global-management: whoever reads it controls all of Consul; give the service its own token (securereg policy) (%s)", desc)
	case self.ExpirationTime == nil && canWriteOthers:
		rep.add("token", CheckWarn, "the token never expires and may write other services: a leak is lasting and wide (%s)", desc)
	default:
		rep.add("token", CheckPass, "valid; %s", desc)
	}
}

// authzReq is one question to Consul's authorizer.
type authzReq struct {
	Resource string
	Segment  string `json:",omitempty"`
	Access   string
}

func (a authzReq) String() string {
	if a.Segment == "" {
		return a.Resource + ":" + a.Access
	}
	return fmt.Sprintf("%s:%s on %q", a.Resource, a.Access, a.Segment)
}

// authorize asks POST /v1/internal/acl/authorize whether the token may do
// each request.
func authorize(ctx context.Context, st *state, reqs []authzReq) ([]bool, error) {
	body, err := json.Marshal(reqs)
	if err != nil {
		return nil, err
	}
	u := st.cfg.scheme + "://" + st.cfg.addrs[0] + "/v1/internal/acl/authorize"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(tokenHeader, placeholderToken) // replaced by tokenTransport
	resp, err := st.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, api.StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(data))}
	}
	var out []struct{ Allow bool }
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("decode the authorizer's answer: %w", err)
	}
	if len(out) != len(reqs) {
		return nil, fmt.Errorf("the authorizer answered %d of %d questions", len(out), len(reqs))
	}
	allowed := make([]bool, len(out))
	for i, o := range out {
		allowed[i] = o.Allow
	}
	return allowed, nil
}

// checkPlaintext reports whether the agent also answers plain HTTP on 8500.
func checkPlaintext(ctx context.Context, rep *Report, addr string) {
	checkPlaintextPort(ctx, rep, addr, "8500")
}

func checkPlaintextPort(ctx context.Context, rep *Report, addr, plainPort string) {
	host, port, _ := net.SplitHostPort(addr)
	target := net.JoinHostPort(host, plainPort)
	name := "plaintext " + target
	if port == plainPort {
		rep.add(name, CheckPass, "the HTTPS port itself is %s; no separate plain listener to look for", plainPort)
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", target)
	if err != nil {
		rep.add(name, CheckPass, "nothing listens on %s", target)
		return
	}
	defer conn.Close()
	status, body, err := probeLeader(dctx, conn, host)
	if err == nil && !bytes.Contains(body, []byte("HTTP request to an HTTPS server")) {
		rep.add(name, CheckWarn, "the agent also serves plain HTTP on %s (answered %s): anyone on the network can read or forge that traffic; set ports.http = -1", target, status)
		return
	}
	rep.add(name, CheckPass, "port %s is open but does not answer plain HTTP", plainPort)
}
