package webhook

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
)

// decodePackage is json.Unmarshal(data, e) for the one type hookd decodes
// on every delivery. encoding/json spends about 60 µs on the real 11 KB
// payload even into packageEnvelope's few fields, because it scans the
// input twice through its byte-at-a-time state machine; this scans once and
// only looks closely at the fields it keeps.
//
// It has encoding/json's semantics, which FuzzParse checks against
// json.Unmarshal: the same inputs are syntax errors (RFC 8259, nesting
// deeper than 10000 included), keys match their field case-insensitively
// (bytes.EqualFold on the unquoted key), a repeated key decodes into the
// same field again, null leaves a string or struct alone and clears a
// pointer, and a value of the wrong JSON type is an error. Strings with
// escapes or non-ASCII bytes are unquoted by encoding/json itself.
func decodePackage(data []byte, e *packageEnvelope) error {
	d := decoder{data: data}
	var err error
	switch d.peek() {
	case '{':
		err = d.object(func(key []byte) error {
			switch {
			case bytes.EqualFold(key, []byte("action")):
				return d.str(&e.Action)
			case bytes.EqualFold(key, []byte("package")):
				return d.pkgPtr(&e.Package)
			case bytes.EqualFold(key, []byte("registry_package")):
				return d.pkgPtr(&e.RegistryPackage)
			}
			return d.skip()
		})
	case 'n':
		err = d.literal("null")
	default:
		if err = d.skip(); err == nil {
			err = errJSONType
		}
	}
	if err != nil {
		return err
	}
	if d.ws(); d.pos != len(d.data) {
		return d.syntaxError()
	}
	return nil
}

// maxJSONDepth is encoding/json's nesting limit.
const maxJSONDepth = 10000

var errJSONType = errors.New("JSON value of the wrong type")

type decoder struct {
	data  []byte
	pos   int
	depth int
}

func (d *decoder) syntaxError() error {
	if d.pos >= len(d.data) {
		return errors.New("unexpected end of JSON input")
	}
	return fmt.Errorf("invalid character %q at offset %d", d.data[d.pos], d.pos)
}

func (d *decoder) ws() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ':
			// Pretty-printed payloads indent with runs of spaces: step over
			// up to eight at once.
			if d.pos+8 <= len(d.data) {
				d.pos += bits.TrailingZeros64(binary.LittleEndian.Uint64(d.data[d.pos:])^(ones*' ')|1<<63) >> 3
			} else {
				d.pos++
			}
		case '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte, or 0 at the end.
func (d *decoder) peek() byte {
	d.ws()
	if d.pos < len(d.data) {
		return d.data[d.pos]
	}
	return 0
}

// skip validates and steps over one value.
func (d *decoder) skip() error {
	switch c := d.peek(); {
	case c == '{':
		return d.object(func([]byte) error { return d.skip() })
	case c == '[':
		return d.array()
	case c == '"':
		_, _, err := d.stringToken()
		return err
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return d.number()
	default:
		return d.syntaxError()
	}
}

// object reads an object at d.pos, calling member for each key with d.pos
// at the member's value; member must consume the value.
func (d *decoder) object(member func(key []byte) error) error {
	if d.depth++; d.depth > maxJSONDepth {
		return errors.New("JSON nested too deeply")
	}
	d.pos++ // '{'
	if d.peek() == '}' {
		d.pos++
		d.depth--
		return nil
	}
	for {
		if d.peek() != '"' {
			return d.syntaxError()
		}
		key, err := d.key()
		if err != nil {
			return err
		}
		if d.peek() != ':' {
			return d.syntaxError()
		}
		d.pos++
		if err := member(key); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			d.depth--
			return nil
		default:
			return d.syntaxError()
		}
	}
}

func (d *decoder) array() error {
	if d.depth++; d.depth > maxJSONDepth {
		return errors.New("JSON nested too deeply")
	}
	d.pos++ // '['
	if d.peek() == ']' {
		d.pos++
		d.depth--
		return nil
	}
	for {
		if err := d.skip(); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.pos++
		case ']':
			d.pos++
			d.depth--
			return nil
		default:
			return d.syntaxError()
		}
	}
}

// key returns an object key, unquoted.
func (d *decoder) key() ([]byte, error) {
	start := d.pos
	raw, simple, err := d.stringToken()
	if err != nil || simple {
		return raw, err
	}
	var s string
	if err := json.Unmarshal(d.data[start:d.pos], &s); err != nil {
		return nil, err
	}
	return []byte(s), nil
}

// stringToken validates the string at d.pos and returns its raw content.
// simple reports that the content is ASCII without escapes, so that it is
// its own unquoted value.
func (d *decoder) stringToken() (raw []byte, simple bool, err error) {
	simple = true
	for i := d.pos + 1; ; {
		// Step eight plain bytes (ASCII, no control character, quote or
		// backslash) at a time, then to the first byte that is not.
		for i+8 <= len(d.data) {
			m := specialMask(binary.LittleEndian.Uint64(d.data[i:]))
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) >> 3
			break
		}
		if i >= len(d.data) {
			break
		}
		switch c := d.data[i]; {
		case c == '"':
			raw = d.data[d.pos+1 : i]
			d.pos = i + 1
			return raw, simple, nil
		case c == '\\':
			simple = false
			if i+1 >= len(d.data) {
				d.pos = len(d.data)
				return nil, false, d.syntaxError()
			}
			switch d.data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(d.data) || !isHex(string(d.data[i+2:i+6]), true) {
					d.pos = min(i+2, len(d.data))
					return nil, false, errors.New("invalid \\u escape in JSON string")
				}
				i += 6
			default:
				d.pos = i + 1
				return nil, false, d.syntaxError()
			}
		case c < 0x20:
			d.pos = i
			return nil, false, d.syntaxError()
		default:
			if c >= 0x80 {
				simple = false
			}
			i++
		}
	}
	d.pos = len(d.data)
	return nil, false, d.syntaxError()
}

