package wecom

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Defaults for Config.
const (
	DefaultAPIBase     = "https://qyapi.weixin.qq.com"
	DefaultOAuthBase   = "https://open.weixin.qq.com"
	DefaultSSOBase     = "https://login.work.weixin.qq.com"
	DefaultHTTPTimeout = 10 * time.Second // per HTTP exchange

	// MaxContentBytes is the message/send limit on text and markdown
	// content, in UTF-8 bytes. Use Split to stay under it.
	MaxContentBytes = 2048

	// tokenRefreshMargin is how long before expiry a cached token is
	// replaced.
	tokenRefreshMargin = 5 * time.Minute
	// tokenFetchTimeout bounds a shared gettoken flight, which outlives
	// the context of the caller that started it.
	tokenFetchTimeout = 30 * time.Second
	maxResponseBytes  = 1 << 20
	maxDuplicateCheck = 4 * time.Hour
)

// Config configures a Client for one app (应用). Zero values take the
// defaults named in the field comments.
type Config struct {
	// CorpID is the corp id (企业ID), e.g. "ww1234567890abcdef".
	CorpID string
	// Secret is the app's secret (应用 Secret). Secret; never logged.
	Secret string
	// AgentID is the app id (应用 AgentId).
	AgentID int64

	// APIBase is the API root; default DefaultAPIBase.
	APIBase string
	// OAuthBase is the root of the in-app OAuth page; default
	// DefaultOAuthBase.
	OAuthBase string
	// SSOBase is the root of the browser login page; default
	// DefaultSSOBase.
	SSOBase string

	// HTTPClient sends the requests; default a client with a
	// DefaultHTTPTimeout timeout.
	HTTPClient *http.Client
	// Now is the clock used for token expiry; default time.Now.
	Now func() time.Time
	// Logger receives token events at debug level; default discards them.
	Logger *slog.Logger
}

// LogValue implements slog.LogValuer so that a Config can be logged without
// its secret.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("corp_id", c.CorpID),
		slog.Int64("agent_id", c.AgentID),
		slog.String("secret", "<redacted>"),
		slog.String("api_base", c.APIBase),
	)
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if strings.TrimSpace(c.CorpID) == "" {
		bad("corp id is required")
	}
	if strings.TrimSpace(c.Secret) == "" {
		bad("secret is required")
	}
	if c.AgentID <= 0 {
		bad("agent id must be a positive integer, got %d", c.AgentID)
	}
	for _, b := range []struct{ name, v string }{{"api base", c.APIBase}, {"oauth base", c.OAuthBase}, {"sso base", c.SSOBase}} {
		if b.v == "" {
			continue
		}
		u, err := url.Parse(b.v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			bad("%s must be an http(s) URL without a query, got %q", b.name, b.v)
		}
	}
	return errors.Join(errs...)
}

// Client calls the WeCom server API for one app. It caches the app's
// access token and is safe for concurrent use. It does not repeat failed
// calls, except once after a rejected access token; see Classify.
type Client struct {
	cfg   Config
	api   string
	oauth string
	sso   string
	hc    *http.Client
	log   *slog.Logger
	now   func() time.Time

	flight singleflight.Group // one gettoken at a time

	mu        sync.Mutex
	token     string
	refreshAt time.Time
}

// New validates cfg, fills in defaults and returns a Client. It makes no
// network call; use Token or Agent to check the credentials.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:   cfg,
		api:   strings.TrimRight(or(cfg.APIBase, DefaultAPIBase), "/"),
		oauth: strings.TrimRight(or(cfg.OAuthBase, DefaultOAuthBase), "/"),
		sso:   strings.TrimRight(or(cfg.SSOBase, DefaultSSOBase), "/"),
		hc:    cfg.HTTPClient,
		log:   cfg.Logger,
		now:   cfg.Now,
	}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "wecom", "agent_id", cfg.AgentID)
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// AgentID returns the app id the client sends for.
func (c *Client) AgentID() int64 { return c.cfg.AgentID }

