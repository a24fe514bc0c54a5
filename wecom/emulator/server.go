package emulator

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults for Options.
const (
	DefaultTokenTTL       = 7200 * time.Second
	DefaultCodeTTL        = 5 * time.Minute
	DefaultPerMinuteLimit = 30
	DefaultPerHourLimit   = 1000
	DefaultTruncateBytes  = 2048

	// DefaultDuplicateCheckInterval is the duplicate window of a request
	// that sets enable_duplicate_check without duplicate_check_interval.
	DefaultDuplicateCheckInterval = 1800 * time.Second
	// MaxDuplicateCheckInterval is the longest duplicate window WeCom
	// accepts; longer intervals are cut to it.
	MaxDuplicateCheckInterval = 4 * time.Hour

	maxRequestBody = 2 << 20
	sweepEvery     = 256 // sends between sweeps of expired duplicate records
)

// DropReason says why message/send answered errcode 0 but did not deliver.
type DropReason string

// Reasons for a silent drop.
const (
	// DropDuplicate: enable_duplicate_check was set and an equal request
	// (the whole JSON, compared after decoding) arrived within its
	// duplicate_check_interval.
	DropDuplicate DropReason = "duplicate"
	// DropMinuteLimit: the member already received PerMinuteLimit messages
	// from the app in the last 60 seconds.
	DropMinuteLimit DropReason = "per-minute limit"
	// DropHourLimit: the member already received PerHourLimit messages
	// from the app in the last hour.
	DropHourLimit DropReason = "per-hour limit"
)

// Options tunes a Server. Zero values take the defaults.
type Options struct {
	// Listener is where the server accepts connections; default a new
	// listener on 127.0.0.1 with a free port. The server closes it.
	Listener net.Listener
	// Now is the server's clock, used for token and code expiry, the
	// per-member budget and the duplicate check: they count by arrival
	// time on this clock, as WeCom counts by its own. Default time.Now.
	Now func() time.Time
	// TokenTTL is the access token lifetime (expires_in); default 7200s.
	TokenTTL time.Duration
	// CodeTTL is the OAuth code lifetime; default 5 minutes.
	CodeTTL time.Duration
	// PerMinuteLimit is how many messages one member may receive from one
	// app per minute before further ones are silently dropped; default 30.
	PerMinuteLimit int
	// PerHourLimit is the same budget per hour; default 1000.
	PerHourLimit int
	// MediaTTL is how long a media_id from AddMedia stays valid; default
	// DefaultMediaTTL (three days).
	MediaTTL time.Duration
	// TruncateBytes is the content length past which message/send
	// truncates; default 2048.
	TruncateBytes int
}

// SentMessage is one delivery of a message/send call to one member, or,
// in Dropped, one that was silently dropped.
type SentMessage struct {
	// CorpID and AgentID identify the sending app.
	CorpID  string
	AgentID int64
	// ToUser is the recipient's UserID as registered with AddUser.
	ToUser string
	// MsgType is "text" or "markdown".
	MsgType string
	// Content is what the member sees: the request's content cut to
	// Options.TruncateBytes.
	Content string
	// Truncated reports whether Content was cut.
	Truncated bool
	// MsgID is the msgid answered to the call; one call to several members
	// shares it.
	MsgID string
	// At is the server time of the call.
	At time.Time
	// DuplicateCheck reports whether the call enabled
	// enable_duplicate_check.
	DuplicateCheck bool
	// Recalled reports whether message/recall withdrew the message.
	Recalled bool
	// Drop is why the message was not delivered; empty in Sent.
	Drop DropReason
}

type app struct {
	corpID  string
	secret  string
	agentID int64
	name    string
}

type user struct {
	id          string
	departments []int64
}

type token struct {
	app     *app
	expires time.Time
}

type code struct {
	corpID  string
	userID  string
	expires time.Time
}

type memberKey struct {
	corpID  string
	agentID int64
	user    string
}

type dupKey struct {
	corpID  string
	agentID int64
	body    string // canonical request JSON
}

type dupEntry struct {
	msgID string
	until time.Time
}

type failure struct {
	status  int // HTTP status, or 0 for an errcode answer
	errcode int
	errmsg  string
}

