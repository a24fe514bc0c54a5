package plaintext

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/yuin/goldmark/ast"
	extast "github.com/yuin/goldmark/extension/ast"
	"github.com/yuin/goldmark/text"
	"github.com/yuin/goldmark/util"
)

// mode selects the output dialect.
type mode uint8

const (
	// modePlain is plain text for WeCom/WeChat text messages.
	modePlain mode = iota
	// modeWeCom is the Markdown subset of WeCom app markdown messages.
	modeWeCom
)

// Fixed pieces of output.
const (
	bullet        = "• "
	taskOpen      = "☐ "
	taskDone      = "☑ "
	quotePrefix   = "> "
	codeIndent    = "    "
	listIndent    = "  "
	thematicBreak = "——————"
	cellSep       = " | "
	imageLabel    = "图片"
)

// prefix is what a container (list item, block quote) puts in front of
// each line it contains: first on its first line, rest on the others.
type prefix struct {
	first, rest string
	used        bool // first has been written
}

// renderer walks a goldmark AST and writes text. All output goes through
// beginLine/endLine so that container prefixes, block separators and
// trailing-whitespace trimming are handled in one place.
type renderer struct {
	src  []byte
	mode mode

	out      []byte
	prefixes []prefix
	lineOpen bool            // a line has been started and not yet ended
	blank    bool            // a blank separator line is pending
	blankAt  int             // number of prefixes the pending blank line carries
	inBold   bool            // inside WeCom bold: do not nest **
	inAlt    bool            // inside an image description: links and images are text
	quoted   bool            // inside a WeCom quote: do not nest >
	usedRefs map[string]bool // normalised labels of used definitions
	hasDefs  bool            // the document has reference definitions
}

// render parses md and renders it in mode m.
func render(md string, m mode) string {
	md = sanitize(md)
	if strings.TrimSpace(md) == "" {
		return ""
	}
	src := []byte(md)
	doc := parse(src)
	r := renderer{src: src, mode: m, out: make([]byte, 0, len(src)+len(src)/2)}
	r.findReferences(doc)
	r.blocks(doc, false)
	r.endLine()
	return string(trimBlankEdges(r.out))
}

// sanitize makes md valid UTF-8, replaces NUL with U+FFFD as CommonMark
// requires, and normalises line endings to "\n".
func sanitize(md string) string {
	md = strings.ToValidUTF8(md, "\uFFFD")
	if strings.IndexByte(md, 0) >= 0 {
		md = strings.ReplaceAll(md, "\x00", "\uFFFD")
	}
	if strings.IndexByte(md, '\r') >= 0 {
		md = strings.ReplaceAll(md, "\r\n", "\n")
		md = strings.ReplaceAll(md, "\r", "\n")
	}
	return md
}

// trimBlankEdges drops leading blank lines and all trailing whitespace.
func trimBlankEdges(b []byte) []byte {
	for len(b) > 0 && b[0] == '\n' {
		b = b[1:]
	}
	return bytes.TrimRight(b, " \t\n")
}

// findReferences records which link reference definitions are used, so
// that unused ones can be printed instead of silently dropped.
func (r *renderer) findReferences(doc ast.Node) {
	if !bytes.Contains(r.src, []byte("]:")) {
		return
	}
	_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch n := n.(type) {
		case *ast.LinkReferenceDefinition:
			r.hasDefs = true
		case *ast.Link:
			r.useReference(n.Reference)
		case *ast.Image:
			r.useReference(n.Reference)
		}
		return ast.WalkContinue, nil
	})
}

// useReference marks the definition behind a reference link as used.
func (r *renderer) useReference(ref *ast.ReferenceLink) {
	if ref == nil {
		return
	}
	if r.usedRefs == nil {
		r.usedRefs = map[string]bool{}
	}
	r.usedRefs[util.ToLinkReference(ref.Value)] = true
}

// ---- line machinery ----

// push enters a container whose lines get the given prefixes.
func (r *renderer) push(first, rest string) {
	r.prefixes = append(r.prefixes, prefix{first: first, rest: rest})
}

// pop leaves the innermost container.
func (r *renderer) pop() {
	r.prefixes = r.prefixes[:len(r.prefixes)-1]
	if r.blankAt > len(r.prefixes) {
		r.blankAt = len(r.prefixes)
	}
}

// requestBlank asks for a blank line before the next output, carrying the
// prefixes of the current containers. It is emitted lazily, so a block that
// renders nothing leaves no gap.
func (r *renderer) requestBlank() {
	r.blank = true
	r.blankAt = len(r.prefixes)
}