// Token returns a valid access token, fetching one with gettoken when the
// cached token is missing or within five minutes of expiry. Concurrent
// callers share a single gettoken request; a caller whose ctx ends stops
// waiting, but the shared request carries on for the others.
func (c *Client) Token(ctx context.Context) (string, error) {
	if tok, ok := c.cached(); ok {
		return tok, nil
	}
	// DoChan runs the request on its own goroutine, with a context
	// detached from this caller so that one caller giving up does not fail
	// the others; tokenFetchTimeout bounds it.
	flight := context.WithoutCancel(ctx)
	ch := c.flight.DoChan("gettoken", func() (any, error) {
		if tok, ok := c.cached(); ok {
			return tok, nil // a flight that just ended fetched it
		}
		fctx, cancel := context.WithTimeout(flight, tokenFetchTimeout)
		defer cancel()
		return c.fetchToken(fctx)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", fmt.Errorf("wecom: get access token: %w", ctx.Err())
	}
}

// cached returns the cached token unless it is missing or due for refresh.
func (c *Client) cached() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && c.now().Before(c.refreshAt) {
		return c.token, true
	}
	return "", false
}

// InvalidateToken drops the cached access token, so the next call fetches
// a new one.
func (c *Client) InvalidateToken() {
	c.mu.Lock()
	c.token = ""
	c.mu.Unlock()
}

// invalidate drops tok if it is still the cached token, leaving a newer
// token that another goroutine fetched in the meantime alone.
func (c *Client) invalidate(tok string) {
	c.mu.Lock()
	if c.token == tok {
		c.token = ""
	}
	c.mu.Unlock()
}

func (c *Client) fetchToken(ctx context.Context) (string, error) {
	var resp struct {
		apiStatus
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	q := url.Values{"corpid": {c.cfg.CorpID}, "corpsecret": {c.cfg.Secret}}
	if err := c.do(ctx, http.MethodGet, pathGetToken, q, nil, &resp); err != nil {
		return "", fmt.Errorf("wecom: get access token: %w", err)
	}
	if resp.AccessToken == "" {
		return "", fmt.Errorf("wecom: get access token: %w", malformed("response has no access_token"))
	}
	ttl := time.Duration(resp.ExpiresIn) * time.Second
	if ttl <= 0 {
		ttl = 2 * time.Hour
	}
	margin := min(tokenRefreshMargin, ttl/2)
	c.mu.Lock()
	c.token = resp.AccessToken
	c.refreshAt = c.now().Add(ttl - margin)
	c.mu.Unlock()
	c.log.Debug("access token refreshed", "expires_in", resp.ExpiresIn)
	return resp.AccessToken, nil
}

// apiStatus is the errcode/errmsg pair of every WeCom answer.
type apiStatus struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

func (s *apiStatus) status() *apiStatus { return s }

type apiResponse interface{ status() *apiStatus }

// call performs an authenticated API call: it adds the access token and, on
// a token error, fetches a new token and tries once more. It repeats
// nothing else; callers decide with Classify.
func (c *Client) call(ctx context.Context, op, method, path string, q url.Values, in any, out apiResponse) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("wecom: %s: encode request: %w", op, err)
		}
	}
	return c.withToken(ctx, op, path, func(tok string) error {
		return c.do(ctx, method, path, tokenQuery(q, tok), body, out)
	})
}

// withToken runs fn with the access token and, if the token is refused,
// once more with a new one.
func (c *Client) withToken(ctx context.Context, op, path string, fn func(tok string) error) error {
	for retried := false; ; retried = true {
		tok, err := c.Token(ctx)
		if err != nil {
			return fmt.Errorf("wecom: %s: %w", op, err)
		}
		err = fn(tok)
		if err != nil && !retried && IsTokenError(err) {
			c.invalidate(tok)
			c.log.Debug("access token rejected; fetching a new one", "path", path, "err", err)
			continue
		}
		if err != nil {
			return fmt.Errorf("wecom: %s: %w", op, err)
		}
		return nil
	}
}

