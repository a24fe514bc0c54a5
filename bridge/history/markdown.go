package history

import (
	"bytes"
	"html/template"
	"net/url"
	"strings"
	"sync"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/renderer"
	"github.com/yuin/goldmark/renderer/html"
	"github.com/yuin/goldmark/util"
)

// Answers are Markdown written by an LLM, which may repeat anything a user
// (or a document it read) fed it. They are rendered by goldmark with raw HTML
// off, and HTML in the text is shown as text (escaped), never passed
// through: an answer that explains "<br>" keeps it visible. On top of that,
// links keep only http, https, mailto and tel targets (an allowlist, where
// goldmark's own check is a blocklist), and images become plain links, since
// the page's CSP loads no image from elsewhere and a remote image would tell
// a third party who read the answer, and when.

// markdown renders answers; one is built with the page and shared by all
// requests.
type markdown struct {
	md   goldmark.Markdown
	bufs sync.Pool
}

func newMarkdown() *markdown {
	return &markdown{
		md: goldmark.New(
			goldmark.WithExtensions(
				extension.NewTable(extension.WithTableCellAlignMethod(extension.TableCellAlignAttribute)),
				extension.Strikethrough,
				extension.Linkify,
				extension.TaskList,
			),
			goldmark.WithRendererOptions(
				// Chat answers use single line breaks as breaks.
				html.WithHardWraps(),
				renderer.WithNodeRenderers(util.Prioritized(safeLinks{}, 100)),
			),
		),
		bufs: sync.Pool{New: func() any { return new(bytes.Buffer) }},
	}
}

// render turns an answer into safe HTML.
func (m *markdown) render(src string) template.HTML {
	buf := m.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer m.bufs.Put(buf)
	if err := m.md.Convert([]byte(src), buf); err != nil {
		// goldmark does not fail on any input; if it ever does, show text.
		return template.HTML("<p>" + template.HTMLEscapeString(src) + "</p>")
	}
	return template.HTML(buf.String())
}

// safeLinks renders links, autolinks and images.
type safeLinks struct{}

func (safeLinks) RegisterFuncs(r renderer.NodeRendererFuncRegisterer) {
	r.Register(ast.KindLink, renderLink)
	r.Register(ast.KindAutoLink, renderAutoLink)
	r.Register(ast.KindImage, renderImage)
	r.Register(ast.KindRawHTML, renderRawHTML)
	r.Register(ast.KindHTMLBlock, renderHTMLBlock)
}

func renderRawHTML(w util.BufWriter, source []byte, node ast.Node, entering bool) (ast.WalkStatus, error) {
	if entering {
		n := node.(*ast.RawHTML)
		for i := 0; i < n.Segments.Len(); i++ {
			seg := n.Segments.At(i)
			_, _ = w.Write(util.EscapeHTML(seg.Value(source)))
		}
	}
	return ast.WalkSkipChildren, nil
}

func renderHTMLBlock(w util.BufWriter, source []byte, node ast.Node, entering bool) (ast.WalkStatus, error) {
	if !entering {
		return ast.WalkContinue, nil
	}
	n := node.(*ast.HTMLBlock)
	var lines [][]byte
	for i := 0; i < n.Lines().Len(); i++ {
		seg := n.Lines().At(i)
		lines = append(lines, seg.Value(source))
	}
	if n.HasClosure() {
		lines = append(lines, n.ClosureLine.Value(source))
	}
	_, _ = w.WriteString("<p>")
	for i, l := range lines {
		if i > 0 {
			_, _ = w.WriteString("<br>\n")
		}
		_, _ = w.Write(util.EscapeHTML(bytes.TrimRight(l, "\r\n")))
	}
	_, _ = w.WriteString("</p>\n")
	return ast.WalkContinue, nil
}

// safeURL reports whether dest may be a link target: an absolute http(s),
// mailto or tel URL, or a fragment. Relative URLs are refused too: they
// would point into this site.
func safeURL(dest string) bool {
	if strings.HasPrefix(dest, "#") {
		return true
	}
	u, err := url.Parse(dest)
	if err != nil {
		return false
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		return u.Host != ""
	case "mailto", "tel":
		return true
	}
	return false
}

func writeHref(w util.BufWriter, dest []byte) {
	_, _ = w.WriteString(`<a href="`)
	_, _ = w.Write(util.EscapeHTML(util.URLEscape(dest, true)))
	_, _ = w.WriteString(`" rel="nofollow noopener noreferrer" target="_blank">`)
}

func renderLink(w util.BufWriter, source []byte, node ast.Node, entering bool) (ast.WalkStatus, error) {
	n := node.(*ast.Link)
	if !safeURL(string(n.Destination)) {
		return ast.WalkContinue, nil // the text only
	}
	if entering {
		writeHref(w, n.Destination)
	} else {
		_, _ = w.WriteString("</a>")
	}
	return ast.WalkContinue, nil
}

func renderAutoLink(w util.BufWriter, source []byte, node ast.Node, entering bool) (ast.WalkStatus, error) {
	if !entering {
		return ast.WalkContinue, nil
	}
	n := node.(*ast.AutoLink)
	dest := n.URL(source)
	label := n.Label(source)
	if n.AutoLinkType == ast.AutoLinkEmail && !bytes.HasPrefix(bytes.ToLower(dest), []byte("mailto:")) {
		dest = append([]byte("mailto:"), dest...)
	} else if n.AutoLinkType == ast.AutoLinkURL && !bytes.Contains(dest, []byte("://")) {
		dest = append([]byte("http://"), dest...) // Linkify's "www.example.com"
	}
	if !safeURL(string(dest)) {
		_, _ = w.Write(util.EscapeHTML(label))
		return ast.WalkContinue, nil
	}
	writeHref(w, dest)
	_, _ = w.Write(util.EscapeHTML(label))
	_, _ = w.WriteString("</a>")
	return ast.WalkContinue, nil
}

func renderImage(w util.BufWriter, source []byte, node ast.Node, entering bool) (ast.WalkStatus, error) {
	n := node.(*ast.Image)
	safe := safeURL(string(n.Destination)) && !strings.HasPrefix(string(n.Destination), "#")
	if entering {
		if safe {
			writeHref(w, n.Destination)
		}
		_, _ = w.WriteString("[图片")
		if n.HasChildren() {
			_, _ = w.WriteString(": ")
		}
		return ast.WalkContinue, nil
	}
	_, _ = w.WriteString("]")
	if safe {
		_, _ = w.WriteString("</a>")
	}
	return ast.WalkContinue, nil
}
