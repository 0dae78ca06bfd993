package securereg

import (
	"reflect"
	"strings"
	"testing"

	"go-micro.dev/v4/registry"
)

// sampleTags is what the plugin writes for a realistic service.
func sampleTags() []string {
	var t []string
	t = append(t, pluginEncodeMetadata(map[string]string{"protocol": "grpc", "zone": "eu-1", "x": "a=b,c"})...)
	t = append(t, pluginEncodeEndpoints([]*registry.Endpoint{
		{Name: "Greeter.Hello", Metadata: map[string]string{"stream": "false"},
			Request:  &registry.Value{Name: "Request", Type: "Request", Values: []*registry.Value{{Name: "name", Type: "string"}}},
			Response: &registry.Value{Name: "Response", Type: "Response"}},
		{Name: "Greeter.Stream", Metadata: map[string]string{"stream": "true"}},
	})...)
	t = append(t, pluginEncodeVersion("1.2.3")...)
	return t
}

// sameAsPlugin decodes tags with both and fails on any difference. When the
// plugin panics (it indexes tag[1] of a one-byte "e" or "t" tag), securereg
// must not.
func sameAsPlugin(t *testing.T, tags []string) {
	t.Helper()
	d := newTagDecoder()
	gotV, gotVOK := d.version(tags)
	gotE := d.endpoints(tags)
	gotM := d.metadata(tags)
	// Twice: the cached path must agree with the first.
	if v, ok := d.version(tags); v != gotV || ok != gotVOK {
		t.Fatalf("cached version differs")
	}
	if !reflect.DeepEqual(d.endpoints(tags), gotE) || !reflect.DeepEqual(d.metadata(tags), gotM) {
		t.Fatalf("cached decoding differs")
	}

	wantV, wantVOK := pluginDecodeVersion(tags)
	if gotV != wantV || gotVOK != wantVOK {
		t.Errorf("version = %q, %v; plugin %q, %v (tags %q)", gotV, gotVOK, wantV, wantVOK, tags)
	}
	if wantE, panicked := catch(func() []*registry.Endpoint { return pluginDecodeEndpoints(tags) }); !panicked && !reflect.DeepEqual(gotE, wantE) {
		t.Errorf("endpoints = %#v; plugin %#v (tags %q)", gotE, wantE, tags)
	}
	if wantM, panicked := catch(func() map[string]string { return pluginDecodeMetadata(tags) }); !panicked && !reflect.DeepEqual(gotM, wantM) {
		t.Errorf("metadata = %v; plugin %v (tags %q)", gotM, wantM, tags)
	}
}

func catch[T any](f func() T) (v T, panicked bool) {
	defer func() {
		if recover() != nil {
			panicked = true
		}
	}()
	return f(), false
}

func TestDecodeMatchesPlugin(t *testing.T) {
	tests := map[string][]string{
		"realistic":             sampleTags(),
		"empty":                 nil,
		"old plain encoding":    {`v=0.9`, `t={"a":"b"}`, `e={"name":"X.Y"}`},
		"mixed versions":        {`t={"a":"1"}`, "t-" + pluginEncode([]byte(`{"b":"2"}`)), `t={"c":"3"}`},
		"null endpoint":         {"e=null", `e={"name":"after"}`},
		"null metadata":         {"t=null", `t={"k":"v"}`},
		"bad hex":               {"v-zz", "e-zz", "t-zz"},
		"bad zlib":              {"v-00ff", "e-00ff"},
		"unknown second byte":   {"e*x", `e={"name":"skipped"}`, "t*", `t={"k":"v"}`},
		"one-byte tags":         {"v", "e", "t", "x"},
		"unrelated tags":        {"primary", "urlprefix-/", "v"},
		"version first wins":    {"v=1", "v=2"},
		"bad version then good": {"vx", "v=2"},
	}
	for name, tags := range tests {
		t.Run(name, func(t *testing.T) { sameAsPlugin(t, tags) })
	}
}

// FuzzDecodeTags holds the cached decoder to the plugin's on arbitrary tags
// (one per line). Its seeds run in every `go test`.
func FuzzDecodeTags(f *testing.F) {
	f.Add(strings.Join(sampleTags(), "\n"))
	f.Add("v=1\nt={\"a\":\"b\"}\ne={\"name\":\"n\"}")
	f.Add("e=null\nt=null\nv-")
	f.Add("t-" + pluginEncode([]byte(`{"k":"v"}`)) + "\nt={\"k\":\"w\"}")
	f.Add("e\nt\nv\n\n")
	f.Add("v-00ff\ne-zz")
	f.Fuzz(func(t *testing.T, s string) {
		sameAsPlugin(t, strings.Split(s, "\n"))
	})
}

func TestDecodedValuesAreCopies(t *testing.T) {
	d := newTagDecoder()
	tags := sampleTags()
	e1 := d.endpoints(tags)
	e1[0].Name = "changed"
	e1[0].Metadata["stream"] = "changed"
	e1[0].Request.Values[0].Name = "changed"
	m1 := d.metadata(tags)
	m1["zone"] = "changed"
	e2, m2 := d.endpoints(tags), d.metadata(tags)
	if e2[0].Name != "Greeter.Hello" || e2[0].Metadata["stream"] != "false" || e2[0].Request.Values[0].Name != "name" || m2["zone"] != "eu-1" {
		t.Fatal("a caller's change reached the cache")
	}
}
