package events

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	gojson "github.com/goccy/go-json"
)

// The engine encodes JSON with goccy/go-json. On its hot path (a node's
// output, a new execution's inputs, the signed submission, an execution's
// end event and view) it writes the same bytes by hand instead: an encoder finds its way through a value by reflection and
// compiled opcodes, and copies its result out, which costs several times
// what appending the few known shapes does. The functions here are the
// pieces; each is checked against the encoder byte for byte.

// scratch recycles the buffers the encodings are built in; what they
// return is a copy of the exact size, as the encoder's is, so that what a
// caller keeps holds no spare room.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// exact returns a copy of b and puts p back in the scratch pool, holding
// b for the next use unless b grew past 64 KB; a nil b (an append that
// failed) returns nil and leaves p's buffer as it was.
func exact(p *[]byte, b []byte) []byte {
	defer scratch.Put(p)
	if b == nil {
		return nil
	}
	if cap(b) <= 64<<10 {
		*p = b[:0]
	}
	out := make([]byte, len(b))
	copy(out, b)
	return out
}

// MarshalValue is AppendValue to an empty slice.
func MarshalValue(v any) (data []byte, ok, decoded bool) {
	p := scratch.Get().(*[]byte)
	b, ok, decoded := AppendValue((*p)[:0], v)
	if !ok {
		exact(p, nil)
		return nil, false, false
	}
	return exact(p, b), true, decoded
}

// Encode returns what a appends, in a slice of its exact size.
func Encode(a JSONAppender) ([]byte, error) {
	p := scratch.Get().(*[]byte)
	b, err := a.AppendJSON((*p)[:0])
	if err != nil {
		exact(p, nil)
		return nil, err
	}
	return exact(p, b), nil
}

var (
	errTimeRange = errors.New("a time outside the years 0 to 9999, or a day or more from UTC, cannot be encoded")
	errBadFloat  = errors.New("NaN or an infinity cannot be encoded")
)

// AppendTime appends t as time.Time.MarshalJSON does. A time outside the
// years 0 to 9999, or in a zone a day or more from UTC, which it cannot
// encode, is an error.
func AppendTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		return nil, errTimeRange
	}
	if _, off := t.Zone(); off <= -24*3600 || off >= 24*3600 {
		return nil, errTimeRange
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

// AppendFloat appends f as the engine's encoder does: the shortest
// decimal that reads back as f, in exponent form only for very small or
// large values (2.5e-09, where encoding/json writes 2.5e-9). NaN and
// infinities, which JSON cannot hold, are an error, as for the encoder.
func AppendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, errBadFloat
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(b, f, format, -1, 64), nil
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string as the engine's encoder does:
// HTML characters, control characters (\u0008 and \u000c where
// encoding/json writes \b and \f), U+2028 and U+2029 escaped, and invalid
// UTF-8 replaced by U+FFFD.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if plainByte(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// plainByte reports whether an ASCII byte stands for itself in a string
// the engine's encoder writes.
func plainByte(c byte) bool {
	return c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// plainString reports whether s is written as it is between the quotes:
// valid UTF-8 without a byte or rune that AppendString escapes.
func plainString(s string) bool {
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if !plainByte(c) {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			return false
		}
		i += size
	}
	return true
}

// maxDepth bounds how deep AppendValue goes into arrays and objects: a
// value that contains itself is left to the encoder, which refuses it.
const maxDepth = 1000

// AppendValue appends v as the engine's encoder writes it, for the values
// that decoding JSON and evaluating expressions give: nil, bools, finite
// float64s, ints, strings, and []any and non-nil map[string]any of those
// whose object keys need no escaping. Keys are sorted as the encoder sorts
// them, by their encoding: a key followed by its closing quote, so "a!"
// comes before "a". It reports false for any other value (and returns b as
// it was): the caller then uses the encoder. decoded reports whether
// decoding the JSON gives v back, which an int (decoded as a float64) or
// a string of invalid UTF-8 (replaced by U+FFFD) prevents.
func AppendValue(b []byte, v any) (out []byte, ok, decoded bool) {
	e := valueEncoder{decoded: true}
	start := len(b)
	if b, ok = e.append(b, v, 0); !ok {
		return b[:start], false, false
	}
	return b, true, e.decoded
}

type valueEncoder struct{ decoded bool }

func (e *valueEncoder) append(b []byte, v any, depth int) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), true
	case bool:
		return strconv.AppendBool(b, x), true
	case float64:
		if out, err := AppendFloat(b, x); err == nil {
			return out, true
		}
		return b, false
	case int:
		e.decoded = false
		return strconv.AppendInt(b, int64(x), 10), true
	case string:
		if !utf8.ValidString(x) {
			e.decoded = false
		}
		return AppendString(b, x), true
	case []any:
		if x == nil || depth == maxDepth {
			return b, false
		}
		b = append(b, '[')
		for i, el := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var ok bool
			if b, ok = e.append(b, el, depth+1); !ok {
				return b, false
			}
		}
		return append(b, ']'), true
	case map[string]any:
		if x == nil || depth == maxDepth {
			return b, false
		}
		var small [8]string
		keys := small[:0]
		for k := range x {
			if !plainString(k) {
				return b, false
			}
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareEncoded)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = append(b, k...)
			b = append(b, '"', ':')
			var ok bool
			if b, ok = e.append(b, x[k], depth+1); !ok {
				return b, false
			}
		}
		return append(b, '}'), true
	}
	return b, false
}

