package webhook

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// decodeCases are inputs where reading JSON is easily wrong: syntax edge
// cases, wrong types, nulls, repeated and differently spelled keys, escapes,
// invalid UTF-8, deep nesting. They seed FuzzParse, so every go test runs
// them through its checks.
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

// envelopeFields are the keys of packageEnvelope and pingPayload, the only
// names an error of decodeEnvelope or parsePing may contain.
var envelopeFields = []string{
	"action", "package", "registry_package", "name", "namespace", "ecosystem", "package_type", "owner", "login",
	"package_version", "version", "package_url", "container_metadata", "tag", "digest",
	"hook_id", "hook", "type", "events",
}

// jsonTypes are the JSON types as the errors name them.
var jsonTypes = []string{"a string", "a number", "a boolean", "an array", "an object", "a 64-bit integer"}

// checkErrorText fails t unless msg, the detail of a decode error, is one
// of the fixed forms: a byte offset, or a path of hookd's own keys and two
// JSON types. Anything else could carry payload text into the log.
func checkErrorText(t *testing.T, msg string) {
	t.Helper()
	for _, prefix := range []string{"not valid JSON at byte ", "nested deeper than encoding/json's 10000 levels at byte "} {
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			if _, err := strconv.ParseUint(rest, 10, 63); err != nil {
				t.Fatalf("error %q: offset %q is not a number", msg, rest)
			}
			return
		}
	}
	if msg == "not valid JSON" || msg == "top level is null, want an object" {
		return
	}
	path, types, ok := strings.Cut(msg, " is ")
	got, want, ok2 := strings.Cut(types, ", want ")
	if !ok || !ok2 || !slices.Contains(jsonTypes, got) || !slices.Contains(jsonTypes, want) {
		t.Fatalf("error %q is not \"<path> is <type>, want <type>\"", msg)
	}
	if path == "top level" {
		return
	}
	for key := range strings.SplitSeq(path, ".") {
		if !slices.Contains(envelopeFields, key) {
			t.Fatalf("error %q names %q, not one of hookd's keys", msg, key)
		}
	}
}

// TestDecodeEnvelope pins decodeEnvelope's contract, which is
// encoding/json's (keys match case-insensitively, the last of repeated keys
// counts, a repeated object is merged into the first, nesting is limited to
// 10000 levels), and the errors, whose text names the field and the types
// but no payload text.
func TestDecodeEnvelope(t *testing.T) {
	nest := func(depth int) string { return strings.Repeat(`[`, depth) + strings.Repeat(`]`, depth) }
	tests := []struct {
		name       string
		in         string
		wantAction string
		wantPkg    string // Package.Name; "<nil>" for no package
		wantErr    string
	}{
		{name: "exact keys", in: `{"action":"published","package":{"name":"www"}}`, wantAction: "published", wantPkg: "www"},
		{name: "escaped key", in: `{"\u0061ction":"published","package":{"n\u0061me":"www"}}`, wantAction: "published", wantPkg: "www"},
		{name: "keys differing in case are read", in: `{"Action":"published","PACKAGE":{"name":"www"}}`, wantAction: "published", wantPkg: "www"},
		{name: "last repeated key counts", in: `{"action":"published","action":"deleted","package":{"name":"a"},"package":{"name":"b"}}`, wantAction: "deleted", wantPkg: "b"},
		{name: "a repeated package is merged", in: `{"package":{"name":"a"},"package":{"namespace":"o"}}`, wantPkg: "a"},
		{name: "a later null clears", in: `{"package":{"name":"a"},"package":null}`, wantPkg: "<nil>"},
		{name: "null and absent read as empty", in: `{"action":null,"package":{"name":null,"owner":null}}`, wantPkg: ""},
		{name: "nesting within encoding/json's limit", in: `{"action":"published","x":` + nest(9999) + `,"package":{"name":"www"}}`, wantAction: "published", wantPkg: "www"},
		{name: "nesting beyond encoding/json's limit", in: `{"action":"published","x":` + nest(10000) + `,"package":{"name":"www"}}`,
			wantErr: "nested deeper than encoding/json's 10000 levels at byte 10026"},
		{name: "not JSON", in: `{"action":"published"`, wantErr: "not valid JSON at byte 21"},
		{name: "not JSON, a character", in: `{"action":theryangeary}`, wantErr: "not valid JSON at byte 12"},
		{name: "empty", in: ``, wantErr: "not valid JSON at byte 0"},
		{name: "array", in: `["theryangeary"]`, wantErr: "top level is an array, want an object"},
		{name: "null", in: `null`, wantErr: "top level is null, want an object"},
		{name: "number action", in: `{"action":5}`, wantErr: "action is a number, want a string"},
		{name: "big number action", in: `{"action":1e700}`, wantErr: "action is a number, want a string"},
		{name: "object action", in: `{"action":{"v":"theryangeary"}}`, wantErr: "action is an object, want a string"},
		{name: "string package", in: `{"package":"theryangeary"}`, wantErr: "package is a string, want an object"},
		{name: "boolean name", in: `{"package":{"name":true}}`, wantErr: "package.name is a boolean, want a string"},
		{name: "array owner", in: `{"package":{"owner":["theryangeary"]}}`, wantErr: "package.owner is an array, want an object"},
		{name: "number login", in: `{"package":{"owner":{"login":7}}}`, wantErr: "package.owner.login is a number, want a string"},
		{name: "number tag name", in: `{"registry_package":{"package_version":{"container_metadata":{"tag":{"name":1}}}}}`,
			wantErr: "registry_package.package_version.container_metadata.tag.name is a number, want a string"},
		{name: "wrong type in the object not used", in: `{"action":"published","package":{"name":"www"},"registry_package":{"namespace":7}}`,
			wantErr: "registry_package.namespace is a number, want a string"},
		{name: "wrong type in a repeated key", in: `{"action":"published","action":7}`, wantErr: "action is a number, want a string"},
		{name: "the path names hookd's key, not the payload's spelling", in: `{"PACKAGE":{"Name":false}}`, wantErr: "package.name is a boolean, want a string"},
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
				checkErrorText(t, err.Error())
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

// TestParsePingErrors checks a ping's decode errors say as little.
func TestParsePingErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"hook_id":"theryangeary"}`, "hook_id is a string, want a 64-bit integer"},
		{`{"hook_id":1e700}`, "hook_id is a number, want a 64-bit integer"},
		{`{"hook_id":1,"hook":{"events":"theryangeary"}}`, "hook.events is a string, want an array"},
		{`{"hook_id":1,"hook":{"events":[7]}}`, "hook.events is a number, want a string"},
		{`{"hook_id":theryangeary}`, "not valid JSON at byte 13"},
		{`[` + strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10001), "nested deeper than encoding/json's 10000 levels at byte 10001"},
	}
	for _, tt := range tests {
		_, err := parsePing([]byte(tt.in))
		if !errors.Is(err, errMalformed) || err.Error() != errMalformed.Error()+": "+tt.want {
			t.Errorf("parsePing(%.40q) error = %v, want %q", tt.in, err, errMalformed.Error()+": "+tt.want)
			continue
		}
		checkErrorText(t, strings.TrimPrefix(err.Error(), errMalformed.Error()+": "))
	}
}
