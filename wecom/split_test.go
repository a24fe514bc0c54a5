package wecom_test

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// checkSplit verifies the Split contract for one input and returns the
// pieces: every piece non-empty, within max bytes, valid UTF-8 when the
// input is, free of surrounding whitespace except kept indentation, and the
// pieces joined with whitespace gaps give back the input.
func checkSplit(t *testing.T, text string, max int) []string {
	t.Helper()
	pieces := wecom.Split(text, max)
	limit := max
	if limit <= 0 {
		limit = wecom.MaxContentBytes
	}
	limit = maxInt(limit, 4)
	pos := 0
	for i, p := range pieces {
		if p == "" {
			t.Fatalf("piece %d is empty", i)
		}
		if len(p) > limit {
			t.Fatalf("piece %d is %d bytes, max %d", i, len(p), limit)
		}
		if utf8.ValidString(text) && !utf8.ValidString(p) {
			t.Fatalf("piece %d is not valid UTF-8: %q", i, p)
		}
		if r, _ := utf8.DecodeLastRuneInString(p); unicode.IsSpace(r) {
			t.Fatalf("piece %d ends with whitespace: %q", i, p)
		}
		if strings.TrimSpace(p) == "" {
			t.Fatalf("piece %d is only whitespace", i)
		}
		// Skip the whitespace gap in the input, then expect the piece. The
		// piece may keep some of the gap as indentation, so take the
		// furthest rune boundary in the gap where it matches (the nearest
		// one can be a false match: a lone invalid byte such as "\xc2" is
		// a prefix of a whitespace rune like U+00A0).
		gap := -1
		for at := pos; ; {
			if strings.HasPrefix(text[at:], p) {
				gap = at
			}
			r, size := utf8.DecodeRuneInString(text[at:])
			if size == 0 || !unicode.IsSpace(r) {
				break
			}
			at += size
		}
		found := gap >= 0
		if !found {
			t.Fatalf("piece %d %q does not follow at offset %d (after whitespace) in %q", i, p, pos, text)
		}
		pos = gap + len(p)
	}
	if strings.TrimSpace(text[pos:]) != "" {
		t.Fatalf("text after the last piece is lost: %q", text[pos:])
	}
	return pieces
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

func TestSplitBoundaries(t *testing.T) {
	tests := []struct {
		name string
		text string
		max  int
		want []string
	}{
		{"short", "hello", 10, []string{"hello"}},
		{"empty", "", 10, nil},
		{"whitespace only", " \n\t ", 10, nil},
		{"trims outer whitespace", "\n\n  hi  \n", 10, []string{"hi"}},
		{"exact fit", "abcd", 4, []string{"abcd"}},
		{"paragraph first", "aaaa bbbb.\ncccc\n\ndddd", 19, []string{"aaaa bbbb.\ncccc", "dddd"}},
		{"line before sentence", "aaaa. bbbb\ncccc dddd", 16, []string{"aaaa. bbbb", "cccc dddd"}},
		{"sentence before space", "aaa bbb. ccc ddd eee", 15, []string{"aaa bbb.", "ccc ddd eee"}},
		{"cjk sentence", "第一句话。第二句话！第三句", 21, []string{"第一句话。", "第二句话！", "第三句"}},
		{"cjk sentence fits", "第一句话。第二句话！第三句", 30, []string{"第一句话。第二句话！", "第三句"}},
		{"cjk closing quote", "他说：“好。”然后走了很远很远", 30, []string{"他说：“好。”", "然后走了很远很远"}},
		{"ascii dot inside number is not a sentence end", "pi is 3.14159 ok", 10, []string{"pi is", "3.14159 ok"}},
		{"space", "aaaa bbbb cccc", 10, []string{"aaaa bbbb", "cccc"}},
		{"rune fallback never cuts a character", "一二三四五六七", 8, []string{"一二", "三四", "五六", "七"}},
		{"emoji", "😀😀😀", 5, []string{"😀", "😀", "😀"}},
		{"ascii run", "abcdefghij", 4, []string{"abcd", "efgh", "ij"}},
		{"early boundary ignored for a long run", "ab cdefghijklmnop", 12, []string{"ab cdefghijk", "lmnop"}},
		{"keeps indentation", "first line\n    indented line here", 20, []string{"first line", "    indented line", "here"}},
		{"drops long indentation", "first line\n        indented", 16, []string{"first line", "indented"}},
		{"max below 4 is raised", "一二", 1, []string{"一", "二"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkSplit(t, tt.text, tt.max)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
				t.Errorf("Split(%q, %d) = %q, want %q", tt.text, tt.max, got, tt.want)
			}
		})
	}
}