// tokenQuery returns a copy of q with the access token added.
func tokenQuery(q url.Values, tok string) url.Values {
	qt := make(url.Values, len(q)+1)
	for k, v := range q {
		qt[k] = v
	}
	qt.Set("access_token", tok)
	return qt
}

// temporaryError marks a failure below the API level (network, HTTP 5xx or
// 429, a truncated answer) that may heal; Classify reports it as
// ClassTransient.
type temporaryError struct{ err error }

func (e *temporaryError) Error() string { return e.err.Error() }
func (e *temporaryError) Unwrap() error { return e.err }

// statusError is an HTTP answer other than 200 where WeCom always answers
// 200: a wrong api_base or a proxy in the way, unless it is 5xx or 429.
type statusError struct {
	path   string
	status int
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s: unexpected HTTP status %d", e.path, e.status)
}

// do performs one HTTP exchange and decodes the JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body []byte, out apiResponse) error {
	return c.exchange(ctx, method, path, q, body, func(resp *http.Response) error {
		return decodeStatus(ctx, path, resp.Body, out)
	})
}

// decodeStatus decodes a JSON answer into out and turns a non-zero errcode
// into an *APIError.
func decodeStatus(ctx context.Context, path string, r io.Reader, out apiResponse) error {
	*out.status() = apiStatus{}
	if err := json.NewDecoder(io.LimitReader(r, maxResponseBytes)).Decode(out); err != nil {
		if ctx.Err() == nil && !isJSONError(err) {
			return &temporaryError{fmt.Errorf("%s: read response: %w", path, err)}
		}
		return fmt.Errorf("%s: decode response: %w", path, err)
	}
	if st := out.status(); st.ErrCode != 0 {
		return &APIError{Code: st.ErrCode, Msg: st.ErrMsg, Path: path}
	}
	return nil
}

// exchange performs one HTTP exchange and hands a 200 answer to read.
// Errors never contain the request URL's query, which holds the access
// token or the secret.
func (c *Client) exchange(ctx context.Context, method, path string, q url.Values, body []byte, read func(*http.Response) error) error {
	u := c.api + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("build request for %s: %w", path, redactURLError(err))
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		err = redactURLError(err)
		if ctx.Err() != nil {
			return err
		}
		return &temporaryError{err}
	}
	defer resp.Body.Close()
	defer io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // draining for reuse only
	if resp.StatusCode != http.StatusOK {
		err := &statusError{path: path, status: resp.StatusCode}
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			return &temporaryError{err}
		}
		return err
	}
	return read(resp)
}

func isJSONError(err error) bool {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	return errors.As(err, &se) || errors.As(err, &te)
}

// redactURLError strips the query from the URL inside a *url.Error, so that
// neither the access token nor the secret reaches logs.
func redactURLError(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	return &url.Error{Op: ue.Op, URL: redactURL(ue.URL), Err: ue.Err}
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<url redacted>"
	}
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	u.User = nil
	u.Fragment = ""
	return u.String()
}

// OutMessage is a text or markdown app message (应用消息) for Send.
type OutMessage struct {
	// ToUser lists recipients' UserIDs separated by '|', at most 1000, or
	// "@all".
	ToUser string
	// MsgType is "text" (the default) or "markdown". Markdown renders only
	// in the WeCom client, not in the WeChat plugin (微信插件).
	MsgType string
	// Content is at most MaxContentBytes bytes of UTF-8; longer content is
	// refused rather than truncated by WeCom. Use Split.
	Content string
	// Safe is 1 for a confidential message (watermarked, not shareable).
	Safe int
	// EnableDuplicateCheck asks WeCom to drop a request whose whole JSON
	// equals one it received within DuplicateCheckInterval, answering it
	// errcode 0 all the same. Set it when a send may be retried after a
	// lost response (see Send). Every field counts, the interval too, so a
	// genuinely repeated message is dropped only if its request is
	// identical: make such requests differ (e.g. in the interval).
	EnableDuplicateCheck bool
	// DuplicateCheckInterval is the duplicate window, at most four hours;
	// zero means WeCom's default of 1800s.
	DuplicateCheckInterval time.Duration
}

