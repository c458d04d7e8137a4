package webhook

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// decodeCases are inputs where a hand-written decoder is easily wrong. They
// also seed FuzzParse.
var decodeCases = []string{
	``, ` `, `{`, `}`, `{}`, `null`, ` null `, `nul`, `nullx`, `[]`, `[`, `"x"`, `5`, `true`, `{}{}`, `{} x`,
	`{"action":"published"}`, `{"action":null}`, `{"action":5}`, `{"action":{}}`, `{"action":"a","action":"b"}`,
	`{"ACTION":"x"}`, `{"Action":"x","action":"y"}`, `{"\u0061ction":"esc"}`, `{"a\u0063tion":"x\u0041\n"}`,
	`{"action":"caf\u00e9"}`, "{\"action\":\"caf\xc3\xa9\"}", "{\"action\":\"bad\xff\"}", "{\"action\":\"tab\there\"}",
	`{"action":"\x"}`, `{"action":"\u12"}`, `{"action":"\u12zz"}`, `{"action":"\`, `{"action":"`, `{"action"}`, `{"action":}`,
	`{"action":"a",}`, `{,}`, `{"a":1,"a":2}`, `{"a":[1,2,[3,{"b":null}]],"action":"p"}`, `{"a":[1,]}`, `{"a":[,1]}`,
	`{"n":-0}`, `{"n":-}`, `{"n":01}`, `{"n":1.}`, `{"n":.5}`, `{"n":1e}`, `{"n":1e+5}`, `{"n":1E-05}`, `{"n":-12.5e3}`, `{"n":+1}`,
	`{"n":tru}`, `{"n":falsey}`, `{"n":truefalse}`,
	`{"package":null}`, `{"package":{}}`, `{"package":[]}`, `{"package":"x"}`, `{"package":{"name":"a"},"package":{"namespace":"b"}}`,
	`{"package":{"name":"a"},"package":null}`, `{"package":{"name":"a"},"package":null,"package":{"namespace":"b"}}`,
	`{"Package":{"NAME":"a"},"REGISTRY_PACKAGE":{"name":"b"}}`, "{\"pac\u212aage\":{\"name\":\"kelvin\"}}",
	`{"package":{"owner":null,"owner":{"login":"x"},"owner":{"id":1}}}`, `{"package":{"owner":"x"}}`, `{"package":{"owner":{"login":1}}}`,
	`{"package":{"package_version":{"container_metadata":{"tag":{"name":"t","digest":"d"}},"version":"v","package_url":"u"}}}`,
	`{"package":{"package_version":{"container_metadata":{"tag":null}}}}`, `{"package":{"package_version":{"container_metadata":{"tag":"x"}}}}`,
	`{"package":{"package_version":[]}}`, `{"package":{"package_version":{"container_metadata":[]}}}`,
	`{"package":{"name":"a"}} `, "\t\r\n{\"action\" : \"p\" }\n", "\ufeff{}", `{"a":"` + "\x00" + `"}`, "{\"a\":\"\x7f\"}",
	`{"a":` + strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10000) + `}`,
	strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10000), strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001),
	`{"a":` + strings.Repeat(`{"b":`, 9998) + `1` + strings.Repeat(`}`, 9998) + `}`,
	`{"a":` + strings.Repeat(`{"b":`, 9999) + `1` + strings.Repeat(`}`, 9999) + `}`,
}

// TestDecodePackageMatchesEncodingJSON holds decodePackage to json.Unmarshal.
func TestDecodePackageMatchesEncodingJSON(t *testing.T) {
	inputs := append([]string(nil), decodeCases...)
	for _, f := range []string{realFixture, "package.published.docker.json", "package.published.npm.json", "registry_package.published.json", "ping.json"} {
		inputs = append(inputs, string(readFixture(t, f)))
	}
	for _, in := range inputs {
		var fast, ref packageEnvelope
		errFast := decodePackage([]byte(in), &fast)
		errRef := json.Unmarshal([]byte(in), &ref)
		name := in
		if len(name) > 60 {
			name = name[:60] + "…"
		}
		if (errFast == nil) != (errRef == nil) {
			t.Errorf("decodePackage(%q) error = %v, json.Unmarshal error = %v", name, errFast, errRef)
			continue
		}
		if errRef == nil && !reflect.DeepEqual(fast, ref) {
			t.Errorf("decodePackage(%q) = %+v, json.Unmarshal = %+v", name, fast, ref)
		}
	}
}
