package webhook

import (
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"math/rand/v2"
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

// TestSpecialMask checks the eight-byte test against the byte-wise rule,
// for every byte value in every position and for random words.
func TestSpecialMask(t *testing.T) {
	isSpecial := func(c byte) bool { return c == '"' || c == '\\' || c < 0x20 || c >= 0x80 }
	check := func(w [8]byte) {
		t.Helper()
		want := 8
		for i, c := range w {
			if isSpecial(c) {
				want = i
				break
			}
		}
		m := specialMask(binary.LittleEndian.Uint64(w[:]))
		if got := bits.TrailingZeros64(m) >> 3; got != want {
			t.Fatalf("first special byte of %q by specialMask = %d, want %d", w, got, want)
		}
	}
	for pos := range 8 {
		for c := range 256 {
			w := [8]byte{'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'}
			w[pos] = byte(c)
			check(w)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		var w [8]byte
		for i := range w {
			// Mostly printable ASCII, to reach words with one special byte.
			if rng.IntN(4) == 0 {
				w[i] = byte(rng.IntN(256))
			} else {
				w[i] = byte(0x20 + rng.IntN(0x60))
			}
		}
		check(w)
	}
}

// TestSkipSpaces checks the space runs the decoder steps over.
func TestSkipSpaces(t *testing.T) {
	for n := range 40 {
		for _, tail := range []string{"x", "\n x", "\t"} {
			in := strings.Repeat(" ", n) + tail
			d := decoder{data: []byte(in)}
			d.ws()
			want := len(in) - len(strings.TrimLeft(in, " \t\n\r"))
			if d.pos != want {
				t.Errorf("ws() over %q stopped at %d, want %d", in, d.pos, want)
			}
		}
	}
}
