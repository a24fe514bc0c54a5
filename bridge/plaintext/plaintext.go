package plaintext

// FromMarkdown renders Markdown as plain text that reads well in a
// WeCom/WeChat text bubble. See the package documentation for the rules.
// It never fails: any input, including a partial answer cut off mid-block,
// yields readable text that keeps every word of the answer's text (only
// Markdown syntax, link titles and fence info strings are dropped).
func FromMarkdown(md string) string {
	return render(md, modePlain)
}

// ToWeComMarkdown rewrites Markdown into the subset that WeCom app markdown
// messages render: headings, **bold**, [links](url), `inline code`, > quotes
// and <font color="info|comment|warning"> (raw HTML passes through
// unchanged). Lists, tables, code blocks and other constructs WeCom does not
// support degrade to the same readable text as FromMarkdown.
func ToWeComMarkdown(md string) string {
	return render(md, modeWeCom)
}
