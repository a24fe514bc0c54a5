package history

import (
	"io"
	"log/slog"
	"mime"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// fuzzSettings are the settings of a page served under /ai over https.
func fuzzSettings(f *testing.F) *settings {
	f.Helper()
	st, err := kv.Open(filepath.Join(f.TempDir(), "f.db"), kv.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	h, err := New(Config{PublicURL: "https://bot.example.com/ai", LoginApp: "helpdesk"}, Deps{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Store: st,
		LoginClient: func(string) LoginClient { return nil },
	})
	if err != nil {
		f.Fatal(err)
	}
	return h.set.Load()
}

// The state cookie and the state in the callback URL come from the
// browser. Whatever they are, checking them never panics, accepts only a
// cookie this page made for that very state, and never returns a page to
// go to outside /ai/history.
func FuzzCheckState(f *testing.F) {
	s := fuzzSettings(f)
	f.Add("0123456789abcdef", "/ai/history?q=x", "")
	f.Add("", "", "x.y")
	f.Add("ab", "//evil.example/", "..")
	f.Add(strings.Repeat("a", 129), "/ai/history", "")
	f.Fuzz(func(t *testing.T, state, next, cookie string) {
		// A cookie the attacker made up: at most accepted when it is the
		// one this page makes, and never a way off the page.
		if got, ok := s.checkState(state, cookie); ok {
			if !s.safeNext(got) {
				t.Fatalf("returns to %q", got)
			}
			if _, enc, _ := strings.Cut(cookie, "."); cookie != s.stateCookie(state, decodeOr(enc)) {
				t.Fatalf("accepted a cookie %q this page did not make, for state %q", cookie, state)
			}
		}
		// The cookie this page makes: accepted for its own state only, and
		// the page to return to is next if safe, else the page itself.
		good := s.stateCookie(state, next)
		got, ok := s.checkState(state, good)
		valid := state != "" && len(state) <= 128
		if ok != valid {
			t.Fatalf("own cookie for state %q: ok %v", state, ok)
		}
		if ok && got != next && (s.safeNext(next) || got != s.base) {
			t.Fatalf("own cookie: returns to %q, want %q", got, next)
		}
		if _, ok := s.checkState(state+"x", good); ok && len(state) < 128 {
			t.Fatalf("cookie for %q accepted for %q", state, state+"x")
		}
	})
}

// The session cookie comes from the browser: only a TOKEN.MAC this page
// signed is accepted, and it yields exactly that token.
func FuzzSessionCookie(f *testing.F) {
	s := fuzzSettings(f)
	f.Add(strings.Repeat("A", 43) + "." + strings.Repeat("A", 43))
	f.Add("x.y")
	f.Add(".")
	f.Add(s.sessionCookie(strings.Repeat("B", 43)))
	f.Fuzz(func(t *testing.T, raw string) {
		token, ok := s.checkSessionCookie(raw)
		if ok && raw != s.sessionCookie(token) {
			// base64url decoding is lax about nothing here (no padding,
			// strict alphabet), so a second spelling of a MAC is a bug.
			t.Fatalf("accepted %q for token %q", raw, token)
		}
		if tok := raw[:min(43, len(raw))]; len(tok) == 43 && !strings.Contains(tok, ".") { // tokens are base64url
			if got, ok := s.checkSessionCookie(s.sessionCookie(tok)); !ok || got != tok {
				t.Fatalf("own cookie for %q: %q %v", tok, got, ok)
			}
		}
	})
}

// Answers are text an LLM wrote and may repeat anything a user fed it:
// whatever the Markdown, the HTML has no tag outside the allowed ones, no
// event handler or style, and links only to http(s), mailto, tel or a
// fragment.
func FuzzRenderMarkdown(f *testing.F) {
	md := newMarkdown()
	for _, s := range []string{
		"**粗体** `代码`", "<script>alert(1)</script>", "[x](javascript:alert(1))", "![x](https://e.example/p.png)",
		"<img src=x onerror=alert(1)>", "| a |\n|---|\n| <b>1</b> |", "www.example.com", "<details open ontoggle=x>",
		"[a]: javascript:x\n\n[b][a]", "```\n<script>\n```", "<a href=\"javascript:x\">y</a>",
	} {
		f.Add(s)
	}
	allowed := map[string]bool{
		"p": true, "br": true, "strong": true, "em": true, "code": true, "pre": true, "ul": true, "ol": true, "li": true,
		"blockquote": true, "hr": true, "h1": true, "h2": true, "h3": true, "h4": true, "h5": true, "h6": true,
		"table": true, "thead": true, "tbody": true, "tr": true, "th": true, "td": true, "del": true, "a": true, "input": true,
	}
	f.Fuzz(func(t *testing.T, src string) {
		out := string(md.render(src))
		for _, m := range reTag.FindAllStringSubmatch(out, -1) {
			tag := strings.ToLower(m[1])
			if !allowed[tag] {
				t.Fatalf("tag <%s%s> from %q", m[1], m[2], src)
			}
			for _, a := range reAttr.FindAllStringSubmatch(m[2], -1) {
				name, val := strings.ToLower(a[1]), strings.ToLower(strings.TrimSpace(a[2]))
				if strings.HasPrefix(name, "on") || name == "style" || name == "src" || name == "srcdoc" {
					t.Fatalf("attribute %s in <%s%s> from %q", name, m[1], m[2], src)
				}
				if name == "href" && !(strings.HasPrefix(val, "http://") || strings.HasPrefix(val, "https://") ||
					strings.HasPrefix(val, "mailto:") || strings.HasPrefix(val, "tel:") || strings.HasPrefix(val, "#")) {
					t.Fatalf("link to %q from %q", val, src)
				}
			}
		}
	})
}

func decodeOr(enc string) string {
	b, err := b64url.DecodeString(enc)
	if err != nil {
		return "\x00invalid"
	}
	return string(b)
}

// The path of an attachment request comes from the browser; it parses
// only as two plain decimal numbers (entry id > 0), and the numbers print
// back as the same path.
func FuzzMediaPath(f *testing.F) {
	for _, s := range []string{"7/0", "7/", "/0", "0/0", "+7/0", "7/-1", "7/0/1", "18446744073709551615/9999", "18446744073709551616/0", "07/00", "7/1e3", "７/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rest string) {
		id, n, ok := parseMediaPath(rest)
		if !ok {
			return
		}
		if id == 0 || n < 0 || n > 9999 {
			t.Fatalf("%q: id %d n %d", rest, id, n)
		}
		a, b, _ := strings.Cut(rest, "/")
		if strings.TrimLeft(a, "0") != strconv.FormatUint(id, 10) || (strings.TrimLeft(b, "0") != strconv.Itoa(n) && !(n == 0 && strings.Trim(b, "0") == "")) {
			t.Fatalf("%q parsed as %d/%d", rest, id, n)
		}
	})
}

// An attachment's name and type come from whoever sent the file. Whatever
// they are, the Content-Disposition header is plain printable ASCII with
// no quote inside the fallback name, filename* decodes to the name shown
// for saving, and that name has no path separator or control character;
// the Content-Type is never a type a browser would run as a document.
func FuzzMediaHeaders(f *testing.F) {
	f.Add("合同 (最终版).pdf", "application/pdf", "7-0.pdf")
	f.Add("evil\r\nSet-Cookie: a=b\".pdf", "text/html; charset=utf-8", "x")
	f.Add("../../etc/passwd", "image/svg+xml", "..")
	f.Add("\xff\xfe", "IMAGE/PNG", "")
	f.Add("...", "application/xhtml+xml; q=\"", "a/b")
	f.Fuzz(func(t *testing.T, name, mimeType, file string) {
		a := &kv.Attachment{Kind: "file", Name: name, MIME: mimeType, File: file}
		dn := downloadName(a)
		if dn == "" || strings.ContainsAny(dn, "/\\") || !utf8.ValidString(dn) {
			t.Fatalf("download name %q", dn)
		}
		for _, r := range dn {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
				t.Fatalf("download name %q has a control character", dn)
			}
		}
		cd := contentDisposition("attachment", dn)
		for i := 0; i < len(cd); i++ {
			if cd[i] < 0x20 || cd[i] >= 0x7f {
				t.Fatalf("header %q has byte %#x", cd, cd[i])
			}
		}
		_, rest, ok := strings.Cut(cd, `; filename="`)
		fallback, enc, ok2 := strings.Cut(rest, `"; filename*=UTF-8''`)
		if !ok || !ok2 || strings.ContainsAny(fallback, `"\;`) || strings.ContainsAny(enc, `"; `) {
			t.Fatalf("header %q", cd)
		}
		if got, err := url.PathUnescape(enc); err != nil || got != dn {
			t.Fatalf("filename* %q decodes to %q, want %q", enc, got, dn)
		}
		ct, inline := mediaKind(a)
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || activeType(mt) || (inline && !inlineImages[mt]) {
			t.Fatalf("MIME %q served as %q (inline %v)", mimeType, ct, inline)
		}
		if validMediaFile(file) && (strings.ContainsAny(file, "/\\\x00") || strings.Trim(file, ".") == "" || filepath.Base(file) != file || filepath.Clean(file) != file) {
			t.Fatalf("file %q accepted", file)
		}
	})
}
