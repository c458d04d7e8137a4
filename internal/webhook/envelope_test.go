package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// decodeCases are inputs where reading JSON is easily wrong: syntax edge
// cases, wrong types, nulls, repeated and differently spelled keys, escapes,
// invalid UTF-8, deep nesting. They also seed FuzzParse.
var decodeCases = []string{
	``, ` `, `{`, `}`, `{}`, `null`, ` null `, `nul`, `nullx`, `[]`, `[`, `"x"`, `5`, `true`, `{}{}`, `{} x`,
	`{"action":"published"}`, `{"action":null}`, `{"action":5}`, `{"action":{}}`, `{"action":"a","action":"b"}`,
	`{"action":null,"action":"b"}`, `{"action":"a","action":5}`,
	`{"ACTION":"x"}`, `{"Action":"x","action":"y"}`, `{"\u0061ction":"esc"}`, `{"a\u0063tion":"x\u0041\n"}`,
	`{"action":"caf\u00e9"}`, "{\"action\":\"caf\xc3\xa9\"}", "{\"action\":\"bad\xff\"}", "{\"action\":\"tab\there\"}",
	`{"action":"\ud800"}`, `{"action":"\ud83d\ude00"}`, `{"action":"\ud83dx"}`,
	`{"action":"\x"}`, `{"action":"\u12"}`, `{"action":"\u12zz"}`, `{"action":"\`, `{"action":"`, `{"action"}`, `{"action":}`,
	`{"action":"a",}`, `{,}`, `{"a":1,"a":2}`, `{"a":[1,2,[3,{"b":null}]],"action":"p"}`, `{"a":[1,]}`, `{"a":[,1]}`,
	`{"n":-0}`, `{"n":-}`, `{"n":01}`, `{"n":1.}`, `{"n":.5}`, `{"n":1e}`, `{"n":1e+5}`, `{"n":1E-05}`, `{"n":-12.5e3}`, `{"n":+1}`,
	`{"n":tru}`, `{"n":falsey}`, `{"n":truefalse}`,
	`{"package":null}`, `{"package":{}}`, `{"package":[]}`, `{"package":"x"}`, `{"package":{"name":"a"},"package":{"namespace":"b"}}`,
	`{"package":{"name":"a"},"package":null}`, `{"package":null,"package":{"name":"a"}}`,
	`{"package":{"name":"a"},"package":null,"package":{"namespace":"b"}}`,
	`{"Package":{"NAME":"a"},"REGISTRY_PACKAGE":{"name":"b"}}`, "{\"pac\u212aage\":{\"name\":\"kelvin\"}}",
	`{"package":{"owner":null,"owner":{"login":"x"},"owner":{"id":1}}}`, `{"package":{"owner":"x"}}`, `{"package":{"owner":{"login":1}}}`,
	`{"package":{"owner":{"login":"x"}},"registry_package":{"name":true}}`, `{"package.name":"x","package":{"name":"y"}}`,
	`{"package":{"package_version":{"container_metadata":{"tag":{"name":"t","digest":"d"}},"version":"v","package_url":"u"}}}`,
	`{"package":{"package_version":{"container_metadata":{"tag":null}}}}`, `{"package":{"package_version":{"container_metadata":{"tag":"x"}}}}`,
	`{"package":{"package_version":[]}}`, `{"package":{"package_version":{"container_metadata":[]}}}`,
	`{"package":{"package_version":{"container_metadata":{"tag":{"name":["t"]}}}}}`,
	`{"package":{"name":"a"}} `, "\t\r\n{\"action\" : \"p\" }\n", "\ufeff{}", `{"a":"` + "\x00" + `"}`, "{\"a\":\"\x7f\"}",
	`{"a":` + strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10000) + `}`,
	strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10000), strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001),
	`{"a":` + strings.Repeat(`{"b":`, 9998) + `1` + strings.Repeat(`}`, 9998) + `}`,
	`{"a":` + strings.Repeat(`{"b":`, 9999) + `1` + strings.Repeat(`}`, 9999) + `}`,
}

