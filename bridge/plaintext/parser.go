package plaintext

import (
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/parser"
	"github.com/yuin/goldmark/text"
	"github.com/yuin/goldmark/util"
)

// mdParser is the shared Markdown parser. Like a compiled regexp it is
// built once and never changed afterwards: goldmark parsers keep per-parse
// state in a fresh parser.Context and are safe for concurrent use. Building
// one costs tens of microseconds and ~140 allocations, which would
// otherwise be paid for every message.
var mdParser = newParser()

// newParser returns a CommonMark parser with the GFM table, strikethrough
// and task-list extensions, adjusted for Chinese answers:
//
//   - emphasis uses CJK-friendly flanking rules (see cjkEmphasisParser), so
//     "**注意：**这里" is bold as the author meant;
//   - strikethrough needs two tildes, so ranges such as "3~5天" stay text.
//
// The parser is built without a goldmark.Markdown because we never render
// HTML. It is safe for concurrent use once built.
func newParser() parser.Parser {
	inline := []util.PrioritizedValue{}
	for _, v := range parser.DefaultInlineParsers() {
		if v.Value == parser.NewEmphasisParser() { // replaced below
			continue
		}
		inline = append(inline, v)
	}
	inline = append(inline,
		util.Prioritized(cjkEmphasisParser{}, 500),
		util.Prioritized(doubleTildeParser{extension.NewStrikethroughParser()}, 500),
		util.Prioritized(extension.NewTaskCheckBoxParser(), 0),
	)
	return parser.NewParser(
		parser.WithBlockParsers(parser.DefaultBlockParsers()...),
		parser.WithInlineParsers(inline...),
		parser.WithParagraphTransformers(parser.DefaultParagraphTransformers()...),
		parser.WithParagraphTransformers(util.Prioritized(extension.NewTableParagraphTransformer(), 200)),
		parser.WithASTTransformers(util.Prioritized(extension.NewTableASTTransformer(), 0)),
	)
}

// parse parses src into a document.
func parse(src []byte) ast.Node {
	return mdParser.Parse(text.NewReader(src))
}

// emphasisDelimiters is the delimiter processor for '*' and '_'.
type emphasisDelimiters struct{}

// IsDelimiter implements parser.DelimiterProcessor.
func (emphasisDelimiters) IsDelimiter(b byte) bool { return b == '*' || b == '_' }

// CanOpenCloser implements parser.DelimiterProcessor.
func (emphasisDelimiters) CanOpenCloser(opener, closer *parser.Delimiter) bool {
	return opener.Char == closer.Char
}

// OnMatch implements parser.DelimiterProcessor.
func (emphasisDelimiters) OnMatch(consumes int) ast.Node { return ast.NewEmphasis(consumes) }

// cjkEmphasisParser parses '*' and '_' delimiter runs like goldmark's
// emphasis parser, but with the CJK-friendly amendment to the flanking rules
// (github.com/tats-u/markdown-cjk-friendly): a CJK character next to a
// delimiter run counts like whitespace when the other side is punctuation.
//
// CommonMark alone leaves "**注意：**这里" and "这是**“引用”**文字"
// unbolded because the closing run sits between punctuation and a letter;
// Chinese never puts spaces there, and LLMs write it constantly.
type cjkEmphasisParser struct{}

// Trigger implements parser.InlineParser.
func (cjkEmphasisParser) Trigger() []byte { return []byte{'*', '_'} }

// Parse implements parser.InlineParser.
func (cjkEmphasisParser) Parse(_ ast.Node, block text.Reader, pc parser.Context) ast.Node {
	before := block.PrecendingCharacter()
	line, segment := block.PeekLine()
	if len(line) == 0 {
		return nil
	}
	c := line[0]
	n := 0
	for n < len(line) && line[n] == c {
		n++
	}
	after := ' '
	if n < len(line) {
		after = util.ToRune(line, n)
	}
	beforePunct, beforeSpace := util.IsPunctRune(before), util.IsSpaceRune(before)
	afterPunct, afterSpace := util.IsPunctRune(after), util.IsSpaceRune(after)
	left := !afterSpace && (!afterPunct || beforeSpace || beforePunct || isCJK(before))
	right := !beforeSpace && (!beforePunct || afterSpace || afterPunct || isCJK(after))
	canOpen, canClose := left, right
	if c == '_' {
		canOpen = left && (!right || beforePunct)
		canClose = right && (!left || afterPunct)
	}
	d := parser.NewDelimiter(canOpen, canClose, n, c, emphasisDelimiters{})
	d.Segment = segment.WithStop(segment.Start + n)
	block.Advance(n)
	pc.PushDelimiter(d)
	return d
}

// doubleTildeParser wraps the GFM strikethrough parser so that only "~~"
// strikes. A single tilde is how Chinese writes ranges ("3~5天",
// "9:00~18:00"); GFM would strike the text between two of them, and once
// the markers are dropped the numbers would run together.
type doubleTildeParser struct{ parser.InlineParser }

// Parse implements parser.InlineParser.
func (p doubleTildeParser) Parse(parent ast.Node, block text.Reader, pc parser.Context) ast.Node {
	line, _ := block.PeekLine()
	if len(line) < 2 || line[1] != '~' {
		return nil
	}
	return p.InlineParser.Parse(parent, block, pc)
}

// CloseBlock implements parser.CloseBlocker by delegating to the wrapped
// parser, which resolves its delimiters there.
func (p doubleTildeParser) CloseBlock(parent ast.Node, block text.Reader, pc parser.Context) {
	if cb, ok := p.InlineParser.(parser.CloseBlocker); ok {
		cb.CloseBlock(parent, block, pc)
	}
}
