package plaintext

import (
	"strconv"
	"unicode/utf8"

	"github.com/yuin/goldmark/util"
)

// appendUnescaped appends src to dst the way a CommonMark renderer reads
// inline text, minus the HTML escaping: backslash escapes of ASCII
// punctuation lose their backslash, and entity and numeric character
// references (&amp; &#20013; &#x4E2D;) become the characters they name.
// Anything that is not a valid reference is kept as written.
func appendUnescaped(dst, src []byte) []byte {
	start := 0
	for i := 0; i < len(src); {
		switch src[i] {
		case '\\':
			if i+1 < len(src) && util.IsPunct(src[i+1]) {
				dst = append(dst, src[start:i]...)
				dst = append(dst, src[i+1])
				i += 2
				start = i
				continue
			}
		case '&':
			dst = append(dst, src[start:i]...)
			start = i
			var n int
			if dst, n = appendReference(dst, src[i:]); n > 0 {
				i += n
				start = i
				continue
			}
		}
		i++
	}
	return append(dst, src[start:]...)
}

// appendReference decodes the character reference at the start of s (which
// begins with '&') and appends its characters to dst. It returns dst and the
// number of bytes of s consumed, or dst unchanged and 0 if s does not start
// with a valid reference. Limits follow CommonMark: up to 7 decimal or 6
// hexadecimal digits; invalid code points and NUL become U+FFFD.
func appendReference(dst, s []byte) ([]byte, int) {
	if len(s) < 3 {
		return dst, 0
	}
	if s[1] == '#' {
		base, from, maxDigits := 10, 2, 7
		if s[2] == 'x' || s[2] == 'X' {
			base, from, maxDigits = 16, 3, 6
		}
		i := from
		for i < len(s) && i-from <= maxDigits && isDigitIn(s[i], base) {
			i++
		}
		if i == from || i-from > maxDigits || i >= len(s) || s[i] != ';' {
			return dst, 0
		}
		v, err := strconv.ParseUint(string(s[from:i]), base, 32)
		if err != nil {
			return dst, 0
		}
		return utf8.AppendRune(dst, util.ToValidRune(rune(v))), i + 1
	}
	i := 1
	for i < len(s) && util.IsAlphaNumeric(s[i]) {
		i++
	}
	if i == 1 || i >= len(s) || s[i] != ';' {
		return dst, 0
	}
	e, ok := util.LookUpHTML5EntityByName(string(s[1:i]))
	if !ok {
		return dst, 0
	}
	return append(dst, e.Characters...), i + 1
}

// isDigitIn reports whether c is a digit in base 10 or 16.
func isDigitIn(c byte, base int) bool {
	if base == 16 {
		return util.IsHexDecimal(c)
	}
	return util.IsNumeric(c)
}