// SendResult is the answer to a successful or partly successful Send.
type SendResult struct {
	// MsgID identifies the message for Recall.
	MsgID string
	// InvalidUser lists rejected UserIDs, lower-cased by WeCom.
	InvalidUser []string
	// InvalidParty lists rejected department ids.
	InvalidParty []string
	// InvalidTag lists rejected tag ids.
	InvalidTag []string
	// UnlicensedUser lists users without an API licence (接口许可).
	UnlicensedUser []string
}

type sendContent struct {
	Content string `json:"content"`
}

type sendRequest struct {
	ToUser                 string       `json:"touser"`
	MsgType                string       `json:"msgtype"`
	AgentID                int64        `json:"agentid"`
	Text                   *sendContent `json:"text,omitempty"`
	Markdown               *sendContent `json:"markdown,omitempty"`
	Safe                   int          `json:"safe,omitempty"`
	EnableDuplicateCheck   int          `json:"enable_duplicate_check,omitempty"`
	DuplicateCheckInterval int64        `json:"duplicate_check_interval,omitempty"`
}

// Send delivers a text or markdown message with message/send and returns
// its msgid. If WeCom accepts the call but rejects some recipients
// (errcode 0 with invaliduser, invalidparty, invalidtag or unlicenseduser)
// Send returns the result together with an error wrapping *PartialError. If
// every recipient is invalid WeCom answers 81013, an *APIError.
//
// Send makes one attempt (two if the access token is refused). After a
// network error it cannot know whether WeCom delivered the message; a
// caller that retries should set EnableDuplicateCheck so that the retry,
// whose request JSON is identical, is not delivered twice. Classify says
// whether and when to retry.
func (c *Client) Send(ctx context.Context, m OutMessage) (*SendResult, error) {
	req := sendRequest{ToUser: m.ToUser, MsgType: m.MsgType, AgentID: c.cfg.AgentID, Safe: m.Safe}
	if req.MsgType == "" {
		req.MsgType = "text"
	}
	var errs []error
	if strings.TrimSpace(m.ToUser) == "" {
		errs = append(errs, fmt.Errorf("%w: no recipient", ErrInvalidConfig))
	}
	switch req.MsgType {
	case "text":
		req.Text = &sendContent{m.Content}
	case "markdown":
		req.Markdown = &sendContent{m.Content}
	default:
		errs = append(errs, fmt.Errorf("%w: msgtype %q is not text or markdown", ErrInvalidConfig, m.MsgType))
	}
	if m.Content == "" {
		errs = append(errs, fmt.Errorf("%w: empty content", ErrInvalidConfig))
	}
	if len(m.Content) > MaxContentBytes {
		errs = append(errs, fmt.Errorf("%w: content is %d bytes, limit %d", ErrTooLarge, len(m.Content), MaxContentBytes))
	}
	if m.Safe < 0 || m.Safe > 1 {
		errs = append(errs, fmt.Errorf("%w: safe must be 0 or 1", ErrInvalidConfig))
	}
	if m.EnableDuplicateCheck {
		req.EnableDuplicateCheck = 1
		if d := m.DuplicateCheckInterval; d != 0 {
			if d < time.Second || d > maxDuplicateCheck {
				errs = append(errs, fmt.Errorf("%w: duplicate check interval must be between 1s and 4h", ErrInvalidConfig))
			}
			req.DuplicateCheckInterval = int64((d + time.Second - 1) / time.Second)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("wecom: send message: %w", err)
	}

	var resp struct {
		apiStatus
		MsgID          flexString `json:"msgid"`
		InvalidUser    idList     `json:"invaliduser"`
		InvalidParty   idList     `json:"invalidparty"`
		InvalidTag     idList     `json:"invalidtag"`
		UnlicensedUser idList     `json:"unlicenseduser"`
	}
	if err := c.call(ctx, "send message", http.MethodPost, "/cgi-bin/message/send", nil, req, &resp); err != nil {
		return nil, err
	}
	res := &SendResult{
		MsgID:          string(resp.MsgID),
		InvalidUser:    resp.InvalidUser,
		InvalidParty:   resp.InvalidParty,
		InvalidTag:     resp.InvalidTag,
		UnlicensedUser: resp.UnlicensedUser,
	}
	if len(res.InvalidUser)+len(res.InvalidParty)+len(res.InvalidTag)+len(res.UnlicensedUser) > 0 {
		return res, &PartialError{
			InvalidUser: res.InvalidUser, InvalidParty: res.InvalidParty,
			InvalidTag: res.InvalidTag, UnlicensedUser: res.UnlicensedUser,
		}
	}
	return res, nil
}

// idList decodes WeCom's "a|b|c" id lists; it also accepts a JSON array.
type idList []string

// UnmarshalJSON implements json.Unmarshaler.
func (l *idList) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '[' {
		var raw []flexString
		if err := json.Unmarshal(b, &raw); err != nil {
			return err
		}
		*l = nil
		for _, r := range raw {
			if r != "" {
				*l = append(*l, string(r))
			}
		}
		return nil
	}
	var s flexString
	if err := s.UnmarshalJSON(b); err != nil {
		return err
	}
	*l = nil
	for _, id := range strings.Split(string(s), "|") {
		if id = strings.TrimSpace(id); id != "" {
			*l = append(*l, id)
		}
	}
	return nil
}