// beginLine starts a line if none is open: it flushes a pending blank line
// and writes the container prefixes.
func (r *renderer) beginLine() {
	if r.lineOpen {
		return
	}
	if r.blank {
		r.blank = false
		if r.mode == modePlain {
			for i := range r.prefixes[:r.blankAt] {
				r.out = append(r.out, r.prefixes[i].rest...)
			}
		}
		r.trimLine()
		r.out = append(r.out, '\n')
	}
	for i := range r.prefixes {
		p := &r.prefixes[i]
		if p.used {
			r.out = append(r.out, p.rest...)
		} else {
			r.out = append(r.out, p.first...)
			p.used = true
		}
	}
	r.lineOpen = true
}

// endLine ends the open line, if any, trimming trailing whitespace.
func (r *renderer) endLine() {
	if !r.lineOpen {
		return
	}
	r.trimLine()
	r.out = append(r.out, '\n')
	r.lineOpen = false
}

// emptyLine writes a line holding only the container prefixes.
func (r *renderer) emptyLine() {
	r.beginLine()
	r.endLine()
}

// trimLine removes trailing spaces and tabs from the current line.
func (r *renderer) trimLine() {
	i := len(r.out)
	for i > 0 && (r.out[i-1] == ' ' || r.out[i-1] == '\t') {
		i--
	}
	r.out = r.out[:i]
}

// write writes inline text; each '\n' in b ends the line.
func (r *renderer) write(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			r.beginLine()
			r.out = append(r.out, b...)
			return
		}
		if i > 0 {
			r.beginLine()
			r.out = append(r.out, b[:i]...)
		}
		r.newline()
		b = b[i+1:]
	}
}

// writeString is write for a string.
func (r *renderer) writeString(s string) {
	if strings.IndexByte(s, '\n') < 0 {
		if s != "" {
			r.beginLine()
			r.out = append(r.out, s...)
		}
		return
	}
	r.write([]byte(s))
}

// writeUnescaped writes Markdown inline text with escapes and character
// references resolved.
func (r *renderer) writeUnescaped(b []byte) {
	if bytes.IndexByte(b, '\\') < 0 && bytes.IndexByte(b, '&') < 0 {
		r.write(b)
		return
	}
	r.write(appendUnescaped(nil, b))
}

// newline ends the current line; on an empty line it writes the prefixes
// first so that line breaks inside a quote keep their marker.
func (r *renderer) newline() {
	r.beginLine()
	r.endLine()
}

// ---- blocks ----

// blocks renders the block children of parent. Outside tight lists, blocks
// that produce output are separated by exactly one blank line.
func (r *renderer) blocks(parent ast.Node, tight bool) {
	wrote := false
	for c := parent.FirstChild(); c != nil; c = c.NextSibling() {
		if wrote && !tight {
			r.requestBlank()
		}
		before := len(r.out)
		r.block(c)
		r.endLine()
		if len(r.out) != before {
			wrote = true
		}
	}
	if wrote {
		r.blank = false // our own request after the last block
	}
}

// block renders one block node.
func (r *renderer) block(n ast.Node) {
	switch n := n.(type) {
	case *ast.Paragraph, *ast.TextBlock:
		r.inlines(n)
	case *ast.Heading:
		r.heading(n)
	case *ast.ThematicBreak:
		r.writeString(thematicBreak)
	case *ast.CodeBlock:
		r.code(n.Lines())
	case *ast.FencedCodeBlock:
		r.code(n.Lines())
	case *ast.Blockquote:
		r.blockquote(n)
	case *ast.List:
		r.list(n)
	case *ast.HTMLBlock:
		r.htmlBlock(n)
	case *ast.LinkReferenceDefinition:
		r.definition(n)
	case *extast.Table:
		r.table(n)
	default:
		if n.Type() == ast.TypeBlock && n.HasChildren() {
			if n.FirstChild().Type() == ast.TypeInline {
				r.inlines(n)
			} else {
				r.blocks(n, false)
			}
		}
	}
}

// heading renders a heading on its own line: 【text】 in plain text (unless
// the text already uses 【】), "## text" for WeCom.
func (r *renderer) heading(n *ast.Heading) {
	sub := r.sub(r.mode)
	sub.inBold = true // WeCom headings are bold already
	sub.inlines(n)
	t := oneLine(sub.result())
	if t == "" {
		return
	}
	if r.mode == modeWeCom {
		level := min(max(n.Level, 1), 6)
		r.writeString(strings.Repeat("#", level) + " " + t)
		return
	}
	if strings.ContainsAny(t, "【】") {
		r.writeString(t)
		return
	}
	r.writeString("【" + t + "】")
}