// refEnvelope is decodeEnvelope's contract built on encoding/json's
// tokenizer instead of gjson: the payload must be one JSON object; keys match
// exactly and the first of repeated keys counts; a field hookd reads is a
// string (an object on the way to one), null or absent, anything else is an
// error.
func refEnvelope(payload []byte) (packageEnvelope, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	// Numbers as text: 1e700 is valid JSON though no float64 holds it.
	dec.UseNumber()
	v, err := refValue(dec)
	if err != nil {
		return packageEnvelope{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return packageEnvelope{}, fmt.Errorf("after the top-level value: %v", err)
	}
	root, ok := v.(map[string]any)
	if !ok {
		return packageEnvelope{}, fmt.Errorf("top level is %T", v)
	}
	var errs []error
	str := func(m map[string]any, key string, dst *string) {
		switch x := m[key].(type) {
		case nil:
		case string:
			*dst = x
		default:
			errs = append(errs, fmt.Errorf("%s is %T", key, x))
		}
	}
	obj := func(m map[string]any, key string) map[string]any {
		switch x := m[key].(type) {
		case nil:
			return nil
		case map[string]any:
			return x
		default:
			errs = append(errs, fmt.Errorf("%s is %T", key, x))
			return nil
		}
	}
	pkg := func(key string) *ghPackage {
		o := obj(root, key)
		if o == nil {
			return nil
		}
		p := new(ghPackage)
		str(o, "name", &p.Name)
		str(o, "namespace", &p.Namespace)
		str(o, "ecosystem", &p.Ecosystem)
		str(o, "package_type", &p.PackageType)
		if owner := obj(o, "owner"); owner != nil {
			str(owner, "login", &p.Owner.Login)
		}
		pv := obj(o, "package_version")
		if pv == nil {
			return p
		}
		str(pv, "version", &p.PackageVersion.Version)
		str(pv, "package_url", &p.PackageVersion.PackageURL)
		if cm := obj(pv, "container_metadata"); cm != nil {
			if tag := obj(cm, "tag"); tag != nil {
				str(tag, "name", &p.PackageVersion.ContainerMetadata.Tag.Name)
				str(tag, "digest", &p.PackageVersion.ContainerMetadata.Tag.Digest)
			}
		}
		return p
	}
	var e packageEnvelope
	str(root, "action", &e.Action)
	e.Package = pkg("package")
	e.RegistryPackage = pkg("registry_package")
	return e, errors.Join(errs...)
}

// refArray stands for any JSON array in refValue's result.
type refArray struct{}

// refValue reads one value: an object as a map keeping the first of
// repeated keys, an array as refArray, anything else as encoding/json's
// token (string, float64, bool or nil).
func refValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		m := map[string]any{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("object key %v", k)
			}
			v, err := refValue(dec)
			if err != nil {
				return nil, err
			}
			if _, repeated := m[key]; !repeated {
				m[key] = v
			}
		}
		_, err := dec.Token()
		return m, err
	case json.Delim('['):
		for dec.More() {
			if _, err := refValue(dec); err != nil {
				return nil, err
			}
		}
		_, err := dec.Token()
		return refArray{}, err
	case json.Delim('}'), json.Delim(']'):
		return nil, fmt.Errorf("unexpected %v", tok)
	}
	return tok, nil
}

// validUTF8 returns s with each byte of an invalid UTF-8 sequence replaced
// by U+FFFD, as encoding/json unquotes strings. decodeEnvelope keeps such
// bytes as they are; they never reach a mapping, which must be ASCII.
func validUTF8(s string) string { return string([]rune(s)) }

// normalized returns e with validUTF8 applied to every string.
func normalized(e packageEnvelope) packageEnvelope {
	for _, p := range []**ghPackage{&e.Package, &e.RegistryPackage} {
		if *p == nil {
			continue
		}
		c := **p
		for _, s := range []*string{&c.Name, &c.Namespace, &c.Ecosystem, &c.PackageType, &c.Owner.Login,
			&c.PackageVersion.Version, &c.PackageVersion.PackageURL,
			&c.PackageVersion.ContainerMetadata.Tag.Name, &c.PackageVersion.ContainerMetadata.Tag.Digest} {
			*s = validUTF8(*s)
		}
		*p = &c
	}
	e.Action = validUTF8(e.Action)
	return e
}

