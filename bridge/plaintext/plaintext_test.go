package plaintext

import (
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// checkShape fails if out breaks the layout guarantees that hold for every
// input: valid UTF-8, no trailing whitespace, no blank first or last line.
func checkShape(t *testing.T, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("output is not valid UTF-8: %q", out)
	}
	if strings.HasPrefix(out, "\n") || strings.HasSuffix(out, "\n") {
		t.Errorf("output starts or ends with a newline: %q", out)
	}
	for i, line := range strings.Split(out, "\n") {
		if strings.TrimRight(line, " \t") != line {
			t.Errorf("line %d has trailing whitespace: %q", i+1, line)
		}
	}
}

func TestFromMarkdown(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		// Headings.
		{"heading zh", "# 安装指南\n正文", "【安装指南】\n\n正文"},
		{"heading levels en", "## Setup\n### Step 1\ntext", "【Setup】\n\n【Step 1】\n\ntext"},
		{"heading already bracketed", "## 【重要】注意事项", "【重要】注意事项"},
		{"setext heading", "Title\n=====\n\nbody", "【Title】\n\nbody"},
		{"heading markup and closing hashes", "# **Bold** `code` title ##", "【Bold code title】"},
		{"empty heading dropped", "#\n\ntext", "text"},

		// Emphasis.
		{"emphasis markers removed", "*斜体* **粗体** ***both*** _under_ __dbl__", "斜体 粗体 both under dbl"},
		{"cjk bold before punctuation", "**注意：**这是一个测试。", "注意：这是一个测试。"},
		{"cjk bold around quotes", "这是**“引用”**文字", "这是“引用”文字"},
		{"intraword underscores kept", "use snake_case_name here", "use snake_case_name here"},
		{"strikethrough", "~~旧价格~~ 新价格 ~~old~~ new", "旧价格 新价格 old new"},
		{"single tilde is a range", "需要3~5天，9:00~18:00 营业", "需要3~5天，9:00~18:00 营业"},

		// Links and images.
		{"link zh", "详见[文档](https://example.com/doc)。", "详见文档 (https://example.com/doc)。"},
		{"link en with markup", "See [the **Go** docs](https://go.dev/doc).", "See the Go docs (https://go.dev/doc)."},
		{"link text equals url", "[https://go.dev](https://go.dev)", "https://go.dev"},
		{"link empty text", "[](https://e.com)", "https://e.com"},
		{"link entity in url, title dropped", `[a](http://x.com/?a=1&amp;b=2 "title")`, "a (http://x.com/?a=1&b=2)"},
		{"link angle destination", "[a](<http://x.com/a b>)", "a (http://x.com/a b)"},
		{"autolink url", "<https://go.dev/doc>", "https://go.dev/doc"},
		{"autolink email", "<a@b.com>", "a@b.com"},
		{"mailto link with same text", "[a@b.com](mailto:a@b.com)", "a@b.com"},
		{"bare url kept", "访问 https://example.com/a_b_c 即可", "访问 https://example.com/a_b_c 即可"},
		{"reference link", "[文档][doc]\n\n[doc]: https://e.com", "文档 (https://e.com)"},
		{"unused definition kept", "text\n\n[x]: https://e.com \"T\"", "text\n\n[x]: https://e.com T"},
		{"image", "![架构图](https://e.com/a.png)", "[图片: 架构图] (https://e.com/a.png)"},
		{"image without alt", "![](u.png)", "[图片] (u.png)"},
		{"image inside link", "[![badge](https://img/x.svg)](https://ci)", "[图片: badge] (https://img/x.svg) (https://ci)"},
		{"image inside image alt is text", "![a ![b](u1) [c](u3)](u2)", "[图片: a b c] (u2)"},

		// Lists.
		{"bullets", "- 苹果\n- 香蕉\n- cherry", "• 苹果\n• 香蕉\n• cherry"},
		{"nested bullets", "- 一级\n  - 二级\n    - 三级\n- back", "• 一级\n  • 二级\n    • 三级\n• back"},
		{"ordered keeps start", "3. 第三\n4. 第四", "3. 第三\n4. 第四"},
		{"ordered paren", "1) a\n2) b", "1) a\n2) b"},
		{"ordered with nested bullets", "1. 安装\n   - npm\n   - yarn\n2. 配置", "1. 安装\n  • npm\n  • yarn\n2. 配置"},
		{"task list", "- [ ] 待办\n- [x] 完成\n  - [X] nested", "☐ 待办\n☑ 完成\n  ☑ nested"},
		{"ordered task", "1. [x] done\n2. [ ] todo", "1. ☑ done\n2. ☐ todo"},
		{"loose list", "- a\n\n- b", "• a\n\n• b"},
		{"item with two paragraphs", "1. first\n\n   second para", "1. first\n\n  second para"},
		{"item with code", "- run:\n\n  ```\n  make\n  ```", "• run:\n\n      make"},
		{"empty item", "-\n- b", "•\n• b"},
		{"list then paragraph", "- a\n- b\n\nafter", "• a\n• b\n\nafter"},

		// Code.
		{"fenced code verbatim", "```md\n# 不是标题\n* 不是列表\n**不加粗** &amp; \\*\n<b>x</b>\n```",
			"    # 不是标题\n    * 不是列表\n    **不加粗** &amp; \\*\n    <b>x</b>"},
		{"indented code", "para\n\n    func main() {\n    \tx := 1\n    }", "para\n\n    func main() {\n    \tx := 1\n    }"},
		{"code inner blank lines kept", "```\na\n\nb\n```", "    a\n\n    b"},
		{"code outer blank lines trimmed", "```\n\n\na\n\n\n```", "    a"},
		{"tilde fence", "~~~\n~~not struck~~\n~~~", "    ~~not struck~~"},
		{"inline code", "运行 `go test ./...` 和 `` a`b ``", "运行 go test ./... 和 a`b"},
		{"inline code verbatim", "`**x** &amp; <b> \\*`", "**x** &amp; <b> \\*"},

		// Quotes.
		{"blockquote", "> 引用一\n> 第二行\n>\n> 第二段", "> 引用一\n> 第二行\n>\n> 第二段"},
		{"nested quote", "> a\n>\n> > b", "> a\n>\n> > b"},
		{"quote with list", "> - x\n> - y", "> • x\n> • y"},

		// Tables.
		{"table mixed cjk alignment",
			"| 名称 | 数量 | 说明 |\n|:-----|-----:|:----:|\n| 苹果 | 10 | 红色 |\n| Banana | 200 | yellow 🍌 |",
			"名称   | 数量 |   说明\n" +
				"-------------------------\n" +
				"苹果   |   10 |   红色\n" +
				"Banana |  200 | yellow 🍌"},
		{"table inline markup",
			"| **名称** | [链接](http://a) |\n|---|---|\n| `code` | ~~x~~ |",
			"名称 | 链接 (http://a)\n----------------------\ncode | x"},
		{"table extra cells kept", "| a | b |\n|---|---|\n| 1 | 2 | 3 |", "a | b\n---------\n1 | 2 | 3"},
		{"table missing cells", "| a | b |\n|---|---|\n| 1 |", "a | b\n-----\n1"},
		{"table escaped pipe", "| 表达式 | 含义 |\n|---|---|\n| `a \\| b` | 或 |", "表达式 | 含义\n-------------\na | b  | 或"},
		{"table in list", "- 表：\n\n  | k | v |\n  |---|---|\n  | 键 | 值 |", "• 表：\n  k  | v\n  -------\n  键 | 值"},

		// Breaks, HTML, entities.
		{"thematic break", "上\n\n---\n\n下\n\n***\n\n末", "上\n\n——————\n\n下\n\n——————\n\n末"},
		{"inline html literal", "点击<b>这里</b>", "点击<b>这里</b>"},
		{"script block literal", "<script>alert('xss')</script>\n\n正文", "<script>alert('xss')</script>\n\n正文"},
		{"img onerror literal", `<img src=x onerror="alert(1)">`, `<img src=x onerror="alert(1)">`},
		{"html comment literal", "a <!-- hidden --> b", "a <!-- hidden --> b"},
		{"entities decoded", "Tom &amp; Jerry &lt;3 &#x4E2D;&#25991; &copy; &bogus; \\*lit\\*", "Tom & Jerry <3 中文 © &bogus; *lit*"},
		{"escaped entity stays", "\\&amp;", "&amp;"},

		// Layout.
		{"hard and soft breaks", "第一行  \n第二行\\\n第三行\n第四行", "第一行\n第二行\n第三行\n第四行"},
		{"paragraph spacing", "\n\n\n段落一\n\n\n\n段落二\n\n\n", "段落一\n\n段落二"},
		{"trailing whitespace", "a   \n\n  b  ", "a\n\nb"},
		{"crlf", "a\r\nb\r\n\r\nc", "a\nb\n\nc"},
		{"nul replaced", "a\x00b", "a\uFFFDb"},
		{"invalid utf8 replaced", "a\xffb", "a\uFFFDb"},
		{"empty", "", ""},
		{"only whitespace", " \n\t\n ", ""},

		// Partial answers, as streamed.
		{"unclosed fence", "示例：\n\n```python\ndef f():\n    return 1", "示例：\n\n    def f():\n        return 1"},
		{"unclosed empty fence", "text\n\n```", "text"},
		{"table header only", "| 名称 | 值 |\n|---|---|", "名称 | 值\n---------"},
		{"table cut mid row", "| a | b |\n|---|---|\n| 1 | 2 |\n| 3", "a | b\n-----\n1 | 2\n3"},
		{"table without delimiter yet", "| a | b |", "| a | b |"},
		{"unclosed bold", "这是**未闭合", "这是**未闭合"},
		{"unclosed link", "见[文档](https://exa", "见[文档](https://exa"},
		{"list cut after marker", "1. 第一步\n2.", "1. 第一步\n2."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FromMarkdown(tt.in)
			if got != tt.want {
				t.Errorf("FromMarkdown(%q)\ngot:\n%s\nwant:\n%s\n(got %q)", tt.in, got, tt.want, got)
			}
			checkShape(t, got)
		})
	}
}