// Recall withdraws a message sent within the last 24 hours (message/recall).
// It only affects the WeCom client; copies in the WeChat plugin stay.
func (c *Client) Recall(ctx context.Context, msgID string) error {
	if msgID == "" {
		return fmt.Errorf("wecom: recall message: %w: empty msgid", ErrInvalidConfig)
	}
	var resp apiStatus
	return c.call(ctx, "recall message", http.MethodPost, "/cgi-bin/message/recall", nil,
		struct {
			MsgID string `json:"msgid"`
		}{msgID}, &resp)
}

// UserInfo identifies the person behind an OAuth or QR-login code
// (访问用户身份).
type UserInfo struct {
	// UserID is set for members of the corp ("CorpID/userid" for linked
	// corps).
	UserID string
	// OpenID is set instead for non-members; it is unique within the corp.
	OpenID string
	// ExternalUserID is set for a non-member who is a customer (客户) of
	// the corp.
	ExternalUserID string
}

// UserInfo exchanges an OAuth or QR-login code for the user's identity
// (auth/getuserinfo). Codes are single-use and expire after five minutes;
// a spent or stale code gives APIError 40029.
func (c *Client) UserInfo(ctx context.Context, code string) (*UserInfo, error) {
	if code == "" {
		return nil, fmt.Errorf("wecom: get user info: %w: empty code", ErrInvalidConfig)
	}
	var resp struct {
		apiStatus
		UserID         string `json:"userid"`
		OpenID         string `json:"openid"`
		ExternalUserID string `json:"external_userid"`
	}
	if err := c.call(ctx, "get user info", http.MethodGet, "/cgi-bin/auth/getuserinfo", url.Values{"code": {code}}, nil, &resp); err != nil {
		return nil, err
	}
	if resp.UserID == "" && resp.OpenID == "" {
		return nil, fmt.Errorf("wecom: get user info: %w", malformed("response has neither userid nor openid"))
	}
	return &UserInfo{UserID: resp.UserID, OpenID: resp.OpenID, ExternalUserID: resp.ExternalUserID}, nil
}

// UserDepartments returns the ids of the departments a member belongs to
// (user/get "department").
func (c *Client) UserDepartments(ctx context.Context, userID string) ([]int64, error) {
	if userID == "" {
		return nil, fmt.Errorf("wecom: get user: %w: empty userid", ErrInvalidConfig)
	}
	var resp struct {
		apiStatus
		Department []int64 `json:"department"`
	}
	if err := c.call(ctx, "get user", http.MethodGet, "/cgi-bin/user/get", url.Values{"userid": {userID}}, nil, &resp); err != nil {
		return nil, err
	}
	return resp.Department, nil
}