func TestSplitDefaultSize(t *testing.T) {
	text := strings.Repeat("这是一个测试句子。", 200) // 27 bytes each, 5400 bytes
	pieces := checkSplit(t, text, 0)
	if len(pieces) != 3 {
		t.Fatalf("got %d pieces, want 3", len(pieces))
	}
	for _, p := range pieces {
		if !strings.HasSuffix(p, "。") {
			t.Errorf("piece does not end at a sentence: ...%q", p[len(p)-9:])
		}
	}
}

// Text that starts with an indented line (an indented code block) keeps
// that indentation, as a piece starting after a cut does.
func TestSplitKeepsLeadingIndentation(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"    code line", "    code line"},
		{"\n\n    code\n    more", "    code\n    more"},
		{"  \n    x", "    x"},
		{"   ", ""},
	} {
		got := checkSplit(t, c.text, 2048)
		if c.want == "" {
			if len(got) != 0 {
				t.Errorf("Split(%q) = %q, want none", c.text, got)
			}
			continue
		}
		if len(got) != 1 || got[0] != c.want {
			t.Errorf("Split(%q) = %q, want [%q]", c.text, got, c.want)
		}
	}
}

func TestSplitCodeFence(t *testing.T) {
	code := "```go\nfunc main() {\n\tprintln(1)\n}\n```"
	t.Run("block kept whole by cutting before it", func(t *testing.T) {
		text := "intro line\n" + code + "\nafter"
		got := checkSplit(t, text, len(code)+5)
		if len(got) < 2 || got[1] != code {
			t.Errorf("pieces = %q, want the code block alone in piece 1", got)
		}
	})
	t.Run("no cut at a space or paragraph inside a block", func(t *testing.T) {
		block := "```\nline one\n\nline two with words\n```"
		text := "Intro words here.\n" + block + "\ntail"
		for _, p := range checkSplit(t, text, len(block)+2) {
			if strings.Contains(p, "```") && strings.Count(p, "```") != 2 {
				t.Errorf("block was cut: %q", p)
			}
		}
	})
	t.Run("block longer than max is not pushed to a new piece", func(t *testing.T) {
		intro := "Short intro here:" // under a quarter of max
		block := "```\n" + strings.Repeat("code line number n\n", 30) + "```"
		pieces := checkSplit(t, intro+"\n"+block, 200)
		if !strings.Contains(pieces[0], "```") {
			t.Errorf("piece 0 = %q, want the intro and the start of the block", pieces[0])
		}
	})
	t.Run("block longer than max is cut at lines", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("```\n")
		for i := range 50 {
			b.WriteString("    line ")
			b.WriteString(strings.Repeat("x", i%7))
			b.WriteString(" of code, stays.\n")
		}
		b.WriteString("```\n")
		pieces := checkSplit(t, b.String(), 200)
		for i, p := range pieces[1:] {
			if !strings.HasPrefix(p, "    line") && !strings.HasPrefix(p, "```") {
				t.Errorf("piece %d does not start at a code line with its indentation: %q", i+1, p[:min(len(p), 20)])
			}
		}
	})
}

// randomText mixes CJK, emoji, ASCII words, punctuation, whitespace and
// code fences.
func randomText(r *rand.Rand, n int) string {
	parts := []string{
		"你好", "世界", "中文句子", "。", "！", "？", "；", "…", "，", "“引用。”",
		"😀", "👩‍💻", "🇨🇳", "é", "ß",
		"hello", "world", "the", "quick", "fox", ".", "!", "?", ";", "3.14", "e.g.",
		" ", " ", " ", "\t", "\n", "\n\n", "\r\n", "  \n", "\u3000",
		"\n```go\n", "\n```\n", "    indented", "~~~",
	}
	var b strings.Builder
	for b.Len() < n {
		if r.IntN(20) == 0 {
			b.WriteString(strings.Repeat("长", r.IntN(200)))
			continue
		}
		b.WriteString(parts[r.IntN(len(parts))])
	}
	return b.String()
}

func TestSplitProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		text := randomText(r, r.IntN(3000))
		max := 4 + r.IntN(300)
		if i%10 == 0 {
			max = 2048
		}
		checkSplit(t, text, max)
	}
}

func FuzzSplit(f *testing.F) {
	f.Add("hello world. 你好世界。\n\n```\ncode\n```\n", 16)
	f.Add(strings.Repeat("😀", 100), 5)
	f.Add("a\n    b\n    c", 4)
	f.Add("\xff\xfe\xfd invalid", 4)
	f.Fuzz(func(t *testing.T, text string, max int) {
		if max > 5000 || max < -1 {
			max = max % 5000
		}
		checkSplit(t, text, max)
	})
}

func BenchmarkSplit(b *testing.B) {
	text := randomText(rand.New(rand.NewPCG(3, 4)), 20000)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		wecom.Split(text, 2048)
	}
}
