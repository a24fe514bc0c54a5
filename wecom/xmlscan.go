package wecom

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file reads the XML of callbacks: the envelope and the decrypted
// message. Both are flat documents — a root element whose children hold
// text or CDATA, a few of them one or two levels deeper — and every
// callback is parsed twice, so the parser is on the hot path of intake.
// encoding/xml produces a token (and several allocations) per element;
// this scanner walks the bytes once and hands out slices of the input.
//
// It accepts a subset of XML 1.0 and is never more lenient than
// encoding/xml in strict mode: whatever it accepts, encoding/xml accepts
// with the same element names and text (a differential fuzz test checks
// this). It rejects what WeCom never sends: DOCTYPE and other directives,
// entities other than the five predefined ones and character references,
// namespace prefixes, non-ASCII names, unquoted attributes, characters XML
// forbids, invalid UTF-8, more than one root element, text outside the
// root and nesting deeper than maxXMLDepth.

// walkXML parses a small XML document and calls fn with the name and the
// character data of every direct child of the root element, in document
// order. Text is as XML defines it: CDATA sections verbatim, references
// expanded, line ends folded to "\n". name and text are only valid during
// the call.
func walkXML(data []byte, fn func(name, text []byte) error) error {
	s := xmlScanner{data: data}
	return s.walk(fn)
}

type xmlScanner struct {
	data []byte
	pos  int
	// buf holds the current child's text when it cannot be a slice of
	// data (references, CR, or pieces split by comments or children).
	buf []byte
	// junk receives text that is only checked (outside depth-2 children,
	// attribute values), so that buf is never overwritten.
	junk []byte
}

func (s *xmlScanner) syntax(what string) error {
	line := 1 + bytes.Count(s.data[:min(s.pos, len(s.data))], []byte{'\n'})
	return malformed(fmt.Sprintf("xml: %s on line %d", what, line))
}

func (s *xmlScanner) walk(fn func(name, text []byte) error) error {
	var (
		stack    [maxXMLDepth][]byte // open elements
		depth    int
		rootSeen bool
		text     []byte // the current depth-2 child's text so far
		owned    bool   // text is in s.buf
	)
	// add appends one piece of raw character data to the current child's
	// text, or only checks it when it is elsewhere.
	add := func(raw []byte, cdata bool) error {
		plain, err := s.check(raw, cdata)
		if err != nil {
			return err
		}
		if depth != 2 {
			if plain {
				return nil
			}
			s.junk, err = s.expand(s.junk[:0], raw, cdata)
			return err
		}
		if plain && len(text) == 0 && !owned {
			text = raw
			return nil
		}
		if !owned {
			s.buf = append(s.buf[:0], text...)
			owned = true
		}
		s.buf, err = s.expand(s.buf, raw, cdata)
		text = s.buf
		return err
	}
	d := s.data
	for s.pos < len(d) {
		if d[s.pos] != '<' {
			end := bytes.IndexByte(d[s.pos:], '<')
			if end < 0 {
				end = len(d)
			} else {
				end += s.pos
			}
			raw := d[s.pos:end]
			if depth == 0 {
				if !xmlSpaceOnly(raw) {
					return s.syntax("text outside the root element")
				}
			} else if err := add(raw, false); err != nil {
				return err
			}
			s.pos = end
			continue
		}
		rest := d[s.pos:]
		switch {
		case bytes.HasPrefix(rest, []byte("<?")):
			if err := s.procInst(); err != nil {
				return err
			}
		case bytes.HasPrefix(rest, []byte("<!--")):
			if err := s.comment(); err != nil {
				return err
			}
		case bytes.HasPrefix(rest, []byte("<![CDATA[")):
			if depth == 0 {
				return s.syntax("text outside the root element")
			}
			start := s.pos + len("<![CDATA[")
			end := bytes.Index(d[start:], []byte("]]>"))
			if end < 0 {
				s.pos = len(d)
				return s.syntax("unexpected end of input in CDATA section")
			}
			if err := add(d[start:start+end], true); err != nil {
				return err
			}
			s.pos = start + end + len("]]>")
		case bytes.HasPrefix(rest, []byte("<!")):
			return s.syntax("directives such as DOCTYPE are not allowed")
		case bytes.HasPrefix(rest, []byte("</")):
			s.pos += 2
			name := s.name()
			if name == nil {
				return s.syntax("expected element name after </")
			}
			s.space()
			if s.pos >= len(d) || d[s.pos] != '>' {
				return s.syntax("expected > after end tag name")
			}
			s.pos++
			if depth == 0 || !bytes.Equal(stack[depth-1], name) {
				return s.syntax("mismatched end tag")
			}
			if depth == 2 {
				if err := fn(name, text); err != nil {
					return err
				}
			}
			depth--
		default:
			s.pos++
			name := s.name()
			if name == nil {
				return s.syntax("expected element name after <")
			}
			if depth == maxXMLDepth {
				return s.syntax("elements nested too deeply")
			}
			if depth == 0 {
				if rootSeen {
					return s.syntax("more than one root element")
				}
				rootSeen = true
			}
			empty, err := s.attributes()
			if err != nil {
				return err
			}
			stack[depth] = name
			depth++
			if depth == 2 {
				text, owned = nil, false
			}
			if empty {
				if depth == 2 {
					if err := fn(name, nil); err != nil {
						return err
					}
				}
				depth--
			}
		}
	}
	switch {
	case !rootSeen:
		return s.syntax("no root element")
	case depth != 0:
		return s.syntax("unexpected end of input")
	}
	return nil
}