func TestToWeComMarkdown(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"headings kept", "## 标题\n\n#### x **y**", "## 标题\n\n#### x y"},
		{"bold", "**粗体** and __bold__", "**粗体** and **bold**"},
		{"cjk bold", "**注意：**这是", "**注意：**这是"},
		{"nested bold flattened", "**a __b__ c**", "**a b c**"},
		{"bold across lines", "**第一行\n第二行**", "**第一行**\n**第二行**"},
		{"italic and strike become text", "*斜* ~~删~~", "斜 删"},
		{"link", "[文档](https://e.com/a?b=1)", "[文档](https://e.com/a?b=1)"},
		{"link with brackets in text", "[a [b]](https://e.com)", "a [b] (https://e.com)"},
		{"link with parens in url", "[wiki](<https://e.org/Go_(lang)>)", "wiki (https://e.org/Go_(lang))"},
		{"link keeps bold when degraded", "[**a** b](<https://e.com/x y>)", "**a** b (https://e.com/x y)"},
		{"autolink clickable", "<https://go.dev>", "[https://go.dev](https://go.dev)"},
		{"image as link", "![图](https://e.com/a.png)", "[图片: 图](https://e.com/a.png)"},
		{"inline code", "运行 `go test`", "运行 `go test`"},
		{"inline code with backtick", "`` a`b ``", "a`b"},
		{"quote", "> a\n> b", "> a\n> b"},
		{"nested quote merged", "> a\n>\n> > b", "> a\n\n> b"},
		{"code block per line", "```\n# c\nx `y`\n\nz\n```", "`# c`\n    x `y`\n\n`z`"},
		{"list", "- **a**\n- b\n  1. c", "• **a**\n• b\n  1. c"},
		{"table bold header", "| 名称 | 值 |\n|---|--:|\n| 苹果 | 10 |", "**名称 | 值**\n苹果 | 10"},
		{"font passthrough", `<font color="warning">注意</font>：已完成`, `<font color="warning">注意</font>：已完成`},
		{"thematic break", "a\n\n---\n\nb", "a\n\n——————\n\nb"},
		{"entities", "a &amp; b", "a & b"},
		{"unclosed fence", "```\nx", "`x`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ToWeComMarkdown(tt.in)
			if got != tt.want {
				t.Errorf("ToWeComMarkdown(%q)\ngot:\n%s\nwant:\n%s\n(got %q)", tt.in, got, tt.want, got)
			}
			checkShape(t, got)
		})
	}
}

