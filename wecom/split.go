package wecom

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Split cuts text into pieces of at most max bytes for message/send, whose
// content limit is counted in UTF-8 bytes (2048; WeCom silently truncates
// longer content). max <= 0 means MaxContentBytes; values below 4 are
// raised to 4 so that every character fits.
//
// Each cut is made at the best boundary available in the last three
// quarters of the window: a paragraph break, then a line break, then the end
// of a sentence (。！？；… and . ! ? ; before a space), then other
// whitespace. If none exists there, an earlier boundary is not used; the
// cut falls on the last character boundary that fits instead. A cut never
// splits a UTF-8 sequence (invalid bytes count as one-byte characters).
//
// Fenced code blocks (``` or ~~~) are kept whole when they fit: the cut
// moves to a boundary outside the block, even if that makes the piece
// short. A block longer than max is cut at a line inside it. No fence
// markers are added or repeated at such a cut, so the pieces stay exact
// substrings of the input.
//
// Whitespace at a cut is dropped: trailing whitespace of a piece and
// leading blank lines of the next one. The indentation of the line that
// starts a piece — the first piece too — is kept (unless it is a quarter of
// max or longer), so code stays aligned. Joining the pieces gives back text apart from that
// whitespace. Pieces are never empty; whitespace-only text gives none.
func Split(text string, max int) []string {
	if max <= 0 {
		max = MaxContentBytes
	}
	if max < utf8.UTFMax {
		max = utf8.UTFMax
	}
	s := splitter{text: text, max: max, fences: findFences(text)}
	var out []string
	start, first := s.skipLeading(0)
	for first < len(text) {
		rest := strings.TrimRightFunc(text[start:], unicode.IsSpace)
		if len(rest) <= max {
			out = append(out, rest)
			break
		}
		cut := s.cut(start, first)
		out = append(out, strings.TrimRightFunc(text[start:cut], unicode.IsSpace))
		start, first = s.skipLeading(cut)
	}
	return out
}

// Boundary classes, best first.
const (
	classParagraph = iota
	classLine
	classSentence
	classSpace
	numClasses
)

// span marks a fenced code block: cut positions p with start < p < end are
// inside it.
type span struct{ start, end int }

type splitter struct {
	text   string
	max    int
	fences []span
}

// skipLeading skips the whitespace at i. It returns where the next piece
// starts (at the indentation of its first line when that is kept) and the
// offset of its first non-space character.
func (s *splitter) skipLeading(i int) (start, first int) {
	lastNL := -1
	j := i
	for j < len(s.text) {
		r, size := utf8.DecodeRuneInString(s.text[j:])
		if !unicode.IsSpace(r) {
			break
		}
		if r == '\n' {
			lastNL = j
		}
		j += size
	}
	if lastNL >= 0 && j < len(s.text) && j-(lastNL+1) < s.max/4 {
		return lastNL + 1, j
	}
	if lastNL < 0 && j < len(s.text) && j-i < s.max/4 && (i == 0 || s.text[i-1] == '\n') {
		// The text starts here, or the cut fell right after a newline:
		// j-i is the indentation of the first line.
		return i, j
	}
	return j, j
}

// cut picks the end of the piece that starts at start (first non-space at
// first). The caller has checked that the rest is longer than max.
func (s *splitter) cut(start, first int) int {
	limit := start + s.max
	fillMin := start + s.max/4
	var best [numClasses][2]int // [class][0 outside fences, 1 inside] → largest p
	lastRune := 0
	fi := s.fenceAfter(first) // first fence that may contain p
	for p := first; p < limit; {
		r, size := utf8.DecodeRuneInString(s.text[p:])
		if p+size > limit {
			break
		}
		p += size
		lastRune = p
		for fi < len(s.fences) && s.fences[fi].end <= p {
			fi++
		}
		in := 0
		if fi < len(s.fences) && s.fences[fi].start < p {
			in = 1
		}
		if unicode.IsSpace(r) {
			// Same piece as the cut before this whitespace run, but it
			// would split indentation; let the run's start stand.
			continue
		}
		if c := s.classify(start, p, r); c < numClasses {
			best[c][in] = p
		}
	}
	if lastRune == 0 {
		// Unreachable with max >= 4, kept so the loop always advances.
		_, size := utf8.DecodeRuneInString(s.text[first:])
		return first + size
	}
	// 1. A good boundary outside code blocks.
	for c := range numClasses {
		if p := best[c][0]; p >= fillMin {
			return p
		}
	}
	// 2. The window ends inside a code block that fits in a piece of its
	// own: cut before the block.
	if f, ok := s.fenceAt(limit); ok && f.end-f.start <= s.max {
		for _, c := range []int{classParagraph, classLine} {
			if p := best[c][0]; p > first {
				return p
			}
		}
	}
	// 3. Inside a code block, lines first.
	for _, c := range []int{classLine, classParagraph, classSentence, classSpace} {
		if p := max(best[c][0], best[c][1]); p >= fillMin {
			return p
		}
	}
	// 4. The last character boundary.
	return lastRune
}

