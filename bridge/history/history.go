package history

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/wecom"
)

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

	// DefaultSessionTTL is how long a sign-in lasts when Config.SessionTTL
	// is not set.
	DefaultSessionTTL = 7 * 24 * time.Hour
)

// Config is what the page needs from the daemon's config. The daemon fills
// it from its own [server] and [history] sections; a reload passes a new one.
type Config struct {
	// PublicURL is server.public_url: where browsers reach the daemon
	// (scheme, host and an optional path the reverse proxy strips).
	PublicURL string
	// LoginApp names the app whose agentid signs users in (history.login_app);
	// it is passed to Deps.LoginClient.
	LoginApp string
	// SessionKey signs the cookies (history.session_key); empty uses a key
	// generated once and kept in the store.
	SessionKey []byte
	// SessionTTL is how long a sign-in lasts; 0 means DefaultSessionTTL.
	SessionTTL time.Duration
	// Admins are the userids that may view anyone's history (history.admins);
	// case does not matter.
	Admins []string
	// Retention is how long the daemon keeps history (storage.history_retention);
	// the page tells users, so that old questions do not vanish unexplained.
	// 0 means forever.
	Retention time.Duration
	// MediaDir is the directory of the questions' attachment files (the
	// storage path + ".media"); kv.Attachment.File is a plain name inside
	// it. Empty: attachments are listed, but none is served.
	MediaDir string
}

// Store is the state the page reads and writes. *kv.Store satisfies it.
type Store interface {
	History(q kv.HistoryQuery) (entries []kv.Entry, next uint64, err error)
	// Entry is the history entry id if it is user's (kv.ErrNotFound if it
	// is not, or does not exist).
	Entry(user string, id uint64) (kv.Entry, error)
	Session(id string) (kv.Session, error)
	PutSession(sess kv.Session) error
	DeleteSession(id string) error
	PutNonce(key string, expires time.Time) error
	TakeNonce(key string) (bool, error)
	SecretKey(name string) ([]byte, error)
}

var _ Store = (*kv.Store)(nil)

// LoginClient is the WeCom client of the login app: it builds the sign-in
// links and exchanges the code. *wecom.Client satisfies it.
type LoginClient interface {
	OAuthURL(redirectURI, state string) string
	QRLoginURL(redirectURI, state string) string
	UserInfo(ctx context.Context, code string) (*wecom.UserInfo, error)
}

var _ LoginClient = (*wecom.Client)(nil)

// Deps are the collaborators of a Handler.
type Deps struct {
	// Log is the daemon's logger (required).
	Log *slog.Logger
	// Store is the opened state (required).
	Store Store
	// LoginClient returns the current client of the named app, or nil when
	// no such app is configured (required). It is asked on every sign-in,
	// since the daemon swaps its clients on reload.
	LoginClient func(app string) LoginClient
	// Context bounds the calls to WeCom; it should end when the daemon
	// shuts down. Nil uses context.Background().
	Context context.Context
	// Now is the clock; nil uses time.Now.
	Now func() time.Time
}

// Handler serves the employee history page.
type Handler struct {
	log    *slog.Logger
	store  Store
	client func(app string) LoginClient
	root   context.Context
	now    func() time.Time
	set    atomic.Pointer[settings]
	ui     *webUI
}

// settings is everything the page derives from one config version; a
// reload swaps it atomically.
type settings struct {
	prefix    string // path of public_url, without trailing slash: "" or "/bot"
	base      string // prefix + "/history": where browsers find the page
	origin    string // scheme://host[:port] of public_url
	secure    bool   // public_url is https: cookies are Secure and __Host-, HSTS is sent
	loginApp  string
	ttl       time.Duration
	admins    map[string]bool // lower-case userids
	keep      string          // the retention note; "" when history is kept forever
	mediaDir  string          // "" when attachments are not served
	sessName  string
	stateName string
	// cookiePath scopes the cookies: "/" for __Host- cookies (required),
	// else the page's own path.
	cookiePath string

	// Keys derived from the session key, one per purpose.
	sessKey, stateKey, csrfKey []byte
}