// TestTableColumnsLineUp checks the table layout on display columns rather
// than bytes: every " | " separator sits at the same display column in the
// header and all rows, whatever the mix of CJK, emoji and ASCII.
func TestTableColumnsLineUp(t *testing.T) {
	in := "| 城市 | Population | 备注 | x |\n|---|---:|:-:|---|\n" +
		"| 北京市 | 21,893,095 | 首都 🏛️ | a |\n" +
		"| NYC | 8,804,190 | Big Apple 🍎 | bb |\n" +
		"| 東京 | 14,047,594 | ｶﾀｶﾅ | 中 |\n"
	out := FromMarkdown(in)
	lines := strings.Split(out, "\n")
	if len(lines) != 5 {
		t.Fatalf("want 5 lines, got %d:\n%s", len(lines), out)
	}
	var want []int
	for i, line := range lines {
		if i == 1 {
			if strings.Trim(line, "-") != "" {
				t.Errorf("line 2 should be dashes, got %q", line)
			}
			continue
		}
		var cols []int
		rest := line
		at := 0
		for {
			j := strings.Index(rest, cellSep)
			if j < 0 {
				break
			}
			at += displayWidth(rest[:j])
			cols = append(cols, at)
			at += len(cellSep)
			rest = rest[j+len(cellSep):]
		}
		if want == nil {
			want = cols
			if len(want) != 3 {
				t.Fatalf("header has %d separators, want 3: %q", len(want), line)
			}
			continue
		}
		if !equalInts(cols, want) {
			t.Errorf("line %d separators at display columns %v, header at %v\n%s", i+1, cols, want, out)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestConcurrentUse runs both converters from many goroutines; with -race
// it checks that the shared parser keeps no state between calls.
func TestConcurrentUse(t *testing.T) {
	in := benchAnswer()
	want := FromMarkdown(in)
	wantWeCom := ToWeComMarkdown(in)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				if got := FromMarkdown(in); got != want {
					t.Error("FromMarkdown differs between calls")
				}
				if got := ToWeComMarkdown(in); got != wantWeCom {
					t.Error("ToWeComMarkdown differs between calls")
				}
			}
		})
	}
	wg.Wait()
}