// classify returns the boundary class of a cut at p, just after rune prev,
// or numClasses for a plain character boundary.
func (s *splitter) classify(start, p int, prev rune) int {
	next := s.text[p:]
	if nl := newlineLen(next); nl > 0 {
		rest := strings.TrimLeft(next[nl:], " \t\r")
		if strings.HasPrefix(rest, "\n") {
			return classParagraph
		}
		return classLine
	}
	nr, _ := utf8.DecodeRuneInString(next)
	if isSentenceEnd(s.text[start:p], prev, unicode.IsSpace(nr)) {
		return classSentence
	}
	if unicode.IsSpace(nr) {
		return classSpace
	}
	return numClasses
}

func newlineLen(s string) int {
	switch {
	case strings.HasPrefix(s, "\n"):
		return 1
	case strings.HasPrefix(s, "\r\n"):
		return 2
	}
	return 0
}

// isSentenceEnd reports whether left ends a sentence: a terminator,
// optionally followed by closing quotes or brackets. ASCII terminators
// count only before whitespace, so "3.14" and "example.com" stay whole.
func isSentenceEnd(left string, last rune, spaceNext bool) bool {
	for range 3 {
		if !isCloser(last) {
			break
		}
		left = left[:len(left)-utf8.RuneLen(last)]
		if left == "" {
			return false
		}
		last, _ = utf8.DecodeLastRuneInString(left)
	}
	switch last {
	case '。', '！', '？', '；', '…', '｡':
		return true
	case '.', '!', '?', ';':
		return spaceNext
	}
	return false
}

func isCloser(r rune) bool {
	switch r {
	case '"', '\'', ')', ']', '”', '’', '）', '」', '』', '】', '》', '〉':
		return true
	}
	return false
}

// fenceAt returns the code block that a cut at p would fall inside.
func (s *splitter) fenceAt(p int) (span, bool) {
	i := s.fenceAfter(p)
	if i < len(s.fences) && s.fences[i].start < p {
		return s.fences[i], true
	}
	return span{}, false
}

// fenceAfter returns the index of the first fence that ends after p.
func (s *splitter) fenceAfter(p int) int {
	return sort.Search(len(s.fences), func(i int) bool { return s.fences[i].end > p })
}

// findFences locates fenced code blocks: a line of three or more backticks
// or tildes (after up to three spaces) opens a block, and a line of at
// least as many of the same character closes it. An unclosed block runs to
// the end of the text.
func findFences(text string) []span {
	var (
		out    []span
		open   = -1
		marker byte
		count  int
	)
	for lineStart := 0; lineStart < len(text); {
		lineEnd := len(text)
		if i := strings.IndexByte(text[lineStart:], '\n'); i >= 0 {
			lineEnd = lineStart + i
		}
		line := text[lineStart:lineEnd]
		for k := 0; k < 3 && strings.HasPrefix(line, " "); k++ {
			line = line[1:]
		}
		c, n := fenceRun(line)
		switch {
		case open < 0 && n >= 3:
			open, marker, count = lineStart, c, n
		case open >= 0 && c == marker && n >= count && strings.TrimSpace(line[n:]) == "":
			out = append(out, span{open, lineEnd})
			open = -1
		}
		lineStart = lineEnd + 1
	}
	if open >= 0 {
		out = append(out, span{open, len(text)})
	}
	return out
}

// fenceRun returns the fence character that line starts with and how many
// times it repeats.
func fenceRun(line string) (byte, int) {
	if line == "" || (line[0] != '`' && line[0] != '~') {
		return 0, 0
	}
	n := 0
	for n < len(line) && line[n] == line[0] {
		n++
	}
	return line[0], n
}