// compareEncoded compares two plain keys as their encodings compare: each
// followed by its closing quote.
func compareEncoded(a, b string) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	switch {
	case len(a) == len(b):
		return 0
	case len(a) < len(b):
		return '"' - int(b[n])
	default:
		return int(a[n]) - '"'
	}
}

// AppendJSON appends the event as the engine's encoder writes it. An
// event with an error or an execution, which the hot path does not
// publish, is encoded by the encoder.
func (e *Event) AppendJSON(b []byte) ([]byte, error) {
	if e.Error != nil || len(e.Execution) > 0 {
		out, err := gojson.Marshal(e)
		return append(b, out...), err
	}
	var err error
	b = append(b, `{"executionId":`...)
	b = AppendString(b, e.ExecutionID)
	b = append(b, `,"kind":`...)
	b = AppendString(b, e.Kind)
	b = append(b, `,"userId":`...)
	b = AppendString(b, e.UserID)
	b = append(b, `,"workflowId":`...)
	b = AppendString(b, e.WorkflowID)
	b = append(b, `,"at":`...)
	if b, err = AppendTime(b, e.At); err != nil {
		return nil, err
	}
	if len(e.Nodes) > 0 {
		b = append(b, `,"nodes":[`...)
		for i := range e.Nodes {
			n := &e.Nodes[i]
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"id":`...)
			b = AppendString(b, n.ID)
			b = append(b, `,"type":`...)
			b = AppendString(b, n.Type)
			b = append(b, `,"status":`...)
			b = AppendString(b, n.Status)
			if n.Attempts != 0 {
				b = append(b, `,"attempts":`...)
				b = strconv.AppendInt(b, int64(n.Attempts), 10)
			}
			if n.DurationMs != 0 {
				b = append(b, `,"durationMs":`...)
				if b, err = AppendFloat(b, n.DurationMs); err != nil {
					return nil, err
				}
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if e.DurationMs != 0 {
		b = append(b, `,"durationMs":`...)
		if b, err = AppendFloat(b, e.DurationMs); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// AppendJSON appends the admission as the engine's encoder writes it,
// given that its inputs are as the encoder writes them (compact, HTML
// characters escaped), as the engine makes them. Empty inputs are null.
func (a *Admission) AppendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"executionId":`...)
	b = AppendString(b, a.ExecutionID)
	b = append(b, `,"workflowId":`...)
	b = AppendString(b, a.WorkflowID)
	b = append(b, `,"workflowVersion":`...)
	b = strconv.AppendInt(b, int64(a.WorkflowVersion), 10)
	b = append(b, `,"userId":`...)
	b = AppendString(b, a.UserID)
	b = append(b, `,"createdAt":`...)
	if b, err = AppendTime(b, a.CreatedAt); err != nil {
		return nil, err
	}
	b = append(b, `,"inputs":`...)
	if len(a.Inputs) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, a.Inputs...)
	}
	return append(b, '}'), nil
}