// code renders code block lines verbatim. Plain text indents each line by
// four spaces; WeCom wraps each line in backticks (its markdown has no code
// blocks, and a bare "# x" line would become a heading).
func (r *renderer) code(lines *text.Segments) {
	start, end := 0, lines.Len()
	for start < end && isBlank(r.value(lines.At(start))) {
		start++
	}
	for end > start && isBlank(r.value(lines.At(end-1))) {
		end--
	}
	for i := start; i < end; i++ {
		v := bytes.TrimRight(r.value(lines.At(i)), " \t\n")
		if len(v) == 0 {
			r.emptyLine()
			continue
		}
		r.beginLine()
		if r.mode == modeWeCom && bytes.IndexByte(v, '`') < 0 {
			r.out = append(r.out, '`')
			r.out = append(r.out, v...)
			r.out = append(r.out, '`')
		} else {
			r.out = append(r.out, codeIndent...)
			r.out = append(r.out, v...)
		}
		r.endLine()
	}
}

// isBlank reports whether b is only spaces, tabs and newlines.
func isBlank(b []byte) bool {
	return len(bytes.Trim(b, " \t\n")) == 0
}

// blockquote prefixes every line of the quote with "> ". WeCom does not
// nest quotes, so inner quotes there merge into the outer one.
func (r *renderer) blockquote(n *ast.Blockquote) {
	if r.mode == modeWeCom && r.quoted {
		r.blocks(n, false)
		return
	}
	r.push(quotePrefix, quotePrefix)
	r.quoted = true
	r.blocks(n, false)
	r.endLine()
	r.quoted = false
	r.pop()
}

// list renders "• item" or "N. item" lines; nested content is indented by
// two spaces per level. Loose lists keep a blank line between items.
func (r *renderer) list(l *ast.List) {
	num := l.Start
	for item := l.FirstChild(); item != nil; item = item.NextSibling() {
		if item != l.FirstChild() && !l.IsTight {
			r.requestBlank()
		}
		marker := bullet
		if l.IsOrdered() {
			marker = strconv.Itoa(num) + string(l.Marker) + " "
			num++
		} else if hasTaskBox(item) {
			marker = "" // the check box itself is the bullet
		}
		r.push(marker, listIndent)
		r.blocks(item, l.IsTight)
		if !r.prefixes[len(r.prefixes)-1].used {
			r.emptyLine() // an empty item still shows its marker
		}
		r.endLine()
		r.pop()
	}
}

// hasTaskBox reports whether a list item starts with a task check box.
func hasTaskBox(item ast.Node) bool {
	fc := item.FirstChild()
	if fc == nil {
		return false
	}
	_, ok := fc.FirstChild().(*extast.TaskCheckBox)
	return ok
}

// htmlBlock writes raw HTML lines literally; nothing is interpreted.
func (r *renderer) htmlBlock(n *ast.HTMLBlock) {
	lines := n.Lines()
	var buf []byte
	for i := range lines.Len() {
		buf = append(buf, r.value(lines.At(i))...)
	}
	if n.HasClosure() {
		buf = append(buf, n.ClosureLine.Value(r.src)...)
	}
	r.write(bytes.TrimRight(buf, " \t\n"))
}

// definition prints a link reference definition that no link uses, so
// that its URL is not lost. Used definitions are invisible, as in HTML.
func (r *renderer) definition(n *ast.LinkReferenceDefinition) {
	if !r.hasDefs || r.usedRefs[util.ToLinkReference(n.Label)] {
		return
	}
	var b []byte
	b = append(b, '[')
	b = appendUnescaped(b, n.Label)
	b = append(b, "]: "...)
	b = appendUnescaped(b, n.Destination)
	if len(n.Title) > 0 {
		b = append(b, ' ')
		b = appendUnescaped(b, n.Title)
	}
	r.write(b)
}

// ---- tables ----

