package bridge

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// The history page (issue 5): employees sign in with WeCom and read their
// own questions and answers. Everything lives under {public_url}/history:
//
//	GET  /history               the page (?q= search, ?before= cursor, ?user= for admins)
//	GET  /history/login         start a WeCom sign-in (in-app OAuth or QR login)
//	GET  /history/callback      WeCom redirects back here with code and state
//	POST /history/logout        end the session (form with a CSRF token)
//	GET  /history/signed-out    the page shown after logging out
//	GET  /history/export.md     the whole history as Markdown (oldest first)
//	GET  /history/export.json   the same as JSON
//	GET  /history/static/...    embedded CSS and JS, cacheable forever
//
// The daemon sees paths without the path of public_url (a reverse proxy that
// serves it under https://host/prefix strips the prefix), but links and
// redirects it sends to browsers carry it. Both forms are accepted.

const (
	historyPath = "/history"

	// stateTTL bounds how long a sign-in may take at WeCom.
	stateTTL = 10 * time.Minute
	// pageSize is how many questions one page shows.
	pageSize = 20
	// maxSearch bounds the search text, in runes.
	maxSearch = 100
	// wecomTimeout bounds the code exchange with WeCom.
	wecomTimeout = 10 * time.Second
)

// web serves the employee history page.
type web struct {
	b   *Bridge
	set atomic.Pointer[webSettings]
	ui  *webUI
}

// webSettings is everything the page derives from one config version; a
// reload swaps it atomically.
type webSettings struct {
	prefix    string // path of public_url, without trailing slash: "" or "/bot"
	base      string // prefix + "/history": where browsers find the page
	origin    string // scheme://host[:port] of public_url
	secure    bool   // public_url is https: cookies are Secure and __Host-
	loginApp  string
	ttl       time.Duration
	admins    map[string]bool // lower-case userids
	sessName  string
	stateName string
	// cookiePath scopes the cookies: "/" for __Host- cookies (required),
	// else the page's own path.
	cookiePath string

	// Keys derived from the session key, one per purpose.
	sessKey, stateKey, csrfKey []byte
}

func newWeb(b *Bridge, cfg *Config) (*web, error) {
	w := &web{b: b}
	ui, err := newUI()
	if err != nil {
		return nil, fmt.Errorf("bridge: history page: %w", err)
	}
	w.ui = ui
	s, err := w.settings(cfg)
	if err != nil {
		return nil, err
	}
	w.set.Store(s)
	return w, nil
}

// reload applies a new config. If it cannot (the stored key is unreadable),
// the old settings stay and the problem is logged.
func (w *web) reload(cfg *Config) {
	s, err := w.settings(cfg)
	if err != nil {
		w.b.log.Error("history page: config reload ignored", "err", err)
		return
	}
	w.set.Store(s)
}

func (w *web) settings(cfg *Config) (*webSettings, error) {
	u, err := url.Parse(cfg.Server.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("bridge: history page: server.public_url: %w", err)
	}
	prefix := strings.TrimRight(u.EscapedPath(), "/")
	s := &webSettings{
		prefix:   prefix,
		base:     prefix + historyPath,
		origin:   u.Scheme + "://" + u.Host,
		secure:   u.Scheme == "https",
		loginApp: cfg.History.LoginApp,
		ttl:      cfg.History.SessionTTL,
		admins:   map[string]bool{},
	}
	if s.ttl <= 0 {
		s.ttl = DefaultSessionTTL
	}
	for _, a := range cfg.History.Admins {
		if a = strings.TrimSpace(a); a != "" {
			s.admins[strings.ToLower(a)] = true // WeCom userids ignore case
		}
	}
	if s.secure {
		// __Host- cookies can only be set by this exact host, over https,
		// for the whole site: a sibling subdomain cannot plant one.
		s.sessName, s.stateName, s.cookiePath = "__Host-wb_session", "__Host-wb_state", "/"
	} else {
		s.sessName, s.stateName, s.cookiePath = "wb_session", "wb_state", s.base
	}
	key := []byte(cfg.History.SessionKey.Value())
	if len(key) == 0 {
		key, err = w.b.store.SecretKey("cookie")
		if err != nil {
			return nil, fmt.Errorf("bridge: history page: session key: %w", err)
		}
	}
	s.sessKey = deriveKey(key, "wecom-bridge/history/session")
	s.stateKey = deriveKey(key, "wecom-bridge/history/state")
	s.csrfKey = deriveKey(key, "wecom-bridge/history/csrf")
	return s, nil
}

// deriveKey makes a key for one purpose, so a MAC made for one cookie can never
// be replayed as another.
func deriveKey(key []byte, purpose string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// local strips the public_url path prefix, if the request still has it, and
// reports whether the path is the history page's.
func (s *webSettings) local(path []byte) ([]byte, bool) {
	if s.prefix != "" && bytes.HasPrefix(path, []byte(s.prefix+"/")) {
		path = path[len(s.prefix):]
	}
	if string(path) == historyPath || bytes.HasPrefix(path, []byte(historyPath+"/")) {
		return path[len(historyPath):], true
	}
	return nil, false
}

func (w *web) handles(path []byte) bool {
	_, ok := w.set.Load().local(path)
	return ok
}

func (w *web) serve(ctx *fasthttp.RequestCtx) {
	s := w.set.Load()
	sub, _ := s.local(ctx.Path())
	setSecurityHeaders(ctx)
	switch {
	case len(sub) == 0 || string(sub) == "/":
		w.onlyGet(ctx, s, w.page)
	case string(sub) == "/login":
		w.onlyGet(ctx, s, func(ctx *fasthttp.RequestCtx, s *webSettings) { w.startLogin(ctx, s, s.base) })
	case string(sub) == "/callback":
		w.onlyGet(ctx, s, w.callback)
	case string(sub) == "/logout":
		if !ctx.IsPost() {
			ctx.Response.Header.Set("Allow", "POST")
			w.message(ctx, s, fasthttp.StatusMethodNotAllowed, msgMethod)
			return
		}
		w.logout(ctx, s)
	case string(sub) == "/signed-out":
		w.onlyGet(ctx, s, func(ctx *fasthttp.RequestCtx, s *webSettings) {
			w.message(ctx, s, fasthttp.StatusOK, msgSignedOut)
		})
	case string(sub) == "/export.md":
		w.onlyGet(ctx, s, func(ctx *fasthttp.RequestCtx, s *webSettings) { w.export(ctx, s, "md") })
	case string(sub) == "/export.json":
		w.onlyGet(ctx, s, func(ctx *fasthttp.RequestCtx, s *webSettings) { w.export(ctx, s, "json") })
	case bytes.HasPrefix(sub, []byte("/static/")):
		w.onlyGet(ctx, s, func(ctx *fasthttp.RequestCtx, _ *webSettings) { w.ui.static(ctx, string(sub[len("/static/"):])) })
	default:
		w.message(ctx, s, fasthttp.StatusNotFound, msgNotFound)
	}
}

func (w *web) onlyGet(ctx *fasthttp.RequestCtx, s *webSettings, h func(*fasthttp.RequestCtx, *webSettings)) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		w.message(ctx, s, fasthttp.StatusMethodNotAllowed, msgMethod)
		return
	}
	h(ctx, s)
}

// historyCSP allows only this origin's own files: no inline script or style, no
// plugins, and the page cannot be framed by another site.
const historyCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"

func setSecurityHeaders(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", historyCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "SAMEORIGIN")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// errNoSession is why a request without a valid session gets the sign-in.
var errNoSession = errors.New("no valid session")
