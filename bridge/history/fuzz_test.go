package history

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

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