// name reads an element or attribute name: an ASCII letter or '_', then
// letters, digits, '_', '-' and '.'. It returns nil if there is none.
func (s *xmlScanner) name() []byte {
	d, start := s.data, s.pos
	if start >= len(d) || !(isASCIILetter(d[start]) || d[start] == '_') {
		return nil
	}
	i := start + 1
	for i < len(d) {
		c := d[i]
		if !(isASCIILetter(c) || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			break
		}
		i++
	}
	if i < len(d) && (d[i] == ':' || d[i] >= utf8.RuneSelf) {
		return nil // a namespace prefix or a non-ASCII name
	}
	s.pos = i
	return d[start:i]
}

func isASCIILetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func isXMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func xmlSpaceOnly(b []byte) bool {
	for _, c := range b {
		if !isXMLSpace(c) {
			return false
		}
	}
	return true
}

// space skips XML white space.
func (s *xmlScanner) space() {
	for s.pos < len(s.data) && isXMLSpace(s.data[s.pos]) {
		s.pos++
	}
}

// attributes reads a start tag after its name, up to and including ">" or
// "/>", and reports whether the element is empty ("/>"). Attribute values
// are checked and dropped: no WeCom field is an attribute.
func (s *xmlScanner) attributes() (empty bool, err error) {
	d := s.data
	for {
		spaced := s.pos < len(d) && isXMLSpace(d[s.pos])
		s.space()
		if s.pos >= len(d) {
			return false, s.syntax("unexpected end of input in start tag")
		}
		switch d[s.pos] {
		case '>':
			s.pos++
			return false, nil
		case '/':
			if s.pos+1 >= len(d) || d[s.pos+1] != '>' {
				return false, s.syntax("expected /> in start tag")
			}
			s.pos += 2
			return true, nil
		}
		if !spaced || s.name() == nil {
			return false, s.syntax("expected attribute name in start tag")
		}
		s.space()
		if s.pos >= len(d) || d[s.pos] != '=' {
			return false, s.syntax("attribute without a value")
		}
		s.pos++
		s.space()
		if s.pos >= len(d) || d[s.pos] != '"' && d[s.pos] != '\'' {
			return false, s.syntax("unquoted attribute value")
		}
		quote := d[s.pos]
		end := bytes.IndexByte(d[s.pos+1:], quote)
		if end < 0 {
			s.pos = len(d)
			return false, s.syntax("unexpected end of input in attribute value")
		}
		raw := d[s.pos+1 : s.pos+1+end]
		if bytes.IndexByte(raw, '<') >= 0 {
			return false, s.syntax("unescaped < in attribute value")
		}
		plain, err := s.check(raw, false)
		if err != nil {
			return false, err
		}
		if !plain {
			if s.junk, err = s.expand(s.junk[:0], raw, false); err != nil {
				return false, err
			}
		}
		s.pos += end + 2
	}
}

// procInst skips a processing instruction such as <?xml version="1.0"?>.
// The XML declaration may only declare version 1.0 and UTF-8, read the
// way encoding/xml reads them.
func (s *xmlScanner) procInst() error {
	d := s.data
	s.pos += 2
	target := s.name()
	if target == nil {
		return s.syntax("expected target name after <?")
	}
	if s.pos < len(d) && !isXMLSpace(d[s.pos]) && d[s.pos] != '?' {
		return s.syntax("expected space after processing instruction target")
	}
	s.space()
	end := bytes.Index(d[s.pos:], []byte("?>"))
	if end < 0 {
		s.pos = len(d)
		return s.syntax("unexpected end of input in processing instruction")
	}
	content := string(d[s.pos : s.pos+end])
	s.pos += end + 2
	if string(target) == "xml" {
		if v := procInstParam("version", content); v != "" && v != "1.0" {
			return s.syntax("unsupported XML version")
		}
		if enc := procInstParam("encoding", content); enc != "" && !strings.EqualFold(enc, "utf-8") {
			return s.syntax("encoding other than UTF-8 declared")
		}
	}
	return nil
}