// AgentInfo describes the app (agent/get).
type AgentInfo struct {
	AgentID        int64
	Name           string
	Description    string
	SquareLogoURL  string
	RedirectDomain string
	HomeURL        string
	// Closed is true when the app is disabled (停用); it cannot send.
	Closed bool
	// AllowUsers, AllowParties and AllowTags are the app's visible range
	// (可见范围): only these members can receive its messages.
	AllowUsers   []string
	AllowParties []int64
	AllowTags    []int64
}

// Agent fetches the app's own settings. A successful call proves that the
// secret belongs to this AgentID and that the host's IP is trusted; Closed
// and the visible range tell whether sending can work.
func (c *Client) Agent(ctx context.Context) (*AgentInfo, error) {
	var resp struct {
		apiStatus
		AgentID        int64  `json:"agentid"`
		Name           string `json:"name"`
		Description    string `json:"description"`
		SquareLogoURL  string `json:"square_logo_url"`
		RedirectDomain string `json:"redirect_domain"`
		HomeURL        string `json:"home_url"`
		Close          int    `json:"close"`
		AllowUserInfos struct {
			User []struct {
				UserID string `json:"userid"`
			} `json:"user"`
		} `json:"allow_userinfos"`
		AllowPartys struct {
			PartyID []int64 `json:"partyid"`
		} `json:"allow_partys"`
		AllowTags struct {
			TagID []int64 `json:"tagid"`
		} `json:"allow_tags"`
	}
	q := url.Values{"agentid": {strconv.FormatInt(c.cfg.AgentID, 10)}}
	if err := c.call(ctx, "get agent", http.MethodGet, "/cgi-bin/agent/get", q, nil, &resp); err != nil {
		return nil, err
	}
	a := &AgentInfo{
		AgentID: resp.AgentID, Name: resp.Name, Description: resp.Description,
		SquareLogoURL: resp.SquareLogoURL, RedirectDomain: resp.RedirectDomain, HomeURL: resp.HomeURL,
		Closed: resp.Close != 0, AllowParties: resp.AllowPartys.PartyID, AllowTags: resp.AllowTags.TagID,
	}
	for _, u := range resp.AllowUserInfos.User {
		a.AllowUsers = append(a.AllowUsers, u.UserID)
	}
	return a, nil
}

// OAuthURL returns the in-app OAuth link (构造网页授权链接) with scope
// snsapi_base: opened inside WeCom, it redirects to
// redirectURI?code=CODE&state=STATE. Parameters are in the documented
// order; the redirect host must be a trusted domain (可信域名) of the app.
func (c *Client) OAuthURL(redirectURI, state string) string {
	return c.oauth + "/connect/oauth2/authorize?appid=" + url.QueryEscape(c.cfg.CorpID) +
		"&redirect_uri=" + url.QueryEscape(redirectURI) +
		"&response_type=code&scope=snsapi_base" +
		"&state=" + url.QueryEscape(state) +
		"&agentid=" + strconv.FormatInt(c.cfg.AgentID, 10) +
		"#wechat_redirect"
}

// QRLoginURL returns the browser login link (企业微信登录, login_type
// CorpApp): the user scans a QR code or confirms in the desktop client and
// is redirected to redirectURI?code=CODE&state=STATE.
func (c *Client) QRLoginURL(redirectURI, state string) string {
	return c.sso + "/wwlogin/sso/login?login_type=CorpApp&appid=" + url.QueryEscape(c.cfg.CorpID) +
		"&agentid=" + strconv.FormatInt(c.cfg.AgentID, 10) +
		"&redirect_uri=" + url.QueryEscape(redirectURI) +
		"&state=" + url.QueryEscape(state)
}