// checkEnvelope fails t when decodeEnvelope and refEnvelope disagree on
// payload.
func checkEnvelope(t *testing.T, payload []byte) {
	t.Helper()
	name := string(payload)
	if len(name) > 60 {
		name = name[:60] + "…"
	}
	got, err := decodeEnvelope(payload)
	want, wantErr := refEnvelope(payload)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("decodeEnvelope(%q) error = %v, reference error = %v", name, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(normalized(got), want) {
		t.Fatalf("decodeEnvelope(%q) = %+v, reference = %+v", name, got, want)
	}
	// gjson's validation agrees with encoding/json's, but for nesting
	// deeper than encoding/json's limit of 10000.
	if g, j := gjson.ValidBytes(payload), json.Valid(payload); g != j {
		var v any
		if err := json.Unmarshal(payload, &v); g && !j && strings.Contains(fmt.Sprint(err), "exceeded max depth") {
			return
		}
		t.Fatalf("gjson.ValidBytes(%q) = %v, json.Valid = %v", name, g, j)
	}
}

// TestDecodeEnvelopeMatchesReference holds decodeEnvelope to refEnvelope on
// the edge cases and the fixtures.
func TestDecodeEnvelopeMatchesReference(t *testing.T) {
	inputs := append([]string(nil), decodeCases...)
	for _, f := range []string{realFixture, "package.published.docker.json", "package.published.npm.json", "registry_package.published.json", "ping.json"} {
		inputs = append(inputs, string(readFixture(t, f)))
	}
	for _, in := range inputs {
		t.Run("", func(t *testing.T) { checkEnvelope(t, []byte(in)) })
	}
}

// TestDecodeEnvelope pins the contract where it departs from decoding into
// packageEnvelope with encoding/json (keys match exactly, the first of
// repeated keys counts, no nesting limit), and the wrong-type errors, whose
// text names the field and the types but no payload text.
func TestDecodeEnvelope(t *testing.T) {
	deep := strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001)
	tests := []struct {
		name       string
		in         string
		wantAction string
		wantPkg    string // Package.Name; "<nil>" for no package
		wantErr    string
	}{
		{name: "exact keys", in: `{"action":"published","package":{"name":"www"}}`, wantAction: "published", wantPkg: "www"},
		{name: "escaped key", in: `{"\u0061ction":"published","package":{"n\u0061me":"www"}}`, wantAction: "published", wantPkg: "www"},
		{name: "keys differing in case are not read", in: `{"Action":"published","PACKAGE":{"name":"www"}}`, wantPkg: "<nil>"},
		{name: "first repeated key counts", in: `{"action":"published","action":"deleted","package":{"name":"a"},"package":{"name":"b"}}`, wantAction: "published", wantPkg: "a"},
		{name: "a repeated package is not merged", in: `{"package":{"name":"a"},"package":{"namespace":"o"}}`, wantPkg: "a"},
		{name: "a later null does not clear", in: `{"package":{"name":"a"},"package":null}`, wantPkg: "a"},
		{name: "null and absent read as empty", in: `{"action":null,"package":{"name":null,"owner":null}}`, wantPkg: ""},
		{name: "nesting beyond encoding/json's limit", in: `{"action":"published","x":` + deep + `,"package":{"name":"www"}}`, wantAction: "published", wantPkg: "www"},
		{name: "not JSON", in: `{"action":"published"`, wantErr: "not valid JSON"},
		{name: "array", in: `["theryangeary"]`, wantErr: "top level is an array, want an object"},
		{name: "null", in: `null`, wantErr: "top level is null, want an object"},
		{name: "number action", in: `{"action":5}`, wantErr: "action is a number, want a string"},
		{name: "object action", in: `{"action":{"v":"theryangeary"}}`, wantErr: "action is an object, want a string"},
		{name: "string package", in: `{"package":"theryangeary"}`, wantErr: "package is a string, want an object"},
		{name: "boolean name", in: `{"package":{"name":true}}`, wantErr: "package.name is a boolean, want a string"},
		{name: "array owner", in: `{"package":{"owner":["theryangeary"]}}`, wantErr: "package.owner is an array, want an object"},
		{name: "number tag name", in: `{"registry_package":{"package_version":{"container_metadata":{"tag":{"name":1}}}}}`,
			wantErr: "registry_package.package_version.container_metadata.tag.name is a number, want a string"},
		{name: "wrong type in the object not used", in: `{"action":"published","package":{"name":"www"},"registry_package":{"namespace":7}}`,
			wantErr: "registry_package.namespace is a number, want a string"},
		{name: "wrong type after a repeated key is not read", in: `{"action":"published","action":7}`, wantAction: "published", wantPkg: "<nil>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeEnvelope([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("decodeEnvelope() error = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "theryangeary") {
					t.Errorf("error %q contains payload text", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeEnvelope() error = %v", err)
			}
			pkg := "<nil>"
			if got.Package != nil {
				pkg = got.Package.Name
			}
			if got.Action != tt.wantAction || pkg != tt.wantPkg {
				t.Errorf("decodeEnvelope() = action %q package %q, want %q %q", got.Action, pkg, tt.wantAction, tt.wantPkg)
			}
		})
	}
}