// New builds the page's handler. It makes no network calls; it may create
// the stored cookie key.
func New(cfg Config, d Deps) (*Handler, error) {
	if d.Log == nil || d.Store == nil || d.LoginClient == nil {
		return nil, errors.New("history: Deps.Log, Deps.Store and Deps.LoginClient are required")
	}
	if d.Context == nil {
		d.Context = context.Background()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	w := &Handler{log: d.Log, store: d.Store, client: d.LoginClient, root: d.Context, now: d.Now}
	ui, err := newUI()
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	w.ui = ui
	s, err := w.settings(cfg)
	if err != nil {
		return nil, err
	}
	w.set.Store(s)
	return w, nil
}

// Reload applies a new config. If it cannot (public_url does not parse, the
// stored key is unreadable), the old settings stay and the error is
// returned (and logged).
func (w *Handler) Reload(cfg Config) error {
	s, err := w.settings(cfg)
	if err != nil {
		w.log.Error("history page: config reload ignored", "err", err)
		return err
	}
	w.set.Store(s)
	return nil
}

func (w *Handler) settings(cfg Config) (*settings, error) {
	u, err := url.Parse(cfg.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("history: server.public_url: %w", err)
	}
	prefix := strings.TrimRight(u.EscapedPath(), "/")
	s := &settings{
		prefix:   prefix,
		base:     prefix + historyPath,
		origin:   u.Scheme + "://" + u.Host,
		secure:   u.Scheme == "https",
		loginApp: cfg.LoginApp,
		ttl:      cfg.SessionTTL,
		keep:     retentionNote(cfg.Retention),
		mediaDir: cfg.MediaDir,
		admins:   map[string]bool{},
	}
	if s.ttl <= 0 {
		s.ttl = DefaultSessionTTL
	}
	for _, a := range cfg.Admins {
		if a = strings.TrimSpace(a); a != "" {
			s.admins[normUser(a)] = true
		}
	}
	if s.secure {
		// __Host- cookies can only be set by this exact host, over https,
		// for the whole site: a sibling subdomain cannot plant one.
		s.sessName, s.stateName, s.cookiePath = "__Host-wb_session", "__Host-wb_state", "/"
	} else {
		s.sessName, s.stateName, s.cookiePath = "wb_session", "wb_state", s.base
	}
	key := cfg.SessionKey
	if len(key) == 0 {
		key, err = w.store.SecretKey("cookie")
		if err != nil {
			return nil, fmt.Errorf("history: session key: %w", err)
		}
	}
	s.sessKey = deriveKey(key, "wecom-bridge/history/session")
	s.stateKey = deriveKey(key, "wecom-bridge/history/state")
	s.csrfKey = deriveKey(key, "wecom-bridge/history/csrf")
	return s, nil
}

// retentionNote tells users how long their history stays.
func retentionNote(d time.Duration) string {
	switch {
	case d <= 0:
		return ""
	case d < 48*time.Hour:
		return fmt.Sprintf("问答记录保留 %d 小时，更早的会自动删除。", int((d+time.Hour-1)/time.Hour))
	default:
		return fmt.Sprintf("问答记录保留 %d 天，更早的会自动删除。", int(d/(24*time.Hour)))
	}
}

// normUser is the form of a userid that lookups and comparisons use: WeCom
// treats userids case-insensitively (and sends them lower-case), so "BOB"
// and "bob" are one member. Only ASCII letters fold; the rest is kept.
func normUser(u string) string {
	for i := 0; i < len(u); i++ {
		if c := u[i]; 'A' <= c && c <= 'Z' {
			b := []byte(u)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return u
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
func (s *settings) local(path []byte) ([]byte, bool) {
	if s.prefix != "" && bytes.HasPrefix(path, []byte(s.prefix+"/")) {
		path = path[len(s.prefix):]
	}
	if string(path) == historyPath || bytes.HasPrefix(path, []byte(historyPath+"/")) {
		return path[len(historyPath):], true
	}
	return nil, false
}

// Handles reports whether path is the page's: /history or below it, with or
// without the path of public_url.
func (w *Handler) Handles(path []byte) bool {
	_, ok := w.set.Load().local(path)
	return ok
}

// Serve answers a request for which Handles is true.
func (w *Handler) Serve(ctx *fasthttp.RequestCtx) {
	s := w.set.Load()
	sub, _ := s.local(ctx.Path())
	s.setSecurityHeaders(ctx)
	switch {
	case len(sub) == 0 || string(sub) == "/":
		w.onlyGet(ctx, s, w.page)
	case string(sub) == "/login":
		w.onlyGet(ctx, s, func(ctx *fasthttp.RequestCtx, s *settings) { w.startLogin(ctx, s, s.base) })
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
		w.onlyGet(ctx, s, func(ctx *fasthttp.RequestCtx, s *settings) {
			w.message(ctx, s, fasthttp.StatusOK, msgSignedOut)
		})
	case string(sub) == "/export.md":
		w.onlyGet(ctx, s, func(ctx *fasthttp.RequestCtx, s *settings) { w.export(ctx, s, "md") })
	case string(sub) == "/export.json":
		w.onlyGet(ctx, s, func(ctx *fasthttp.RequestCtx, s *settings) { w.export(ctx, s, "json") })
	case bytes.HasPrefix(sub, []byte(mediaPath)):
		w.onlyGet(ctx, s, func(ctx *fasthttp.RequestCtx, s *settings) { w.media(ctx, s, string(sub[len(mediaPath):])) })
	case bytes.HasPrefix(sub, []byte("/static/")):
		w.onlyGet(ctx, s, func(ctx *fasthttp.RequestCtx, s *settings) {
			if !w.ui.static(ctx, string(sub[len("/static/"):])) {
				// Not ctx.Error: it would drop the security headers.
				w.message(ctx, s, fasthttp.StatusNotFound, msgNotFound)
			}
		})
	default:
		w.message(ctx, s, fasthttp.StatusNotFound, msgNotFound)
	}
}

func (w *Handler) onlyGet(ctx *fasthttp.RequestCtx, s *settings, h func(*fasthttp.RequestCtx, *settings)) {
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

// hsts tells browsers to use https only, for a year, once they have seen
// the page over https.
const hsts = "max-age=31536000"

// setSecurityHeaders sets the headers every response of the page carries:
// static files, redirects and errors too.
func (s *settings) setSecurityHeaders(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	if s.secure {
		h.Set("Strict-Transport-Security", hsts)
	}
	h.Set("Content-Security-Policy", historyCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "SAMEORIGIN")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// errNoSession is why a request without a valid session gets the sign-in.
var errNoSession = errors.New("no valid session")