// table renders a GFM table as aligned lines: cells padded to the display
// width of their column (CJK and emoji count as two columns) and joined by
// " | ". Plain text underlines the header with '-'; WeCom makes it bold.
func (r *renderer) table(t *extast.Table) {
	ncol := len(t.Alignments)
	var rows [][]string
	sub := r.sub(modePlain) // reused for every cell
	for row := t.FirstChild(); row != nil; row = row.NextSibling() {
		cells := make([]string, 0, ncol)
		for c := row.FirstChild(); c != nil; c = c.NextSibling() {
			sub.out, sub.lineOpen = sub.out[:0], false
			sub.inlines(c)
			cells = append(cells, oneLine(sub.result()))
		}
		if _, ok := row.(*extast.TableRow); ok {
			cells = append(cells, r.extraCells(row, len(cells))...)
		}
		rows = append(rows, cells)
	}
	width := []int{}
	for _, cells := range rows {
		for j, c := range cells {
			if j == len(width) {
				width = append(width, 0)
			}
			width[j] = max(width[j], displayWidth(c))
		}
	}
	for i, cells := range rows {
		last := len(cells) - 1 // trailing empty cells add only separators
		for last >= 0 && cells[last] == "" {
			last--
		}
		var b strings.Builder
		for j := 0; j <= last; j++ {
			c := cells[j]
			if j > 0 {
				b.WriteString(cellSep)
			}
			pad := width[j] - displayWidth(c)
			left, right := 0, pad
			switch alignment(t, j) {
			case extast.AlignRight:
				left, right = pad, 0
			case extast.AlignCenter:
				left, right = pad/2, pad-pad/2
			}
			if j == last {
				right = 0
			}
			b.WriteString(strings.Repeat(" ", left))
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", right))
		}
		line := strings.TrimRight(b.String(), " ")
		if i == 0 && r.mode == modeWeCom {
			if strings.TrimSpace(line) != "" {
				line = "**" + strings.TrimSpace(line) + "**"
			}
		}
		r.writeString(line)
		r.endLine()
		if i == 0 && r.mode == modePlain {
			total := 0
			for _, w := range width {
				total += w
			}
			total += len(cellSep) * (len(width) - 1)
			r.writeString(strings.Repeat("-", max(total, 3)))
			r.endLine()
		}
	}
}

// alignment returns the alignment of column j.
func alignment(t *extast.Table, j int) extast.Alignment {
	if j < len(t.Alignments) {
		return t.Alignments[j]
	}
	return extast.AlignNone
}

// extraCells returns the cells of a body row beyond the header's column
// count. GFM says to ignore them, but dropping words of an answer is worse
// than an uneven table, so they are recovered from the row's source line
// (split on unescaped '|', as goldmark does) and kept as extra columns.
func (r *renderer) extraCells(row ast.Node, have int) []string {
	pos := row.Pos()
	if pos < 0 || pos >= len(r.src) {
		return nil
	}
	line := r.src[pos:]
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	line = util.TrimRightSpace(util.TrimLeftSpace(line))
	if len(line) > 0 && line[0] == '|' {
		line = line[1:]
	}
	if len(line) > 0 && line[len(line)-1] == '|' {
		line = line[:len(line)-1]
	}
	isSep := func(i int) bool { return line[i] == '|' && (i == 0 || line[i-1] != '\\') }
	n := 1
	for i := range line {
		if isSep(i) {
			n++
		}
	}
	if n <= have {
		return nil // the usual case: nothing was dropped
	}
	var extra []string
	cell, start := 0, 0
	for i := 0; i <= len(line); i++ {
		if i < len(line) && !isSep(i) {
			continue
		}
		if cell >= have {
			extra = append(extra, oneLine(string(appendUnescaped(nil, line[start:i]))))
		}
		cell, start = cell+1, i+1
	}
	return extra
}

// ---- inlines ----

// sub returns a renderer for rendering inline content to a string.
func (r *renderer) sub(m mode) *renderer {
	return &renderer{src: r.src, mode: m, inBold: r.inBold, inAlt: r.inAlt}
}

// result returns what a sub-renderer wrote.
func (r *renderer) result() string {
	r.endLine()
	return string(bytes.TrimRight(r.out, " \t\n"))
}

// oneLine joins the lines of s with spaces and trims it.
func oneLine(s string) string {
	return strings.TrimSpace(strings.ReplaceAll(s, "\n", " "))
}

// inlines renders the inline children of n.
func (r *renderer) inlines(n ast.Node) {
	for c := n.FirstChild(); c != nil; c = c.NextSibling() {
		r.inline(c)
	}
}

