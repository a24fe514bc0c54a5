package plaintext

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// proseMarkup is the Markdown punctuation kept by toProse. It excludes what
// legitimately drops or rewrites words: '[' and ']' (reference labels and
// link titles), '&' and ';' (entities), quotes (titles), and fence info
// strings (toProse shortens backtick and tilde runs so fences cannot open).
const proseMarkup = "*_~#>-+=.)(|`<\\:/!"

// toProse keeps the letters, digits, white space and proseMarkup of s. The
// result is prose sprinkled with markup in which every word must survive.
func toProse(s string) string {
	var b strings.Builder
	run, runLen := rune(0), 0
	for _, r := range s {
		keep := unicode.IsLetter(r) || unicode.IsDigit(r) ||
			r == ' ' || r == '\n' || r == '\t' || strings.ContainsRune(proseMarkup, r)
		if !keep {
			continue
		}
		if r == run {
			runLen++
		} else {
			run, runLen = r, 1
		}
		if (r == '`' || r == '~') && runLen > 2 {
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// words returns the maximal runs of letters and digits in s, except digit
// runs followed by '.' or ')': those may be ordered-list markers, which are
// renumbered ("1. 1. 1." renders as 1. 2. 3.).
func words(s string) []string {
	var ws []string
	isWord := func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !isWord(r) {
			i += n
			continue
		}
		j := i + n
		for j < len(s) {
			r, n := utf8.DecodeRuneInString(s[j:])
			if !isWord(r) {
				break
			}
			j += n
		}
		w := s[i:j]
		marker := j < len(s) && (s[j] == '.' || s[j] == ')') && strings.Trim(w, "0123456789") == ""
		if !marker {
			ws = append(ws, w)
		}
		i = j
	}
	return ws
}

// missingWord returns the first word of in that does not appear in out in
// order, or "" if all do. Words may be glued together in out (emphasis
// inside a word removes its markers), so it searches for substrings.
func missingWord(in, out string) string {
	at := 0
	for _, w := range words(in) {
		i := strings.Index(out[at:], w)
		if i < 0 {
			return w
		}
		at += i + len(w)
	}
	return ""
}

func FuzzFromMarkdown(f *testing.F) {
	for _, s := range []string{
		"",
		benchSection,
		"# 标题\n\n**注意：**正文 *斜体* ~~删除~~ 3~5天\n\n- a\n  - b\n    1. c\n- [ ] d\n\n> 引用\n>> 嵌套",
		"| 名称 | 数量 | 说明 |\n|:--|--:|:-:|\n| 苹果 | 10 | 红色 | 多余 |\n| Banana |",
		"```go\n# not a heading\n* not a list\n",
		"    indented\n\tcode\n\n***\n\n<script>alert(1)</script>\n\n<div>\n*x*\n</div>",
		"[文档](https://e.com \"t\") ![图](u.png) <https://go.dev> [r][x]\n\n[x]: /u\n[y]: /unused",
		"&amp; &#x4E2D; &#0; \\* \\\\ a  \nb\\\nc\nd",
		"Setext\n===\n\n- \n-\n1.\n  2)\n* * *\n_ _ _",
		"**a __b__ c** `` a`b `` <font color=\"info\">绿</font>",
		"*a **b *c* d** e*" + strings.Repeat("[", 50) + strings.Repeat(">", 50),
		"a\r\nb\rc\x00d\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, md string) {
		checkShape(t, FromMarkdown(md))
		checkShape(t, ToWeComMarkdown(md))

		prose := toProse(md)
		out := FromMarkdown(prose)
		if w := missingWord(prose, out); w != "" {
			t.Errorf("word %q lost\ninput: %q\noutput: %q", w, prose, out)
		}
		out = ToWeComMarkdown(prose)
		if w := missingWord(prose, out); w != "" {
			t.Errorf("ToWeComMarkdown: word %q lost\ninput: %q\noutput: %q", w, prose, out)
		}
	})
}

func TestMissingWord(t *testing.T) {
	tests := []struct{ in, out, want string }{
		{"a b", "a b", ""},
		{"a *b* c", "a b c", ""},
		{"foo*bar*", "foobar", ""},
		{"a b", "b a", "b"},
		{"中文 words", "中文", "words"},
		{"1. a\n1. b", "1. a\n2. b", ""},
		{"版本 1.22", "版本 22", ""},
	}
	for _, tt := range tests {
		if got := missingWord(tt.in, tt.out); got != tt.want {
			t.Errorf("missingWord(%q, %q) = %q, want %q", tt.in, tt.out, got, tt.want)
		}
	}
}