// benchSection is a typical slice of a Chinese LLM answer.
const benchSection = "## 第一步：安装\n\n" +
	"**注意：**请先确认 `go version` 输出 ≥ 1.22，然后运行下面的命令。Please read the [guide](https://go.dev/doc/install) first.\n\n" +
	"```bash\ngo install example.com/tool@latest\n# 检查\ntool -v\n```\n\n" +
	"| 参数 | 说明 | Default |\n|---|---|--:|\n| `-v` | 输出版本 | false |\n| `-n` | 并发数 🚀 | 4 |\n\n" +
	"1. 打开终端\n2. 执行 *上述* 命令\n   - 若失败，查看 ~~日志~~ 输出 &amp; 重试\n\n" +
	"> 提示：3~5 分钟即可完成。\n\n"

// benchAnswer returns about 10 KB of Markdown.
func benchAnswer() string {
	return strings.Repeat(benchSection, 10*1024/len(benchSection)+1)
}

func BenchmarkFromMarkdown(b *testing.B) {
	md := benchAnswer()
	b.SetBytes(int64(len(md)))
	b.ReportAllocs()
	for b.Loop() {
		_ = FromMarkdown(md)
	}
}

func BenchmarkToWeComMarkdown(b *testing.B) {
	md := benchAnswer()
	b.SetBytes(int64(len(md)))
	b.ReportAllocs()
	for b.Loop() {
		_ = ToWeComMarkdown(md)
	}
}