// Server is an embedded WeCom API server speaking the documented wire
// format: gettoken, message/send, message/recall, auth/getuserinfo,
// user/get, agent/get, media/get, and the in-app OAuth and browser login
// pages. It
// records every delivery and every silent drop and can inject errors. All
// methods are safe for concurrent use.
//
// Members (AddUser) belong to every corp and are visible to every app.
type Server struct {
	hs     *http.Server
	mux    *http.ServeMux
	url    string
	opts   Options
	served chan struct{} // closed when Serve returns

	connMu  sync.Mutex
	fresh   map[net.Conn]struct{} // connections that have sent no request yet
	closing bool

	mu         sync.Mutex
	apps       []*app
	users      map[string]*user // by lower-cased userid
	tokens     map[string]*token
	codes      map[string]*code
	media      map[string]*media
	sent       []SentMessage
	dropped    []SentMessage
	windows    map[memberKey][]time.Time // delivery times within the last hour
	dups       map[dupKey]dupEntry
	fails      map[string][]failure
	tokenCalls int
	loginUser  string
	onSend     func(SentMessage)
	onDrop     func(SentMessage)
	changed    chan struct{}
	seq        int
}

// New starts a Server on opts.Listener, or on a free loopback port. Close
// it when done.
func New(opts Options) (*Server, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = DefaultTokenTTL
	}
	if opts.CodeTTL <= 0 {
		opts.CodeTTL = DefaultCodeTTL
	}
	if opts.PerMinuteLimit <= 0 {
		opts.PerMinuteLimit = DefaultPerMinuteLimit
	}
	if opts.PerHourLimit <= 0 {
		opts.PerHourLimit = DefaultPerHourLimit
	}
	if opts.TruncateBytes <= 0 {
		opts.TruncateBytes = DefaultTruncateBytes
	}
	if opts.MediaTTL <= 0 {
		opts.MediaTTL = DefaultMediaTTL
	}
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("emulator: listen: %w", err)
		}
	}
	opts.Listener = nil // the server owns it from here
	s := &Server{
		opts:    opts,
		users:   map[string]*user{},
		tokens:  map[string]*token{},
		codes:   map[string]*code{},
		media:   map[string]*media{},
		windows: map[memberKey][]time.Time{},
		dups:    map[dupKey]dupEntry{},
		fails:   map[string][]failure{},
		changed: make(chan struct{}),
		served:  make(chan struct{}),
		fresh:   map[net.Conn]struct{}{},
		mux:     http.NewServeMux(),
		url:     "http://" + ln.Addr().String(),
	}
	s.mux.HandleFunc("GET /cgi-bin/gettoken", s.getToken)
	s.mux.HandleFunc("POST /cgi-bin/message/send", s.send)
	s.mux.HandleFunc("POST /cgi-bin/message/recall", s.recall)
	s.mux.HandleFunc("GET /cgi-bin/auth/getuserinfo", s.getUserInfo)
	s.mux.HandleFunc("GET /cgi-bin/user/get", s.getUser)
	s.mux.HandleFunc("GET /cgi-bin/agent/get", s.getAgent)
	s.mux.HandleFunc("GET /cgi-bin/media/get", s.getMedia)
	s.mux.HandleFunc("GET /connect/oauth2/authorize", s.authorize)
	s.mux.HandleFunc("GET /wwlogin/sso/login", s.ssoLogin)
	s.hs = &http.Server{
		Handler:           s.inject(s.mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ConnState:         s.trackConn,
	}
	go func() {
		defer close(s.served)
		_ = s.hs.Serve(ln) // returns http.ErrServerClosed after Shutdown or Close
	}()
	return s, nil
}

// Shutdown stops accepting connections and waits until the requests in
// progress are answered or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.hs.Shutdown(ctx) }()
	// http.Server counts a connection that has sent no request as busy for
	// five seconds; clients dial such spares. Nothing more will come on
	// them: close them, as httptest does.
	s.connMu.Lock()
	s.closing = true
	for c := range s.fresh {
		_ = c.Close()
	}
	s.connMu.Unlock()
	err := <-done
	if err != nil {
		_ = s.hs.Close()
	}
	<-s.served
	if err != nil {
		return fmt.Errorf("emulator: shutdown: %w", err)
	}
	return nil
}

// Close shuts the server down, waiting up to five seconds for requests in
// progress.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Shutdown(ctx) // Shutdown has already forced the close on error
}

