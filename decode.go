package securereg

import (
	"bytes"
	"compress/zlib"
	"encoding/hex"
	"encoding/json"
	"io"
	"sync"

	"github.com/hashicorp/consul/api"
	"go-micro.dev/v4/registry"
	mnet "go-micro.dev/v4/util/net"
)

// go-micro's Consul plugin stores a service's version, endpoints and node
// metadata in Consul tags: "v-", "e-" and "t-" followed by hex of zlib of
// the value ("v=", "e=", "t=" for the old plain form). Its decoder opens a
// zlib reader and decodes JSON for every tag on every lookup, which is most
// of its CPU. tagDecoder decodes each distinct tag once and caches the
// result; lookups then only copy. The results are the plugin's, quirks
// included (plugins/registry/consul encoding.go), which the differential
// test and FuzzDecodeTags hold it to.

// maxCachedTags bounds the cache; past it the cache starts over.
const maxCachedTags = 16384

// decodedTag is what one tag decodes to on its own.
type decodedTag struct {
	// endpoint tags
	endpoint   *registry.Endpoint // nil when the JSON was null
	endpointOK bool               // the JSON decoded
	// metadata tags
	meta   map[string]string
	metaOK bool
	// version tags
	version string
}

// tags is shared by every registry: decoding is a pure function of the tag,
// and the cache is bounded.
var tags = newTagDecoder()

type tagDecoder struct {
	mu    sync.RWMutex // guards cache
	cache map[string]*decodedTag
}

func newTagDecoder() *tagDecoder {
	return &tagDecoder{cache: make(map[string]*decodedTag)}
}

// tag returns the cached decoding of t, computing it once.
func (d *tagDecoder) tag(t string) *decodedTag {
	d.mu.RLock()
	dt, ok := d.cache[t]
	d.mu.RUnlock()
	if ok {
		return dt
	}
	dt = decodeTag(t)
	d.mu.Lock()
	if len(d.cache) >= maxCachedTags {
		d.cache = make(map[string]*decodedTag)
	}
	d.cache[t] = dt
	d.mu.Unlock()
	return dt
}

// decodeTag decodes one tag as the plugin would, whatever its kind.
func decodeTag(t string) *decodedTag {
	dt := &decodedTag{}
	if len(t) < 2 {
		return dt
	}
	var buf []byte
	switch t[1] {
	case '=':
		buf = []byte(t[2:])
	case '-':
		buf = unhexZlib(t[2:])
	}
	switch t[0] {
	case 'e':
		var e *registry.Endpoint
		if err := json.Unmarshal(buf, &e); err == nil {
			dt.endpoint, dt.endpointOK = e, true
		}
	case 't':
		var kv map[string]string
		if err := json.Unmarshal(buf, &kv); err == nil {
			dt.meta, dt.metaOK = kv, true
		}
	case 'v':
		dt.version = string(buf)
	}
	return dt
}

// unhexZlib is the plugin's decode: hex, then zlib; nil on any error.
func unhexZlib(s string) []byte {
	hr, err := hex.DecodeString(s)
	if err != nil {
		return nil
	}
	zr, err := zlib.NewReader(bytes.NewReader(hr))
	if err != nil {
		return nil
	}
	defer zr.Close()
	out, err := io.ReadAll(zr)
	if err != nil {
		return nil
	}
	return out
}

// version is the plugin's decodeVersion.
func (d *tagDecoder) version(tags []string) (string, bool) {
	for _, t := range tags {
		if len(t) < 2 || t[0] != 'v' {
			continue
		}
		if t[1] == '=' || t[1] == '-' {
			return d.tag(t).version, true
		}
	}
	return "", false
}

// endpoints is the plugin's decodeEndpoints, returning fresh copies. The
// plugin reads tag[1] of a one-byte "e" tag and panics; that tag is skipped.
func (d *tagDecoder) endpoints(tags []string) []*registry.Endpoint {
	var out []*registry.Endpoint
	var ver byte
	for _, t := range tags {
		if len(t) < 2 || t[0] != 'e' {
			continue
		}
		if ver > 0 && t[1] != ver {
			continue
		}
		if dt := d.tag(t); dt.endpointOK {
			out = append(out, copyEndpoint(dt.endpoint))
		}
		ver = t[1]
	}
	return out
}

