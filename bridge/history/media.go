package history

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/url"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// Attachments of a question (issue 11): /history/media/ENTRY/N serves the
// N-th attachment of entry ENTRY to its owner, or to an admin viewing the
// owner (?user=). The rule is resolve's, as for the page; the entry is then
// looked up under the user whose history is viewed, so the id of someone
// else's entry is a 404 like an id that does not exist: the response never
// tells whether it does.
//
// The file is Attachment.File inside Config.MediaDir. File must be a plain
// name (validMediaFile), and it is opened through an os.Root on the media
// directory, so neither a bad record nor a symlink reaches anything outside
// it. Only raster images are shown inline; anything else is a download
// (Content-Disposition: attachment), and types a browser would run as a
// document (HTML, SVG, XML, script) are sent as application/octet-stream.

// mediaPath is the page-relative prefix of the attachment route.
const mediaPath = "/media/"

// mediaCSP is the policy of an attachment response: it is a picture or a
// download, never a document that may load or run anything.
const mediaCSP = "default-src 'none'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"

// inlineImages are the picture types browsers show as pictures and never
// as documents; only these are served inline (and as thumbnails).
var inlineImages = map[string]bool{
	"image/png": true, "image/jpeg": true, "image/gif": true,
	"image/webp": true, "image/bmp": true, "image/avif": true,
}

// activeTypes would be rendered as documents (with script) if a browser
// ever showed them; they are sent as octet-stream.
func activeType(mt string) bool {
	switch mt {
	case "text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml",
		"text/javascript", "application/javascript", "application/ecmascript", "text/ecmascript",
		"application/x-javascript", "text/css", "text/xsl", "application/xslt+xml", "multipart/x-mixed-replace":
		return true
	}
	return strings.HasSuffix(mt, "+xml")
}

// validMediaFile accepts what the bridge names media files: a plain name of
// letters, digits, '-', '_' and '.', that does not start with a dot (so
// never "." or ".."), at most 200 bytes. Anything else — a separator, a
// path, an empty name — is refused, whatever the file system would make
// of it.
func validMediaFile(name string) bool {
	if name == "" || len(name) > 200 || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// mediaKind is how the response presents an attachment: its Content-Type
// and whether it shows inline (a picture) or downloads.
func mediaKind(a *kv.Attachment) (ctype string, inline bool) {
	mt, params, err := mime.ParseMediaType(a.MIME)
	if err != nil || mt == "" || activeType(mt) {
		return "application/octet-stream", false
	}
	if inlineImages[mt] {
		return mt, true
	}
	if cs, ok := params["charset"]; ok && strings.HasPrefix(mt, "text/") {
		if f := mime.FormatMediaType(mt, map[string]string{"charset": cs}); f != "" {
			return f, false
		}
	}
	return mt, false
}

// thumbnail reports whether the page shows the attachment as a picture.
func thumbnail(a *kv.Attachment) bool {
	_, inline := mediaKind(a)
	return inline && a.Kind == "image"
}

// downloadName is the attachment's name for the browser's save dialog:
// the user's file name if it has one, else the stored file's. Path
// separators and control characters become '_'.
func downloadName(a *kv.Attachment) string {
	name := a.Name
	if name == "" || !utf8.ValidString(name) {
		name = a.File
	}
	var b strings.Builder
	n := 0
	for _, r := range name {
		if n == 120 {
			break
		}
		n++
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' || (r >= 0x80 && r < 0xa0) {
			b.WriteByte('_')
			continue
		}
		b.WriteRune(r)
	}
	if s := strings.Trim(b.String(), ". "); s != "" {
		return s
	}
	return "attachment"
}

// contentDisposition builds the header with the name encoded as RFC 8187
// (filename*=UTF-8”...) and an ASCII-only filename for old clients: every
// byte outside attr-char is percent-encoded, so a name cannot end the
// header, add a parameter or smuggle a quote.
func contentDisposition(disp, name string) string {
	var enc, ascii strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			enc.WriteByte(c)
			ascii.WriteByte(c)
			continue
		}
		fmt.Fprintf(&enc, "%%%02X", c)
		if c < 0x80 {
			ascii.WriteByte('_')
		} else if c >= 0xc0 { // one '_' per non-ASCII character
			ascii.WriteByte('_')
		}
	}
	return disp + `; filename="` + ascii.String() + `"; filename*=UTF-8''` + enc.String()
}