// trackConn remembers connections that have not sent a request yet.
func (s *Server) trackConn(c net.Conn, st http.ConnState) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if st != http.StateNew {
		delete(s.fresh, c)
		return
	}
	if s.closing {
		_ = c.Close()
		return
	}
	s.fresh[c] = struct{}{}
}

// URL returns the server's base URL, e.g. "http://127.0.0.1:41234"; use it
// as the client's API, OAuth and SSO base.
func (s *Server) URL() string { return s.url }

// AddApp registers an app (agent) of a corp with its secret. A corp may
// have several apps.
func (s *Server) AddApp(corpID, secret string, agentID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps = append(s.apps, &app{corpID: corpID, secret: secret, agentID: agentID, name: "app-" + strconv.FormatInt(agentID, 10)})
}

// AddUser registers a member and the departments they belong to. UserIDs
// are case-insensitive, as in WeCom.
func (s *Server) AddUser(userID string, departments ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[strings.ToLower(userID)] = &user{id: userID, departments: slices.Clone(departments)}
}

// SetLoginUser sets whom the OAuth authorize and SSO login pages sign in.
// A userID not registered with AddUser signs in as a non-member, whose code
// yields an openid.
func (s *Server) SetLoginUser(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loginUser = userID
}

// IssueCode returns a fresh OAuth code for userID in corpID, as the login
// pages would.
func (s *Server) IssueCode(corpID, userID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issueCodeLocked(corpID, userID)
}

func (s *Server) issueCodeLocked(corpID, userID string) string {
	c := randomHex(16)
	s.codes[c] = &code{corpID: corpID, userID: userID, expires: s.opts.Now().Add(s.opts.CodeTTL)}
	return c
}

// OnSend registers fn to be called for every delivered message, after it is
// recorded. fn runs on the request's goroutine and must not call back into
// the Server's blocking methods for long.
func (s *Server) OnSend(fn func(SentMessage)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onSend = fn
}

// OnDrop registers fn to be called for every message answered errcode 0
// but not delivered (see Dropped), after it is recorded; the same rules as
// for OnSend apply. A simulator can show the user what WeCom swallowed.
func (s *Server) OnDrop(fn func(SentMessage)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onDrop = fn
}

// Sent returns every delivered message in order.
func (s *Server) Sent() []SentMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sent)
}

// Dropped returns the messages that message/send accepted with errcode 0
// but did not deliver, in order, each with its Drop reason: duplicates and
// messages over the per-member budget.
func (s *Server) Dropped() []SentMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.dropped)
}

// WaitSent blocks until at least n messages have been delivered or ctx
// ends, and returns the deliveries so far.
func (s *Server) WaitSent(ctx context.Context, n int) ([]SentMessage, error) {
	for {
		s.mu.Lock()
		if len(s.sent) >= n {
			out := slices.Clone(s.sent)
			s.mu.Unlock()
			return out, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return s.Sent(), fmt.Errorf("emulator: waiting for %d messages: %w", n, ctx.Err())
		}
	}
}

// FailNext makes the next n calls to path (e.g. "/cgi-bin/message/send")
// answer errcode and errmsg without any other effect. An empty errmsg gets
// a WeCom-style text.
func (s *Server) FailNext(path string, errcode int, errmsg string, n int) {
	if errmsg == "" {
		errmsg = "injected error"
	}
	s.queueFailures(path, failure{errcode: errcode, errmsg: errmsg}, n)
}

// FailHTTP makes the next n calls to path answer the HTTP status with an
// empty body.
func (s *Server) FailHTTP(path string, status int, n int) {
	s.queueFailures(path, failure{status: status}, n)
}

func (s *Server) queueFailures(path string, f failure, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.fails[path] = append(s.fails[path], f)
	}
}

// ExpireTokens makes every token issued so far expired (42001).
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := s.opts.Now().Add(-time.Second)
	for _, t := range s.tokens {
		t.expires = past
	}
}

// TokenCalls returns how many gettoken requests the server received.
func (s *Server) TokenCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenCalls
}

// inject answers queued failures before the real handlers run.
func (s *Server) inject(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if r.URL.Path == "/cgi-bin/gettoken" {
			s.tokenCalls++
		}
		var f *failure
		if q := s.fails[r.URL.Path]; len(q) > 0 {
			f = &q[0]
			s.fails[r.URL.Path] = q[1:]
		}
		s.mu.Unlock()
		switch {
		case f == nil:
			next.ServeHTTP(w, r)
		case f.status != 0:
			w.WriteHeader(f.status)
		default:
			writeJSON(w, map[string]any{"errcode": f.errcode, "errmsg": f.errmsg})
		}
	})
}