// metadata is the plugin's decodeMetadata, returning a fresh map.
func (d *tagDecoder) metadata(tags []string) map[string]string {
	md := make(map[string]string)
	var ver byte
	for _, t := range tags {
		if len(t) < 2 || t[0] != 't' {
			continue
		}
		if ver > 0 && t[1] != ver {
			continue
		}
		if dt := d.tag(t); dt.metaOK {
			for k, v := range dt.meta {
				md[k] = v
			}
		}
		ver = t[1]
	}
	return md
}

// healthEntry is the part of a /v1/health/service answer that go-micro
// uses. Decoding into it instead of api.ServiceEntry skips the fields
// nobody reads (node and service meta, tagged addresses, check
// definitions...), which is most of the client's CPU for a lookup.
type healthEntry struct {
	Node *struct {
		Address string
	}
	Service *struct {
		ID      string
		Service string
		Tags    []string
		Address string
		Port    int
	}
	Checks []struct {
		Status string
	}
}

// healthQuery asks /v1/health/service/<name> (or /v1/health/connect/) with
// q, through consul/api so its query options and headers apply.
func healthQuery(c *api.Client, name string, connect bool, q *api.QueryOptions) ([]*healthEntry, *api.QueryMeta, error) {
	path := "/v1/health/service/"
	if connect {
		path = "/v1/health/connect/"
	}
	var out []*healthEntry
	meta, err := c.Raw().Query(path+name, &out, q)
	return out, meta, err
}

// services turns health entries into go-micro services exactly as the
// plugin's GetService does: grouped by version, nodes with a critical check
// left out, the node address used when the service has none.
func (d *tagDecoder) services(name string, entries []*healthEntry) []*registry.Service {
	var order []string
	byVersion := map[string]*registry.Service{}
	for _, e := range entries {
		if e.Service == nil || e.Service.Service != name {
			continue
		}
		tags := e.Service.Tags
		version, _ := d.version(tags)
		svc, ok := byVersion[version]
		if !ok {
			svc = &registry.Service{Endpoints: d.endpoints(tags), Name: e.Service.Service, Version: version}
			byVersion[version] = svc
			order = append(order, version)
		}
		critical := false
		for _, c := range e.Checks {
			if c.Status == api.HealthCritical {
				critical = true
				break
			}
		}
		if critical {
			continue
		}
		address := e.Service.Address
		if len(address) == 0 && e.Node != nil {
			address = e.Node.Address
		}
		svc.Nodes = append(svc.Nodes, &registry.Node{
			Id:       e.Service.ID,
			Address:  mnet.HostPort(address, e.Service.Port),
			Metadata: d.metadata(tags),
		})
	}
	out := make([]*registry.Service, 0, len(order))
	for _, v := range order {
		out = append(out, byVersion[v])
	}
	return out
}

// copyEndpoint deep-copies an endpoint, so callers may change what they get
// without touching the cache.
func copyEndpoint(e *registry.Endpoint) *registry.Endpoint {
	if e == nil {
		return nil
	}
	c := &registry.Endpoint{Name: e.Name, Request: copyValue(e.Request), Response: copyValue(e.Response)}
	if e.Metadata != nil {
		c.Metadata = make(map[string]string, len(e.Metadata))
		for k, v := range e.Metadata {
			c.Metadata[k] = v
		}
	}
	return c
}

func copyValue(v *registry.Value) *registry.Value {
	if v == nil {
		return nil
	}
	c := &registry.Value{Name: v.Name, Type: v.Type}
	if v.Values != nil {
		c.Values = make([]*registry.Value, len(v.Values))
		for i, x := range v.Values {
			c.Values[i] = copyValue(x)
		}
	}
	return c
}