// mediaURL is the page's link to attachment n of entry id, with ?user= when
// an admin views someone else's history.
func (s *settings) mediaURL(v *historyView, id uint64, n int) string {
	u := s.base + mediaPath + strconv.FormatUint(id, 10) + "/" + strconv.Itoa(n)
	if v.viewing() {
		u += "?user=" + url.QueryEscape(v.target)
	}
	return u
}

// parseMediaPath reads "ENTRY/N" strictly: decimal digits only.
func parseMediaPath(rest string) (id uint64, n int, ok bool) {
	a, b, found := strings.Cut(rest, "/")
	if !found || !digits(a) || !digits(b) || len(b) > 4 {
		return 0, 0, false
	}
	id, err := strconv.ParseUint(a, 10, 64)
	if err != nil || id == 0 {
		return 0, 0, false
	}
	n, err = strconv.Atoi(b)
	if err != nil {
		return 0, 0, false
	}
	return id, n, true
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// media serves one attachment; rest is the path after /history/media/.
func (w *Handler) media(ctx *fasthttp.RequestCtx, s *settings, rest string) {
	v, ok := w.resolve(ctx, s)
	if !ok {
		return
	}
	notFound := func() { w.message(ctx, s, fasthttp.StatusNotFound, msgNotFound) }
	id, n, ok := parseMediaPath(rest)
	if !ok || s.mediaDir == "" {
		notFound()
		return
	}
	e, err := w.store.Entry(v.target, id)
	if err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			notFound()
			return
		}
		w.log.Error("history page: cannot read history entry", "err", err)
		w.message(ctx, s, fasthttp.StatusServiceUnavailable, msgUnavailable)
		return
	}
	if n >= len(e.Attachments) {
		notFound()
		return
	}
	a := &e.Attachments[n]
	if !validMediaFile(a.File) {
		if a.File != "" {
			w.log.Warn("history page: attachment record names no plain file; refused", "entry", id, "n", n)
		}
		notFound()
		return
	}
	f, err := os.OpenInRoot(s.mediaDir, a.File)
	if err != nil {
		// Gone (deleted with its history) is normal. Anything else — a
		// symlink out of the directory, no permission — is the operator's
		// to see; the user gets the same 404.
		if !errors.Is(err, fs.ErrNotExist) {
			w.log.Warn("history page: cannot open attachment; check the media directory", "dir", s.mediaDir, "entry", id, "n", n, "err", err)
		}
		notFound()
		return
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		_ = f.Close()
		notFound()
		return
	}
	ctype, inline := mediaKind(a)
	disp := "attachment"
	if inline {
		disp = "inline"
	}
	if v.viewing() {
		lvl := w.log.Info
		if inline {
			lvl = w.log.Debug // a thumbnail of a page already logged
		}
		lvl("history page: admin opens a user's attachment", "admin", v.sess.user, "user", v.target, "entry", id, "n", n)
	}
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", mediaCSP)
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	// The browser may keep it for this user but must ask each time: a
	// merge of held pictures can renumber a question's attachments.
	h.Set("Cache-Control", "private, no-cache")
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%d", a.File, st.Size(), st.ModTime().UnixNano()))
	etag := `"` + hex.EncodeToString(sum[:9]) + `"`
	h.Set("ETag", etag)
	if string(ctx.Request.Header.Peek("If-None-Match")) == etag {
		_ = f.Close()
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	h.Set("Content-Disposition", contentDisposition(disp, downloadName(a)))
	h.SetContentType(ctype)
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetBodyStream(f, int(st.Size())) // fasthttp closes f
}

// humanSize shows a byte count as people read it: 532 B, 12.3 KB, 4.5 MB.
func humanSize(n int64) string {
	switch {
	case n <= 0:
		return ""
	case n < 1024:
		return strconv.FormatInt(n, 10) + " B"
	case n < 1024*1024:
		return strconv.FormatFloat(float64(n)/1024, 'f', 1, 64) + " KB"
	case n < 1024*1024*1024:
		return strconv.FormatFloat(float64(n)/(1024*1024), 'f', 1, 64) + " MB"
	default:
		return strconv.FormatFloat(float64(n)/(1024*1024*1024), 'f', 1, 64) + " GB"
	}
}

// kindLabel names an attachment's kind for users.
func kindLabel(kind string) string {
	switch kind {
	case "image":
		return "图片"
	case "file":
		return "文件"
	case "voice":
		return "语音"
	case "video":
		return "视频"
	}
	return "附件"
}

