package securereg

// The oracle: go-micro's Consul plugin's tag encoding and decoding, copied
// from github.com/go-micro/plugins/v4/registry/consul v1.2.1 encoding.go
// (Apache License 2.0), where they are unexported. Tests hold securereg's
// cached decoder to exactly these results.

import (
	"bytes"
	"compress/zlib"
	"encoding/hex"
	"encoding/json"
	"io"

	"go-micro.dev/v4/registry"
)

func pluginEncode(buf []byte) string {
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	if _, err := w.Write(buf); err != nil {
		return ""
	}
	w.Close()
	return hex.EncodeToString(b.Bytes())
}

func pluginDecode(d string) []byte {
	hr, err := hex.DecodeString(d)
	if err != nil {
		return nil
	}
	zr, err := zlib.NewReader(bytes.NewReader(hr))
	if err != nil {
		return nil
	}
	rbuf, err := io.ReadAll(zr)
	if err != nil {
		return nil
	}
	zr.Close()
	return rbuf
}

func pluginEncodeEndpoints(en []*registry.Endpoint) []string {
	var tags []string
	for _, e := range en {
		if b, err := json.Marshal(e); err == nil {
			tags = append(tags, "e-"+pluginEncode(b))
		}
	}
	return tags
}

func pluginDecodeEndpoints(tags []string) []*registry.Endpoint {
	var en []*registry.Endpoint
	var ver byte
	for _, tag := range tags {
		if len(tag) == 0 || tag[0] != 'e' {
			continue
		}
		if ver > 0 && tag[1] != ver {
			continue
		}
		var e *registry.Endpoint
		var buf []byte
		if tag[1] == '=' {
			buf = []byte(tag[2:])
		}
		if tag[1] == '-' {
			buf = pluginDecode(tag[2:])
		}
		if err := json.Unmarshal(buf, &e); err == nil {
			en = append(en, e)
		}
		ver = tag[1]
	}
	return en
}

func pluginEncodeMetadata(md map[string]string) []string {
	var tags []string
	for k, v := range md {
		if b, err := json.Marshal(map[string]string{k: v}); err == nil {
			tags = append(tags, "t-"+pluginEncode(b))
		}
	}
	return tags
}

func pluginDecodeMetadata(tags []string) map[string]string {
	md := make(map[string]string)
	var ver byte
	for _, tag := range tags {
		if len(tag) == 0 || tag[0] != 't' {
			continue
		}
		if ver > 0 && tag[1] != ver {
			continue
		}
		var kv map[string]string
		var buf []byte
		if tag[1] == '=' {
			buf = []byte(tag[2:])
		}
		if tag[1] == '-' {
			buf = pluginDecode(tag[2:])
		}
		if err := json.Unmarshal(buf, &kv); err == nil {
			for k, v := range kv {
				md[k] = v
			}
		}
		ver = tag[1]
	}
	return md
}

func pluginEncodeVersion(v string) []string { return []string{"v-" + pluginEncode([]byte(v))} }

func pluginDecodeVersion(tags []string) (string, bool) {
	for _, tag := range tags {
		if len(tag) < 2 || tag[0] != 'v' {
			continue
		}
		if tag[1] == '=' {
			return tag[2:], true
		}
		if tag[1] == '-' {
			return string(pluginDecode(tag[2:])), true
		}
	}
	return "", false
}
