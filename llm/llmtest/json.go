package llmtest

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// field is one key and value of an ordered JSON object. Dify's wire lines
// have a fixed key order, which Go maps cannot reproduce.
type field struct {
	k string
	v any
}

// object is an ordered JSON object.
type object []field

// raw is JSON text written as is.
type raw string

// jsonStyle selects between the two serializers Dify has used: Python's
// json.dumps (", " and ": " separators, non-ASCII escaped as \uXXXX) and
// orjson (compact, raw UTF-8).
type jsonStyle int

const (
	styleSpaced jsonStyle = iota
	styleCompact
)

// render writes v in the given style.
func render(style jsonStyle, v any) string {
	var b strings.Builder
	writeValue(&b, style, v)
	return b.String()
}

func writeValue(b *strings.Builder, style jsonStyle, v any) {
	comma, colon := ", ", ": "
	if style == styleCompact {
		comma, colon = ",", ":"
	}
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case raw:
		b.WriteString(string(v))
	case string:
		writeString(b, style, v)
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case int:
		b.WriteString(strconv.Itoa(v))
	case int64:
		b.WriteString(strconv.FormatInt(v, 10))
	case float64:
		// Python prints floats with a fractional part, even 1.0.
		s := strconv.FormatFloat(v, 'f', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0"
		}
		b.WriteString(s)
	case object:
		b.WriteByte('{')
		for i, f := range v {
			if i > 0 {
				b.WriteString(comma)
			}
			writeString(b, style, f.k)
			b.WriteString(colon)
			writeValue(b, style, f.v)
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteString(comma)
			}
			writeValue(b, style, e)
		}
		b.WriteByte(']')
	case []string:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteString(comma)
			}
			writeString(b, style, e)
		}
		b.WriteByte(']')
	default:
		panic(fmt.Sprintf("llmtest: cannot render %T", v))
	}
}

// writeString quotes s. Both styles escape quote, backslash and control
// characters with the short forms JSON has; the spaced (Python) style also
// escapes DEL and everything beyond ASCII as lower-case \uXXXX, using
// surrogate pairs above the BMP, as json.dumps does with ensure_ascii.
func writeString(b *strings.Builder, style jsonStyle, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20:
				fmt.Fprintf(b, `\u%04x`, r)
			case style == styleSpaced && r >= 0x7f:
				if r > 0xffff {
					r -= 0x10000
					fmt.Fprintf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
				} else {
					fmt.Fprintf(b, `\u%04x`, r)
				}
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// splitRunes cuts s into n pieces of nearly equal rune counts, never
// splitting a character. Fewer pieces come back when s is shorter than n.
func splitRunes(s string, n int) []string {
	count := utf8.RuneCountInString(s)
	if n > count {
		n = count
	}
	if n <= 1 {
		if s == "" {
			return nil
		}
		return []string{s}
	}
	out := make([]string, 0, n)
	per, extra := count/n, count%n
	for i := 0; i < n; i++ {
		size := per
		if i < extra {
			size++
		}
		end := 0
		for j := 0; j < size; j++ {
			_, w := utf8.DecodeRuneInString(s[end:])
			end += w
		}
		out = append(out, s[:end])
		s = s[end:]
	}
	return out
}
