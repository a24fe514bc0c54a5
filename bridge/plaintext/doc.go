// Package plaintext turns the Markdown that LLMs answer in into text that
// reads well in a WeCom (企业微信) or WeChat (微信插件) chat bubble.
//
// WeCom app markdown messages are not rendered by the WeChat plugin, so the
// bridge sends plain text messages by default and converts the answer with
// [FromMarkdown]. [ToWeComMarkdown] targets the markdown subset that WeCom's
// own client renders, for deployments that only use WeCom.
//
// Markdown is parsed with goldmark (CommonMark plus the GFM table,
// strikethrough and task-list extensions) and the syntax tree is rendered
// as text. Two parsing rules are adjusted for Chinese answers: emphasis
// follows the CJK-friendly flanking rules, so "**注意：**这里" is bold as
// intended, and strikethrough needs "~~", so ranges such as "3~5天" are left
// alone.
//
// # Plain text rules
//
// FromMarkdown renders:
//
//   - Headings as 【标题】 on a line of their own, any level. A heading
//     that already contains 【 or 】 is left as it is.
//   - Paragraphs and other blocks separated by exactly one blank line. Soft
//     line breaks stay line breaks: a chat bubble does not reflow, and
//     joining lines would put spaces between Chinese characters. Hard line
//     breaks are kept.
//   - Emphasis, bold and strikethrough as their text, markers removed.
//   - Links as "text (url)", or just the URL when text and URL are the same;
//     autolinks as their URL; images as "[图片: alt] (url)". Link titles are
//     dropped, as a browser shows them only as tooltips.
//   - Bullet lists as "• item", ordered lists as "N. item" counting from the
//     list's start number, task lists as "☐ item" and "☑ item". Each level
//     of nesting, and each continuation line, is indented by two spaces.
//     Loose lists (items separated by blank lines) keep the blank lines.
//   - Code blocks, fenced or indented, as their lines indented by four
//     spaces, without fences or info string. The content is verbatim: no
//     escapes resolved, no Markdown interpreted.
//   - Inline code as its content verbatim, without backticks.
//   - Block quotes with "> " in front of every line.
//   - GFM tables as aligned lines: cells joined by " | " and padded to the
//     display width of their column, where CJK characters and emoji count
//     as two columns; the header is underlined with '-'. Column alignment
//     (:--, --:, :-:) is honoured. Cells beyond the header's column count,
//     which GFM drops, are kept as extra columns.
//   - Thematic breaks as "——————".
//   - Raw HTML, inline or block, as literal text; nothing is interpreted,
//     so "<script>" shows up as typed. Entities in ordinary text are decoded
//     ("&amp;" becomes "&"); backslash escapes lose their backslash.
//   - Link reference definitions disappear when a link uses them, and are
//     printed as "[label]: url" otherwise, so that no URL is lost.
//
// Output has no trailing whitespace on any line and no leading or trailing
// blank lines. Invalid UTF-8 in the input is replaced with U+FFFD, so the
// output is always valid UTF-8.
//
// # WeCom markdown rules
//
// ToWeComMarkdown keeps what WeCom renders and degrades the rest exactly as
// FromMarkdown does:
//
//   - Headings stay "#".."######" headings.
//   - Bold (** or __) stays **bold**; italics and strikethrough become text.
//   - Links become [text](url) when WeCom's simple parser can read them
//     (no brackets in the text, no spaces or parentheses in the URL), and
//     "text (url)" otherwise. Autolinks become [url](url); images
//     [图片: alt](url).
//   - Inline code stays `code`.
//   - Block quotes stay "> " quotes; nested quotes merge into one.
//   - Code blocks become one `code` span per line (WeCom has no code
//     blocks, and a bare "# comment" line would turn into a heading).
//   - Tables become the aligned lines of FromMarkdown with a **bold** header
//     line instead of the '-' underline.
//   - Raw HTML passes through unchanged, so <font color="info|comment|
//     warning"> works.
//
// # Caveats
//
//   - Partial input is fine: an unclosed ``` fence renders as a code block
//     running to the end of the text, and a table cut off mid-row renders
//     the rows it has. A caller that sends a long answer in several
//     messages should split the rendered text, not the Markdown; splitting
//     Markdown inside a fenced block turns the rest of the block into prose.
//   - A single '*' between digits is still emphasis, as in any Markdown
//     renderer: "3*5 和 2*4" loses its asterisks. LLMs rarely write this
//     outside code.
//   - Columns line up only in a monospace font; WeChat uses a proportional
//     one, so tables are aligned approximately. The " | " separator keeps
//     cells apart regardless.
//   - WeCom's markdown dialect is undocumented beyond its feature list.
//     Text that happens to look like WeCom markup after unescaping (a
//     literal "\#" at the start of a line becomes "#") is not re-escaped.
package plaintext