// procInstParam finds param="value" (or 'value') in the content of a
// processing instruction, matching encoding/xml's loose reading so that
// the two never disagree on what a declaration says.
func procInstParam(param, s string) string {
	param += "="
	i := 0
	var sep byte
	for i < len(s) {
		sub := s[i:]
		k := strings.Index(sub, param)
		if k < 0 || len(param)+k >= len(sub) {
			return ""
		}
		i += len(param) + k + 1
		if c := sub[len(param)+k]; c == '\'' || c == '"' {
			sep = c
			break
		}
	}
	if sep == 0 {
		return ""
	}
	j := strings.IndexByte(s[i:], sep)
	if j < 0 {
		return ""
	}
	return s[i : i+j]
}

// comment skips <!-- … -->; "--" may not occur inside.
func (s *xmlScanner) comment() error {
	d := s.data
	start := s.pos + len("<!--")
	i := bytes.Index(d[start:], []byte("--"))
	if i < 0 {
		s.pos = len(d)
		return s.syntax("unexpected end of input in comment")
	}
	i += start
	if i+2 >= len(d) || d[i+2] != '>' {
		s.pos = i
		return s.syntax(`"--" in a comment`)
	}
	s.pos = i + 3
	return nil
}

// check validates raw character data — every character one XML allows,
// valid UTF-8, no "]]>" outside CDATA — and reports whether it is plain:
// free of references and CR, so that it is its own text.
func (s *xmlScanner) check(raw []byte, cdata bool) (plain bool, err error) {
	plain = true
	for i := 0; i < len(raw); {
		c := raw[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '&' && !cdata, c == '\r':
				plain = false
			case c == '>' && !cdata && i >= 2 && raw[i-1] == ']' && raw[i-2] == ']':
				return false, s.syntax("unescaped ]]> outside a CDATA section")
			case c < 0x20 && c != '\t' && c != '\n':
				return false, s.syntax("character not allowed in XML")
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(raw[i:])
		if r == utf8.RuneError && n == 1 {
			return false, s.syntax("invalid UTF-8")
		}
		if !xmlChar(r) {
			return false, s.syntax("character not allowed in XML")
		}
		i += n
	}
	return plain, nil
}

// xmlChar reports whether XML 1.0 allows r in a document.
func xmlChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}

// expand appends raw, already checked, to dst with references expanded
// and CR and CR LF folded to LF (CDATA: only the folding).
func (s *xmlScanner) expand(dst, raw []byte, cdata bool) ([]byte, error) {
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '\r':
			dst = append(dst, '\n')
			if i+1 < len(raw) && raw[i+1] == '\n' {
				i++
			}
		case c == '&' && !cdata:
			end := bytes.IndexByte(raw[i:], ';')
			if end < 0 {
				return dst, s.syntax("reference without a semicolon")
			}
			r, ok := xmlReference(raw[i+1 : i+end])
			if !ok {
				return dst, s.syntax("unknown entity or invalid character reference")
			}
			dst = utf8.AppendRune(dst, r)
			i += end
		default:
			dst = append(dst, c)
		}
	}
	return dst, nil
}

// xmlReference resolves the inside of a reference (between & and ;): one
// of the five predefined entities, or a character reference &#N; / &#xH;
// to a character XML allows.
func xmlReference(ref []byte) (rune, bool) {
	switch string(ref) {
	case "lt":
		return '<', true
	case "gt":
		return '>', true
	case "amp":
		return '&', true
	case "apos":
		return '\'', true
	case "quot":
		return '"', true
	}
	if len(ref) < 2 || ref[0] != '#' {
		return 0, false
	}
	digits, base := ref[1:], 10
	if digits[0] == 'x' {
		digits, base = digits[1:], 16
	}
	if len(digits) == 0 || len(digits) > 8 {
		return 0, false
	}
	for _, c := range digits {
		if !('0' <= c && c <= '9' || base == 16 && ('a' <= c && c <= 'f' || 'A' <= c && c <= 'F')) {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(string(digits), base, 32)
	if err != nil || n > utf8.MaxRune || !xmlChar(rune(n)) || n >= 0xD800 && n <= 0xDFFF {
		return 0, false
	}
	return rune(n), true
}