// attachmentView is one attachment under a question on the page.
type attachmentView struct {
	Kind       string // CSS class: image, file, voice, video
	Label      string // 图片, 文件, 语音, 视频
	Thumb      bool   // shown as a picture
	URL        string // the media route; "" when there is no file to serve
	Name       string
	Size       string // "12.3 KB"; "" when unknown
	Transcript string
	Problem    string
}

// attachmentViews makes the views of an entry's attachments; link is nil
// when attachments cannot be served (no media directory).
func attachmentViews(e *kv.Entry, link func(n int) string) []attachmentView {
	if len(e.Attachments) == 0 {
		return nil
	}
	out := make([]attachmentView, len(e.Attachments))
	for i := range e.Attachments {
		a := &e.Attachments[i]
		av := attachmentView{Kind: a.Kind, Label: kindLabel(a.Kind), Name: a.Name, Size: humanSize(a.Size),
			Transcript: a.Transcript, Problem: a.Problem}
		switch av.Kind {
		case "image", "file", "voice", "video":
		default:
			av.Kind = "file"
		}
		if link != nil && validMediaFile(a.File) {
			av.URL = link(i)
			av.Thumb = thumbnail(a)
		}
		if av.Name == "" && !av.Thumb && av.Kind != "voice" {
			av.Name = av.Label
		}
		out[i] = av
	}
	return out
}

// exportAttachment is an attachment in the JSON export: a reference, never
// the bytes. The field names are part of the export format.
type exportAttachment struct {
	Kind       string `json:"kind"`
	Name       string `json:"name,omitempty"`
	MIME       string `json:"mime,omitempty"`
	Size       int64  `json:"size,omitempty"`
	Transcript string `json:"transcript,omitempty"`
	Problem    string `json:"problem,omitempty"`
	// URL is the path of the media route (with ?user= in an admin's
	// export of someone else's history); "" when no file is kept.
	URL string `json:"url,omitempty"`
}

func (s *settings) exportAttachments(v *historyView, e *kv.Entry) []exportAttachment {
	if len(e.Attachments) == 0 {
		return nil
	}
	out := make([]exportAttachment, len(e.Attachments))
	for i := range e.Attachments {
		a := &e.Attachments[i]
		out[i] = exportAttachment{Kind: a.Kind, Name: a.Name, MIME: a.MIME, Size: a.Size, Transcript: a.Transcript, Problem: a.Problem}
		if s.mediaDir != "" && validMediaFile(a.File) {
			out[i].URL = s.mediaURL(v, e.ID, i)
		}
	}
	return out
}

// writeMarkdownAttachments lists an entry's attachments in the Markdown
// export, under the question: kind, name, size and a link to the media
// route (absolute, so that it opens from the saved file), the transcript
// of a voice message, and why an attachment was not used.
func writeMarkdownAttachments(b *bytes.Buffer, origin string, as []exportAttachment) {
	if len(as) == 0 {
		return
	}
	b.WriteString("\n")
	for _, a := range as {
		b.WriteString("- ")
		if a.Kind == "voice" {
			b.WriteString("🎤 语音")
		} else {
			b.WriteString(kindLabel(a.Kind))
		}
		name := mdEscape(a.Name)
		if name == "" && a.Kind != "voice" {
			name = kindLabel(a.Kind)
		}
		if name != "" {
			b.WriteString(" ")
			if a.URL != "" {
				b.WriteString("[" + name + "](<" + origin + a.URL + ">)")
			} else {
				b.WriteString(name)
			}
		} else if a.URL != "" {
			b.WriteString(" [下载](<" + origin + a.URL + ">)")
		}
		if sz := humanSize(a.Size); sz != "" {
			b.WriteString("（" + sz + "）")
		}
		if a.Transcript != "" {
			b.WriteString("：" + mdEscape(a.Transcript))
		}
		if a.Problem != "" {
			b.WriteString(" *（" + mdEscape(a.Problem) + "）*")
		}
		b.WriteString("\n")
	}
}

// mdEscape makes text literal in Markdown on one line: punctuation that
// could start markup is backslash-escaped, line breaks become spaces.
func mdEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			b.WriteByte(' ')
		case r < 0x20 || r == 0x7f:
		case strings.ContainsRune("\\`*_{}[]()<>#+-.!|~&", r):
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
