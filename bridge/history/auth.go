package history

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// Sign-in, sessions and CSRF for the history page.
//
// Sign-in: a request without a session is sent to WeCom with a fresh random
// state. The state is (1) kept in bbolt as a single-use nonce for stateTTL
// and (2) bound to this browser by a short-lived HttpOnly cookie holding an
// HMAC over the state and the page to return to. The callback accepts the
// code only if the cookie's MAC matches the state in the URL (constant-time)
// and the nonce is still there to take, so a state works once, in the
// browser that started the sign-in, within stateTTL.
//
// Session: the cookie is TOKEN.MAC, where TOKEN is 32 random bytes and MAC an
// HMAC of it. The server keeps a record (user, expiry) under SHA-256(TOKEN),
// so logout revokes the session for real, and a copy of the database does not
// hold usable cookies. A cookie whose MAC is wrong is refused before the
// database is asked.

// b64url is strict: a cookie has one spelling, so re-encoded copies of a
// valid one are refused like any other.
var b64url = base64.RawURLEncoding.Strict()

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("history: crypto/rand failed: " + err.Error()) // never happens on Linux
	}
	return b
}

func hmacOf(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

// webSession is a signed-in user, as resolved from the request's cookie.
type webSession struct {
	user  string
	token string // the cookie's random part, for the CSRF token
}

func sessionRecordID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// session resolves the request's session cookie. Any failure — no cookie, a
// bad MAC, an unknown, revoked or expired session — is errNoSession.
func (w *Handler) session(ctx *fasthttp.RequestCtx, s *settings) (webSession, error) {
	token, ok := s.checkSessionCookie(string(ctx.Request.Header.Cookie(s.sessName)))
	if !ok {
		return webSession{}, errNoSession
	}
	rec, err := w.store.Session(sessionRecordID(token))
	if err != nil {
		if !errors.Is(err, kv.ErrNotFound) {
			w.log.Error("history page: cannot read session", "err", err)
		}
		return webSession{}, errNoSession
	}
	return webSession{user: rec.User, token: token}, nil
}

// sessionCookie is the cookie value of a session token: TOKEN.MAC.
func (s *settings) sessionCookie(token string) string {
	return token + "." + b64url.EncodeToString(hmacOf(s.sessKey, token))
}

// checkSessionCookie returns the token of a session cookie whose MAC is
// right; it does not ask the store whether the session lives.
func (s *settings) checkSessionCookie(raw string) (token string, ok bool) {
	token, sig, found := strings.Cut(raw, ".")
	if !found || len(token) != 43 {
		return "", false
	}
	got, err := b64url.DecodeString(sig)
	if err != nil || !hmac.Equal(got, hmacOf(s.sessKey, token)) {
		return "", false
	}
	return token, true
}

func (s *settings) csrfToken(sess webSession) string {
	return b64url.EncodeToString(hmacOf(s.csrfKey, sess.token))
}

func (s *settings) checkCSRF(sess webSession, got string) bool {
	want := s.csrfToken(sess)
	return len(got) == len(want) && hmac.Equal([]byte(got), []byte(want))
}

func (s *settings) setCookie(ctx *fasthttp.RequestCtx, name, value string, maxAge time.Duration) {
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey(name)
	c.SetValue(value)
	c.SetPath(s.cookiePath)
	c.SetHTTPOnly(true)
	c.SetSecure(s.secure)
	c.SetSameSite(fasthttp.CookieSameSiteLaxMode)
	if maxAge > 0 {
		c.SetMaxAge(int(maxAge / time.Second))
	} else {
		c.SetMaxAge(-1) // Max-Age=0: delete now
		c.SetExpire(fasthttp.CookieExpireDelete)
	}
	ctx.Response.Header.SetCookie(c)
}

// isWeComClient tells the WeCom in-app browser, whose User-Agent carries
// "wxwork", from any other browser.
func isWeComClient(ctx *fasthttp.RequestCtx) bool {
	return strings.Contains(strings.ToLower(string(ctx.UserAgent())), "wxwork")
}

// startLogin sends the browser to WeCom to sign in, and back to next after.
func (w *Handler) startLogin(ctx *fasthttp.RequestCtx, s *settings, next string) {
	cl := w.client(s.loginApp)
	if cl == nil {
		w.log.Error("history page: history.login_app names no configured app", "login_app", s.loginApp)
		w.message(ctx, s, fasthttp.StatusServiceUnavailable, msgUnavailable)
		return
	}
	if !s.safeNext(next) {
		next = s.base
	}
	// WeCom allows only a-zA-Z0-9 in state, at most 128 bytes.
	state := hex.EncodeToString(randomBytes(24))
	if err := w.store.PutNonce(stateNonce(state), w.now().Add(stateTTL)); err != nil {
		w.log.Error("history page: cannot store sign-in state", "err", err)
		w.message(ctx, s, fasthttp.StatusServiceUnavailable, msgUnavailable)
		return
	}
	s.setCookie(ctx, s.stateName, s.stateCookie(state, next), stateTTL)
	redirect := s.origin + s.base + "/callback"
	var target string
	if isWeComClient(ctx) {
		target = cl.OAuthURL(redirect, state)
	} else {
		target = cl.QRLoginURL(redirect, state)
	}
	ctx.Response.Header.Set("Location", target)
	ctx.SetStatusCode(fasthttp.StatusFound)
}

func stateNonce(state string) string { return "history-state:" + state }

// safeNext accepts only a path of this page (it starts with base, so it can
// never be read as another host), of a size that fits in a cookie.
func (s *settings) safeNext(next string) bool {
	if next != s.base && !strings.HasPrefix(next, s.base+"/") && !strings.HasPrefix(next, s.base+"?") {
		return false
	}
	if len(next) > maxNext {
		return false
	}
	for i := 0; i < len(next); i++ {
		if next[i] < 0x20 || next[i] == 0x7f {
			return false
		}
	}
	return true
}

// maxNext bounds the page remembered across the sign-in; a longer one (a
// huge query) falls back to the page itself.
const maxNext = 1024

// callback finishes a sign-in: check the state, exchange the code, start a
// session.
func (w *Handler) callback(ctx *fasthttp.RequestCtx, s *settings) {
	args := ctx.QueryArgs()
	state := string(args.Peek("state"))
	code := string(args.Peek("code"))
	cookie := string(ctx.Request.Header.Cookie(s.stateName))
	s.setCookie(ctx, s.stateName, "", 0) // whatever happens, the state is spent
	log := w.log.With("remote", ctx.RemoteIP().String())

	next, ok := s.checkState(state, cookie)
	if !ok {
		log.Warn("history sign-in refused: state does not match this browser's")
		w.message(ctx, s, fasthttp.StatusBadRequest, msgBadState)
		return
	}
	fresh, err := w.store.TakeNonce(stateNonce(state))
	if err != nil {
		log.Error("history page: cannot check sign-in state", "err", err)
		w.message(ctx, s, fasthttp.StatusServiceUnavailable, msgUnavailable)
		return
	}
	if !fresh {
		log.Warn("history sign-in refused: state already used or expired")
		w.message(ctx, s, fasthttp.StatusBadRequest, msgBadState)
		return
	}
	if code == "" {
		// The user declined, or WeCom did not sign them in.
		w.message(ctx, s, fasthttp.StatusBadRequest, msgNoCode)
		return
	}
	cl := w.client(s.loginApp)
	if cl == nil {
		w.message(ctx, s, fasthttp.StatusServiceUnavailable, msgUnavailable)
		return
	}
	cctx, cancel := context.WithTimeout(w.root, wecomTimeout)
	info, err := cl.UserInfo(cctx, code)
	cancel()
	if err != nil {
		var ae *wecom.APIError
		if errors.As(err, &ae) && (ae.Code == 40029 || ae.Code == 41008) {
			log.Warn("history sign-in refused: code invalid, expired or used", "errcode", ae.Code)
			w.message(ctx, s, fasthttp.StatusBadRequest, msgBadCode)
			return
		}
		log.Error("history sign-in: cannot exchange the code with WeCom", "err", err)
		w.message(ctx, s, fasthttp.StatusBadGateway, msgWeComDown)
		return
	}
	if info.UserID == "" {
		log.Info("history sign-in refused: not a member of this corp")
		w.message(ctx, s, fasthttp.StatusForbidden, msgNotMember)
		return
	}
	token := b64url.EncodeToString(randomBytes(32))
	expires := w.now().Add(s.ttl)
	if err := w.store.PutSession(kv.Session{ID: sessionRecordID(token), User: info.UserID, Expires: expires}); err != nil {
		log.Error("history page: cannot store session", "err", err)
		w.message(ctx, s, fasthttp.StatusServiceUnavailable, msgUnavailable)
		return
	}
	s.setCookie(ctx, s.sessName, s.sessionCookie(token), s.ttl)
	log.Info("history sign-in", "user", info.UserID, "app", s.loginApp)
	ctx.Response.Header.Set("Location", next)
	ctx.SetStatusCode(fasthttp.StatusSeeOther)
}

// stateCookie binds a sign-in's state and the page to return to to this
// browser: MAC.NEXT, with NEXT in the clear (it is only a path of the page).
func (s *settings) stateCookie(state, next string) string {
	return b64url.EncodeToString(hmacOf(s.stateKey, state, next)) + "." + b64url.EncodeToString([]byte(next))
}

// checkState verifies the state cookie against the state WeCom sent back and
// returns the page to go to.
func (s *settings) checkState(state, cookie string) (next string, ok bool) {
	if state == "" || len(state) > 128 || cookie == "" {
		return "", false
	}
	sig, enc, found := strings.Cut(cookie, ".")
	if !found {
		return "", false
	}
	got, err1 := b64url.DecodeString(sig)
	n, err2 := b64url.DecodeString(enc)
	if err1 != nil || err2 != nil {
		return "", false
	}
	if !hmac.Equal(got, hmacOf(s.stateKey, state, string(n))) {
		return "", false
	}
	next = string(n)
	if !s.safeNext(next) {
		next = s.base
	}
	return next, true
}

// logout revokes the session. Without a valid CSRF token nothing changes.
func (w *Handler) logout(ctx *fasthttp.RequestCtx, s *settings) {
	sess, err := w.session(ctx, s)
	if err != nil {
		// No session to end; clear a stale cookie anyway.
		s.setCookie(ctx, s.sessName, "", 0)
		ctx.Response.Header.Set("Location", s.base+"/signed-out")
		ctx.SetStatusCode(fasthttp.StatusSeeOther)
		return
	}
	if !s.checkCSRF(sess, string(ctx.PostArgs().Peek("csrf"))) {
		w.log.Warn("history logout refused: bad CSRF token", "user", sess.user, "remote", ctx.RemoteIP().String())
		w.message(ctx, s, fasthttp.StatusForbidden, msgBadCSRF)
		return
	}
	if err := w.store.DeleteSession(sessionRecordID(sess.token)); err != nil {
		w.log.Error("history page: cannot delete session", "err", err)
		w.message(ctx, s, fasthttp.StatusServiceUnavailable, msgUnavailable)
		return
	}
	s.setCookie(ctx, s.sessName, "", 0)
	w.log.Info("history sign-out", "user", sess.user)
	ctx.Response.Header.Set("Location", s.base+"/signed-out")
	ctx.SetStatusCode(fasthttp.StatusSeeOther)
}
