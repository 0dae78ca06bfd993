// Package fakeconsul is an HTTPS fake of the Consul HTTP endpoints that
// go-micro's Consul plugin calls, with ACL enforcement modelled on Consul's
// default-deny mode. It lets unit tests make real TLS handshakes and observe
// which token each request carried. Tests that need real Consul semantics
// use the consultest package instead.
package fakeconsul

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Role is what a token may do.
type Role int

const (
	// Read may read services and nodes.
	Read Role = iota + 1
	// Write may also register and deregister services.
	Write
)

// Request is what the fake saw of one request.
type Request struct {
	Method, Path string
	Token        string // X-Consul-Token, "" when absent
	PeerCerts    int    // client certificates presented
	PeerSerial   string // serial of the client certificate, "" for none
	Proto        string
	Query        string // raw query
}

// Config configures the fake.
type Config struct {
	Cert     tls.Certificate // server certificate
	ClientCA *x509.CertPool  // if set, a verified client cert is required
	Tokens   map[string]Role // known tokens
	Plain    bool            // serve plain HTTP instead of TLS
	HTTP1    bool            // do not offer HTTP/2
}

// Server is a running fake.
type Server struct {
	*httptest.Server
	Addr string // host:port

	mu       sync.Mutex // guards the fields below
	tokens   map[string]Role
	requests []Request
	services map[string]*api.AgentServiceRegistration // by ID
	index    uint64
	changed  chan struct{} // closed and replaced on each change
}

// Start starts a fake and stops it in t.Cleanup.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	s := &Server{
		tokens:   map[string]Role{},
		services: map[string]*api.AgentServiceRegistration{},
		index:    1,
		changed:  make(chan struct{}),
	}
	for k, v := range cfg.Tokens {
		s.tokens[k] = v
	}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are what tests provoke
	if cfg.Plain {
		s.Start()
	} else {
		s.TLS = &tls.Config{Certificates: []tls.Certificate{cfg.Cert}, MinVersion: tls.VersionTLS12}
		if cfg.ClientCA != nil {
			s.TLS.ClientCAs = cfg.ClientCA
			s.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		}
		s.EnableHTTP2 = !cfg.HTTP1
		s.StartTLS()
	}
	s.Addr = s.Listener.Addr().String()
	t.Cleanup(s.Close)
	return s
}

// Requests returns what the fake has seen so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Reset forgets the requests seen so far.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// SetToken adds, changes or (with role 0) removes a token.
func (s *Server) SetToken(token string, role Role) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if role == 0 {
		delete(s.tokens, token)
		return
	}
	s.tokens[token] = role
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	tok := r.Header.Get("X-Consul-Token")
	req := Request{Method: r.Method, Path: r.URL.Path, Token: tok, Proto: r.Proto, Query: r.URL.RawQuery}
	if r.TLS != nil {
		req.PeerCerts = len(r.TLS.PeerCertificates)
		if req.PeerCerts > 0 {
			req.PeerSerial = r.TLS.PeerCertificates[0].SerialNumber.String()
		}
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	role, known := s.tokens[tok]
	s.mu.Unlock()

	if tok != "" && !known {
		http.Error(w, "ACL not found", http.StatusForbidden)
		return
	}
	// Without a token Consul uses the anonymous token, which in
	// default-deny mode may not write and reads nothing.
	anonymous := tok == ""
	deny := func(perm, on string) {
		http.Error(w, fmt.Sprintf("Permission denied: token with AccessorID '00000000-0000-4000-8000-000000000002' lacks permission '%s' on %q", perm, on), http.StatusForbidden)
	}
	path := r.URL.Path
	switch {
	case r.Method == http.MethodPut && path == "/v1/agent/service/register":
		var reg api.AgentServiceRegistration
		if err := json.NewDecoder(r.Body).Decode(&reg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if anonymous || role < Write {
			deny("service:write", reg.Name)
			return
		}
		s.mu.Lock()
		s.services[reg.ID] = &reg
		s.bumpLocked()
		s.mu.Unlock()
	case r.Method == http.MethodPut && strings.HasPrefix(path, "/v1/agent/service/deregister/"):
		id := strings.TrimPrefix(path, "/v1/agent/service/deregister/")
		s.mu.Lock()
		reg, ok := s.services[id]
		s.mu.Unlock()
		if !ok {
			http.Error(w, "Unknown service ID", http.StatusNotFound)
			return
		}
		if anonymous || role < Write {
			deny("service:write", reg.Name)
			return
		}
		s.mu.Lock()
		delete(s.services, id)
		s.bumpLocked()
		s.mu.Unlock()
	case r.Method == http.MethodPut && strings.HasPrefix(path, "/v1/agent/check/pass/"):
		if anonymous || role < Write {
			deny("service:write", strings.TrimPrefix(path, "/v1/agent/check/pass/service:"))
			return
		}
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/v1/health/service/"):
		name := strings.TrimPrefix(path, "/v1/health/service/")
		s.block(r)
		out, idx := s.entries(name)
		if anonymous {
			out = nil
		}
		writeJSON(w, idx, out)
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/v1/health/checks/"):
		s.mu.Lock()
		idx := s.index
		s.mu.Unlock()
		writeJSON(w, idx, []*api.HealthCheck{})
	case r.Method == http.MethodGet && path == "/v1/catalog/services":
		s.block(r)
		out := map[string][]string{}
		// The index and the data are read under one lock, so a response
		// never pairs old data with a newer index.
		s.mu.Lock()
		idx := s.index
		if !anonymous {
			for _, reg := range s.services {
				out[reg.Name] = reg.Tags
			}
		}
		s.mu.Unlock()
		writeJSON(w, idx, out)
	default:
		http.Error(w, "fakeconsul: unsupported "+r.Method+" "+path, http.StatusNotFound)
	}
}

func (s *Server) bumpLocked() {
	s.index++
	close(s.changed)
	s.changed = make(chan struct{})
}

// block implements a blocking query: it waits until the index moves past
// the one asked for, for at most the wait time (capped at 2s).
func (s *Server) block(r *http.Request) {
	q := r.URL.Query()
	if !q.Has("index") {
		return
	}
	idx, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait := 2 * time.Second
	if d, err := time.ParseDuration(q.Get("wait")); err == nil && d < wait {
		wait = d
	}
	s.mu.Lock()
	cur, ch := s.index, s.changed
	s.mu.Unlock()
	if idx < cur {
		return
	}
	select {
	case <-ch:
	case <-time.After(wait):
	case <-r.Context().Done():
	}
}

// entries returns the service's entries and the index they belong to.
func (s *Server) entries(name string) ([]*api.ServiceEntry, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*api.ServiceEntry
	for _, reg := range s.services {
		if reg.Name != name {
			continue
		}
		out = append(out, &api.ServiceEntry{
			Node: &api.Node{Node: "node1", Address: "127.0.0.1"},
			Service: &api.AgentService{
				ID: reg.ID, Service: reg.Name, Tags: reg.Tags, Port: reg.Port,
				Address: reg.Address, Meta: reg.Meta,
			},
			Checks: api.HealthChecks{},
		})
	}
	return out, s.index
}

func writeJSON(w http.ResponseWriter, idx uint64, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
	w.Header().Set("X-Consul-Knownleader", "true")
	w.Header().Set("X-Consul-Lastcontact", "0")
	_ = json.NewEncoder(w).Encode(v)
}