const ones, highs = 0x0101010101010101, 0x8080808080808080

// specialMask returns, for the eight bytes of x (little endian), a mask
// whose lowest set bit is the high bit of the first byte that is a quote, a
// backslash, a control character or not ASCII; 0 when there is none. These
// are the "has zero byte" and "has byte less than n" bit tricks: they can
// flag bytes above the first true hit, never below it.
func specialMask(x uint64) uint64 {
	quote := x ^ (ones * '"')
	backslash := x ^ (ones * '\\')
	return ((quote-ones)&^quote | (backslash-ones)&^backslash | (x-ones*0x20)&^x | x) & highs
}

func (d *decoder) literal(lit string) error {
	if !bytes.HasPrefix(d.data[d.pos:], []byte(lit)) {
		for i := 0; i < len(lit) && d.pos < len(d.data) && d.data[d.pos] == lit[i]; i++ {
			d.pos++
		}
		return d.syntaxError()
	}
	d.pos += len(lit)
	return nil
}

// number steps over -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *decoder) number() error {
	digits := func() int {
		n := 0
		for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
			d.pos++
			n++
		}
		return n
	}
	if d.data[d.pos] == '-' {
		d.pos++
	}
	switch {
	case d.pos < len(d.data) && d.data[d.pos] == '0':
		d.pos++
	case digits() == 0:
		return d.syntaxError()
	}
	if d.pos < len(d.data) && d.data[d.pos] == '.' {
		d.pos++
		if digits() == 0 {
			return d.syntaxError()
		}
	}
	if d.pos < len(d.data) && (d.data[d.pos] == 'e' || d.data[d.pos] == 'E') {
		d.pos++
		if d.pos < len(d.data) && (d.data[d.pos] == '+' || d.data[d.pos] == '-') {
			d.pos++
		}
		if digits() == 0 {
			return d.syntaxError()
		}
	}
	return nil
}

// str decodes a string field: null leaves it alone.
func (d *decoder) str(dst *string) error {
	switch d.peek() {
	case 'n':
		return d.literal("null")
	case '"':
		start := d.pos
		raw, simple, err := d.stringToken()
		if err != nil {
			return err
		}
		if simple {
			*dst = string(raw)
			return nil
		}
		return json.Unmarshal(d.data[start:d.pos], dst)
	default:
		return d.wrongType()
	}
}

// wrongType is the answer to a value of another JSON type than the field's.
// encoding/json reports it only after checking the syntax of the whole
// input; either way the result is an error.
func (d *decoder) wrongType() error {
	if err := d.skip(); err != nil {
		return err
	}
	return errJSONType
}

// structure decodes a struct field: null leaves it alone.
func (d *decoder) structure(member func(key []byte) error) error {
	switch d.peek() {
	case 'n':
		return d.literal("null")
	case '{':
		return d.object(member)
	default:
		return d.wrongType()
	}
}

// pkgPtr decodes a *ghPackage field: null clears it, an object decodes into
// the existing value or a new one.
func (d *decoder) pkgPtr(dst **ghPackage) error {
	switch d.peek() {
	case 'n':
		*dst = nil
		return d.literal("null")
	case '{':
		if *dst == nil {
			*dst = new(ghPackage)
		}
		return d.pkg(*dst)
	default:
		return d.wrongType()
	}
}

func (d *decoder) pkg(p *ghPackage) error {
	return d.object(func(key []byte) error {
		switch {
		case bytes.EqualFold(key, []byte("name")):
			return d.str(&p.Name)
		case bytes.EqualFold(key, []byte("namespace")):
			return d.str(&p.Namespace)
		case bytes.EqualFold(key, []byte("ecosystem")):
			return d.str(&p.Ecosystem)
		case bytes.EqualFold(key, []byte("package_type")):
			return d.str(&p.PackageType)
		case bytes.EqualFold(key, []byte("owner")):
			return d.structure(func(key []byte) error {
				if bytes.EqualFold(key, []byte("login")) {
					return d.str(&p.Owner.Login)
				}
				return d.skip()
			})
		case bytes.EqualFold(key, []byte("package_version")):
			return d.structure(func(key []byte) error { return d.version(key, p) })
		}
		return d.skip()
	})
}

func (d *decoder) version(key []byte, p *ghPackage) error {
	pv := &p.PackageVersion
	switch {
	case bytes.EqualFold(key, []byte("version")):
		return d.str(&pv.Version)
	case bytes.EqualFold(key, []byte("package_url")):
		return d.str(&pv.PackageURL)
	case bytes.EqualFold(key, []byte("container_metadata")):
		return d.structure(func(key []byte) error {
			if !bytes.EqualFold(key, []byte("tag")) {
				return d.skip()
			}
			tag := &pv.ContainerMetadata.Tag
			return d.structure(func(key []byte) error {
				switch {
				case bytes.EqualFold(key, []byte("name")):
					return d.str(&tag.Name)
				case bytes.EqualFold(key, []byte("digest")):
					return d.str(&tag.Digest)
				}
				return d.skip()
			})
		})
	}
	return d.skip()
}