// apiError writes an errcode answer with an errmsg shaped like WeCom's.
func (s *Server) apiError(w http.ResponseWriter, r *http.Request, errcode int, text string) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	s.mu.Lock()
	s.seq++
	hint := fmt.Sprintf("[%d_%d]", s.opts.Now().Unix(), s.seq)
	s.mu.Unlock()
	writeJSON(w, map[string]any{
		"errcode": errcode,
		"errmsg": fmt.Sprintf("%s, hint: %s, from ip: %s, more info at https://open.work.weixin.qq.com/devtool/query?e=%d",
			text, hint, host, errcode),
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // a failed write means the client went away
}

func ok(extra map[string]any) map[string]any {
	m := map[string]any{"errcode": 0, "errmsg": "ok"}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

func (s *Server) getToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	corpID, secret := q.Get("corpid"), q.Get("corpsecret")
	switch {
	case corpID == "":
		s.apiError(w, r, 41002, "corpid missing")
		return
	case secret == "":
		s.apiError(w, r, 41004, "corpsecret missing")
		return
	}
	s.mu.Lock()
	var a *app
	known := false
	for _, x := range s.apps {
		if x.corpID == corpID {
			known = true
			if x.secret == secret {
				a = x
			}
		}
	}
	var tok string
	if a != nil {
		tok = randomHex(32)
		s.tokens[tok] = &token{app: a, expires: s.opts.Now().Add(s.opts.TokenTTL)}
	}
	s.mu.Unlock()
	switch {
	case !known:
		s.apiError(w, r, 40013, "invalid corpid")
	case a == nil:
		s.apiError(w, r, 40001, "invalid credential")
	default:
		writeJSON(w, ok(map[string]any{"access_token": tok, "expires_in": int64(s.opts.TokenTTL / time.Second)}))
	}
}

// auth resolves the access_token of a request to its app, answering the
// error itself when it fails.
func (s *Server) auth(w http.ResponseWriter, r *http.Request) (*app, bool) {
	tok := r.URL.Query().Get("access_token")
	if tok == "" {
		s.apiError(w, r, 41001, "access_token missing")
		return nil, false
	}
	s.mu.Lock()
	t := s.tokens[tok]
	expired := t != nil && !s.opts.Now().Before(t.expires)
	s.mu.Unlock()
	switch {
	case t == nil:
		s.apiError(w, r, 40014, "invalid access_token")
		return nil, false
	case expired:
		s.apiError(w, r, 42001, "access_token expired")
		return nil, false
	}
	return t.app, true
}

type sendRequest struct {
	ToUser  string          `json:"touser"`
	ToParty string          `json:"toparty"`
	ToTag   string          `json:"totag"`
	MsgType string          `json:"msgtype"`
	AgentID json.RawMessage `json:"agentid"`
	Text    *struct {
		Content string `json:"content"`
	} `json:"text"`
	Markdown *struct {
		Content string `json:"content"`
	} `json:"markdown"`
	EnableDuplicateCheck   int   `json:"enable_duplicate_check"`
	DuplicateCheckInterval int64 `json:"duplicate_check_interval"`
}

func (s *Server) send(w http.ResponseWriter, r *http.Request) {
	a, okAuth := s.auth(w, r)
	if !okAuth {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
	if err != nil {
		s.apiError(w, r, -1, "system error")
		return
	}
	var req sendRequest
	if err := json.Unmarshal(body, &req); err != nil {
		s.apiError(w, r, 47001, "data format error")
		return
	}
	agentID, err := strconv.ParseInt(strings.Trim(string(req.AgentID), `"`), 10, 64)
	if err != nil {
		s.apiError(w, r, 40056, "invalid agentid")
		return
	}
	if agentID != a.agentID {
		s.apiError(w, r, 301002, "not allow operate another agent with this accesstoken.")
		return
	}
	var content string
	switch {
	case req.MsgType == "text" && req.Text != nil:
		content = req.Text.Content
	case req.MsgType == "markdown" && req.Markdown != nil:
		content = req.Markdown.Content
	case req.MsgType == "text" || req.MsgType == "markdown":
		content = ""
	default:
		s.apiError(w, r, 40008, "invalid message type")
		return
	}
	if content == "" {
		s.apiError(w, r, 44004, "empty content")
		return
	}
	shown, truncated := truncate(content, s.opts.TruncateBytes)
	canon, err := canonicalJSON(body)
	if err != nil {
		s.apiError(w, r, 47001, "data format error")
		return
	}

	s.mu.Lock()
	// Read the clock under the lock, so that arrival times are in the order
	// in which requests are counted.
	now := s.opts.Now()
	var valid []*user
	var invalidUsers []string
	if strings.TrimSpace(req.ToUser) == "@all" {
		for _, u := range s.users {
			valid = append(valid, u)
		}
		slices.SortFunc(valid, func(x, y *user) int { return strings.Compare(x.id, y.id) })
	} else {
		seen := map[string]bool{}
		for _, id := range strings.Split(req.ToUser, "|") {
			lid := strings.ToLower(strings.TrimSpace(id))
			if lid == "" || seen[lid] {
				continue
			}
			seen[lid] = true
			if u := s.users[lid]; u != nil {
				valid = append(valid, u)
			} else {
				invalidUsers = append(invalidUsers, lid)
			}
		}
	}
	// Departments and tags are not modelled: every one named is invalid.
	invalidParty := nonEmpty(strings.Split(req.ToParty, "|"))
	invalidTag := nonEmpty(strings.Split(req.ToTag, "|"))
	if len(valid) == 0 {
		s.mu.Unlock()
		s.apiError(w, r, 81013, "user & party & tag all invalid")
		return
	}
	s.seq++
	if s.seq%sweepEvery == 0 {
		s.sweepLocked(now)
	}
	msgID := fmt.Sprintf("msg%d_%s", s.seq, randomHex(6))
	record := func(u *user) SentMessage {
		return SentMessage{
			CorpID: a.corpID, AgentID: a.agentID, ToUser: u.id, MsgType: req.MsgType,
			Content: shown, Truncated: truncated, MsgID: msgID, At: now,
			DuplicateCheck: req.EnableDuplicateCheck == 1,
		}
	}
	if req.EnableDuplicateCheck == 1 {
		dk := dupKey{a.corpID, a.agentID, canon}
		if d, found := s.dups[dk]; found && now.Before(d.until) {
			// WeCom answers a duplicate like a delivery and tells nobody.
			msgID = d.msgID
			var dropped []SentMessage
			for _, u := range valid {
				m := record(u)
				m.Drop = DropDuplicate
				dropped = append(dropped, m)
			}
			s.dropped = append(s.dropped, dropped...)
			hook := s.onDrop
			s.mu.Unlock()
			writeJSON(w, ok(map[string]any{"invaliduser": strings.Join(invalidUsers, "|"), "msgid": msgID}))
			callHook(hook, dropped)
			return
		}
		interval := time.Duration(req.DuplicateCheckInterval) * time.Second
		if interval <= 0 {
			interval = DefaultDuplicateCheckInterval
		}
		interval = min(interval, MaxDuplicateCheckInterval)
		s.dups[dk] = dupEntry{msgID: msgID, until: now.Add(interval)}
	}
	var delivered, dropped []SentMessage
	for _, u := range valid {
		m := record(u)
		k := memberKey{a.corpID, a.agentID, strings.ToLower(u.id)}
		win := s.windows[k]
		// Keep the deliveries of the last hour; count the last minute's.
		keep := win[:0]
		minute := 0
		for _, t := range win {
			if now.Sub(t) < time.Hour {
				keep = append(keep, t)
				if now.Sub(t) < time.Minute {
					minute++
				}
			}
		}
		win = keep
		switch {
		case minute >= s.opts.PerMinuteLimit:
			m.Drop = DropMinuteLimit
		case len(win) >= s.opts.PerHourLimit:
			m.Drop = DropHourLimit
		}
		if m.Drop != "" {
			s.dropped = append(s.dropped, m)
			dropped = append(dropped, m)
			s.windows[k] = win
			continue
		}
		s.windows[k] = append(win, now)
		s.sent = append(s.sent, m)
		delivered = append(delivered, m)
	}
	if len(delivered) > 0 {
		close(s.changed)
		s.changed = make(chan struct{})
	}
	sendHook, dropHook := s.onSend, s.onDrop
	s.mu.Unlock()

	resp := ok(map[string]any{"msgid": msgID, "invaliduser": strings.Join(invalidUsers, "|")})
	if len(invalidParty) > 0 {
		resp["invalidparty"] = strings.Join(invalidParty, "|")
	}
	if len(invalidTag) > 0 {
		resp["invalidtag"] = strings.Join(invalidTag, "|")
	}
	writeJSON(w, resp)
	callHook(sendHook, delivered)
	callHook(dropHook, dropped)
}

func callHook(fn func(SentMessage), ms []SentMessage) {
	if fn == nil {
		return
	}
	for _, m := range ms {
		fn(m)
	}
}

// canonicalJSON decodes a request body and encodes it again with object
// keys sorted and no insignificant whitespace, so that two requests WeCom
// would call the same JSON compare equal as strings. Numbers keep their
// literal text.
func canonicalJSON(body []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // maps encode with sorted keys
		return "", err
	}
	return b.String(), nil
}

// sweepLocked forgets duplicate records whose window has passed and members
// with no delivery in the last hour, so a long-running emulator stays small.
func (s *Server) sweepLocked(now time.Time) {
	for k, d := range s.dups {
		if !now.Before(d.until) {
			delete(s.dups, k)
		}
	}
	for k, win := range s.windows {
		if len(win) == 0 || now.Sub(win[len(win)-1]) >= time.Hour {
			delete(s.windows, k)
		}
	}
}

func nonEmpty(v []string) []string {
	var out []string
	for _, s := range v {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// truncate cuts s to at most n bytes without splitting a UTF-8 character.
// WeCom documents only "超过将截断" (truncated past 2048 bytes); what it
// does with a character straddling the limit is not documented, so the
// fake drops that character whole and keeps the content valid UTF-8.
func truncate(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	cut := n
	for cut > 0 && cut < len(s) && s[cut]&0xC0 == 0x80 {
		cut-- // s[cut] continues the character before it
	}
	return s[:cut], true
}

func (s *Server) recall(w http.ResponseWriter, r *http.Request) {
	a, okAuth := s.auth(w, r)
	if !okAuth {
		return
	}
	var req struct {
		MsgID string `json:"msgid"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody)).Decode(&req); err != nil {
		s.apiError(w, r, 47001, "data format error")
		return
	}
	if req.MsgID == "" {
		s.apiError(w, r, 40058, "msgid is empty")
		return
	}
	now := s.opts.Now()
	s.mu.Lock()
	found, expired := false, false
	for i := range s.sent {
		m := &s.sent[i]
		if m.MsgID != req.MsgID || m.CorpID != a.corpID || m.AgentID != a.agentID {
			continue
		}
		if now.Sub(m.At) > 24*time.Hour {
			expired = true
			continue
		}
		found = true
		m.Recalled = true
	}
	s.mu.Unlock()
	switch {
	case found:
		writeJSON(w, ok(nil))
	case expired:
		s.apiError(w, r, 42052, "msgid expired")
	default:
		s.apiError(w, r, 40058, "invalid msgid")
	}
}

func (s *Server) getUserInfo(w http.ResponseWriter, r *http.Request) {
	a, okAuth := s.auth(w, r)
	if !okAuth {
		return
	}
	c := r.URL.Query().Get("code")
	if c == "" {
		s.apiError(w, r, 41008, "missing code")
		return
	}
	s.mu.Lock()
	entry := s.codes[c]
	delete(s.codes, c) // single-use, whatever the outcome
	valid := entry != nil && entry.corpID == a.corpID && s.opts.Now().Before(entry.expires)
	var member *user
	if valid {
		member = s.users[strings.ToLower(entry.userID)]
	}
	s.mu.Unlock()
	switch {
	case !valid:
		s.apiError(w, r, 40029, "invalid code")
	case member != nil:
		writeJSON(w, ok(map[string]any{"userid": member.id}))
	default:
		writeJSON(w, ok(map[string]any{"openid": OpenID(a.corpID, entry.userID)}))
	}
}

// OpenID returns the openid the server reports for a non-member who signs
// in as userID to corpID: stable and unique within the corp.
func OpenID(corpID, userID string) string {
	sum := sha256.Sum256([]byte(corpID + "\x00" + userID))
	return "o" + hex.EncodeToString(sum[:14])
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request) {
	if _, okAuth := s.auth(w, r); !okAuth {
		return
	}
	id := r.URL.Query().Get("userid")
	if id == "" {
		s.apiError(w, r, 41009, "missing userid")
		return
	}
	s.mu.Lock()
	u := s.users[strings.ToLower(id)]
	s.mu.Unlock()
	if u == nil {
		s.apiError(w, r, 60111, "userid not found")
		return
	}
	deps := u.departments
	if deps == nil {
		deps = []int64{}
	}
	writeJSON(w, ok(map[string]any{"userid": u.id, "name": u.id, "department": deps, "status": 1}))
}

func (s *Server) getAgent(w http.ResponseWriter, r *http.Request) {
	a, okAuth := s.auth(w, r)
	if !okAuth {
		return
	}
	id, err := strconv.ParseInt(r.URL.Query().Get("agentid"), 10, 64)
	if err != nil {
		s.apiError(w, r, 40056, "invalid agentid")
		return
	}
	if id != a.agentID {
		s.apiError(w, r, 301002, "not allow operate another agent with this accesstoken.")
		return
	}
	s.mu.Lock()
	type allowedUser struct {
		UserID string `json:"userid"`
	}
	users := []allowedUser{}
	for _, u := range s.users {
		users = append(users, allowedUser{u.id})
	}
	s.mu.Unlock()
	slices.SortFunc(users, func(x, y allowedUser) int { return strings.Compare(x.UserID, y.UserID) })
	writeJSON(w, ok(map[string]any{
		"agentid":              a.agentID,
		"name":                 a.name,
		"square_logo_url":      "",
		"description":          "",
		"allow_userinfos":      map[string]any{"user": users},
		"allow_partys":         map[string]any{"partyid": []int64{}},
		"allow_tags":           map[string]any{"tagid": []int64{}},
		"close":                0,
		"redirect_domain":      "",
		"report_location_flag": 0,
		"isreportenter":        0,
		"home_url":             "",
	}))
}

// authorize serves the in-app OAuth page: it validates the link and
// redirects back with a code for the login user.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("response_type") != "code" {
		http.Error(w, "response_type must be code", http.StatusBadRequest)
		return
	}
	switch scope := q.Get("scope"); scope {
	case "snsapi_base":
	case "snsapi_privateinfo":
		if q.Get("agentid") == "" {
			http.Error(w, "agentid is required with snsapi_privateinfo", http.StatusBadRequest)
			return
		}
	default:
		http.Error(w, "invalid scope", http.StatusBadRequest)
		return
	}
	s.loginRedirect(w, r, q.Get("appid"), q.Get("agentid"), false)
}

// ssoLogin serves the browser login page (login_type=CorpApp).
func (s *Server) ssoLogin(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("login_type") != "CorpApp" {
		http.Error(w, "only login_type=CorpApp is supported", http.StatusBadRequest)
		return
	}
	s.loginRedirect(w, r, q.Get("appid"), q.Get("agentid"), true)
}

func (s *Server) loginRedirect(w http.ResponseWriter, r *http.Request, corpID, agentID string, agentRequired bool) {
	q := r.URL.Query()
	state := q.Get("state")
	if len(state) > 128 {
		http.Error(w, "state longer than 128 bytes", http.StatusBadRequest)
		return
	}
	target, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		http.Error(w, "invalid redirect_uri", http.StatusBadRequest)
		return
	}
	if agentRequired && agentID == "" {
		http.Error(w, "agentid is required", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	corpKnown, agentKnown := false, agentID == ""
	for _, a := range s.apps {
		if a.corpID == corpID {
			corpKnown = true
			if strconv.FormatInt(a.agentID, 10) == agentID {
				agentKnown = true
			}
		}
	}
	login := s.loginUser
	var c string
	if corpKnown && agentKnown && login != "" {
		c = s.issueCodeLocked(corpID, login)
	}
	s.mu.Unlock()
	switch {
	case !corpKnown:
		http.Error(w, "invalid appid", http.StatusBadRequest)
		return
	case !agentKnown:
		http.Error(w, "invalid agentid", http.StatusBadRequest)
		return
	case login == "":
		http.Error(w, "nobody is signed in; call SetLoginUser", http.StatusForbidden)
		return
	}
	tq := target.Query()
	tq.Set("code", c)
	tq.Set("state", state)
	target.RawQuery = tq.Encode()
	http.Redirect(w, r, target.String(), http.StatusFound)
}