// inline renders one inline node.
func (r *renderer) inline(n ast.Node) {
	switch n := n.(type) {
	case *ast.Text:
		v := n.Segment.Value(r.src)
		if n.IsRaw() {
			r.write(v)
		} else {
			r.writeUnescaped(v)
		}
		if n.HardLineBreak() || n.SoftLineBreak() {
			r.newline()
		}
	case *ast.String:
		if n.IsCode() || n.IsRaw() {
			r.write(n.Value)
		} else {
			r.writeUnescaped(n.Value)
		}
	case *ast.CodeSpan:
		r.codeSpan(n)
	case *ast.Emphasis:
		if r.mode == modeWeCom && n.Level >= 2 && !r.inBold {
			r.bold(n)
		} else {
			r.inlines(n)
		}
	case *ast.Link:
		if r.inAlt {
			r.inlines(n)
		} else {
			r.link(n, n.Destination, false)
		}
	case *ast.Image:
		if r.inAlt { // alt text is plain, as in HTML; also keeps nesting linear
			r.inlines(n)
		} else {
			r.link(n, n.Destination, true)
		}
	case *ast.AutoLink:
		r.autoLink(n)
	case *ast.RawHTML:
		for i := range n.Segments.Len() {
			r.write(r.value(n.Segments.At(i)))
		}
	case *extast.TaskCheckBox:
		if n.IsChecked {
			r.writeString(taskDone)
		} else {
			r.writeString(taskOpen)
		}
	default: // strikethrough and anything unknown: keep the text
		r.inlines(n)
	}
}

// codeSpan writes inline code verbatim, without backticks in plain text
// and with them for WeCom. Line endings inside a code span are spaces.
func (r *renderer) codeSpan(n *ast.CodeSpan) {
	var b []byte
	if c, ok := n.FirstChild().(*ast.Text); ok && c.NextSibling() == nil {
		b = r.value(c.Segment) // the common case: no copy
	} else {
		for c := n.FirstChild(); c != nil; c = c.NextSibling() {
			switch c := c.(type) {
			case *ast.Text:
				b = append(b, r.value(c.Segment)...)
			case *ast.String:
				b = append(b, c.Value...)
			}
		}
	}
	if bytes.IndexByte(b, '\n') >= 0 {
		b = bytes.ReplaceAll(b, []byte("\n"), []byte(" "))
	}
	if r.mode == modeWeCom && len(bytes.TrimSpace(b)) > 0 && bytes.IndexByte(b, '`') < 0 {
		r.writeString("`")
		r.write(b)
		r.writeString("`")
		return
	}
	r.write(b)
}

// bold writes **text** for WeCom, keeping surrounding spaces outside the
// markers (where they would stop the bold from closing) and marking each
// line separately.
func (r *renderer) bold(n ast.Node) {
	sub := r.sub(r.mode)
	sub.inBold = true
	sub.inlines(n)
	lines := strings.Split(string(sub.out), "\n")
	for i, line := range lines {
		if i > 0 {
			r.newline()
		}
		core := strings.TrimSpace(line)
		if core == "" {
			r.writeString(line)
			continue
		}
		lead := line[:strings.Index(line, core)]
		trail := line[len(lead)+len(core):]
		r.writeString(lead + "**" + core + "**" + trail)
	}
}

// link writes a link as "text (url)" in plain text, or [text](url) for
// WeCom, and an image as "[图片: alt] (url)". The URL is left out when it
// equals the text.
func (r *renderer) link(n ast.Node, dest []byte, image bool) {
	sub := r.sub(modePlain)
	sub.inAlt = image
	sub.inlines(n)
	label := sub.result()
	url := strings.TrimSpace(string(appendUnescaped(nil, dest)))
	if image {
		if label == "" {
			label = "[" + imageLabel + "]"
		} else {
			label = "[" + imageLabel + ": " + oneLine(label) + "]"
		}
	}
	text := label
	if image {
		text = strings.TrimSuffix(strings.TrimPrefix(label, "["), "]")
	}
	switch {
	case url == "" || label == url || "mailto:"+label == url:
		r.writeString(label)
	case r.mode == modeWeCom && linkSafe(text, url):
		if text == "" {
			text = url
		}
		r.writeString("[" + text + "](" + url + ")")
	case label == "":
		r.writeString(url)
	case image || r.mode == modePlain:
		r.writeString(label + " (" + url + ")")
	default:
		// Keep the inline formatting of the text when the link cannot be
		// written as a WeCom link.
		r.inlines(n)
		r.writeString(" (" + url + ")")
	}
}

// linkSafe reports whether [label](url) survives WeCom's simple parser.
func linkSafe(label, url string) bool {
	return !strings.ContainsAny(label, "[]\n") && !strings.ContainsAny(url, "()[] \t\n<>")
}

// autoLink writes an autolink as its text; WeCom gets a clickable link.
func (r *renderer) autoLink(n *ast.AutoLink) {
	label := string(n.Label(r.src))
	url := string(n.URL(r.src))
	if r.mode == modeWeCom && linkSafe(label, url) {
		r.writeString("[" + label + "](" + url + ")")
		return
	}
	r.writeString(label)
}

// value returns the bytes of s. The result may alias the source and must
// not be appended to.
func (r *renderer) value(s text.Segment) []byte {
	return s.Value(r.src)
}
