package wecom_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

const (
	testCorp   = "ww0000000000000001"
	testSecret = "S3CRET-app-secret-do-not-leak"
	testAgent  = int64(1000002)
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// countingTransport counts requests per path and can delay or lose them.
type countingTransport struct {
	mu     sync.Mutex
	calls  map[string]int
	delay  map[string]time.Duration
	lose   map[string]int // drop the response of the next n requests to path after the server handled them
	inner  http.RoundTripper
	tokens []string // access tokens seen, to check they never leak
}

func newTransport() *countingTransport {
	return &countingTransport{calls: map[string]int{}, delay: map[string]time.Duration{}, lose: map[string]int{}, inner: http.DefaultTransport}
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.calls[r.URL.Path]++
	d := c.delay[r.URL.Path]
	lose := c.lose[r.URL.Path] > 0
	if lose {
		c.lose[r.URL.Path]--
	}
	if tok := r.URL.Query().Get("access_token"); tok != "" {
		c.tokens = append(c.tokens, tok)
	}
	c.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
	resp, err := c.inner.RoundTrip(r)
	if err == nil && lose {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, errors.New("connection reset by peer")
	}
	return resp, err
}

func (c *countingTransport) count(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[path]
}

type fixture struct {
	srv   *wecomtest.Server
	clk   *clock
	tr    *countingTransport
	c     *wecom.Client
	logs  *syncBuffer
	token func() string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newFixture(t *testing.T, mod func(*wecom.Config)) *fixture {
	t.Helper()
	f := &fixture{clk: &clock{t: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}, tr: newTransport(), logs: &syncBuffer{}}
	f.srv = wecomtest.NewServer(wecomtest.Options{Now: f.clk.Now})
	t.Cleanup(f.srv.Close)
	f.srv.AddApp(testCorp, testSecret, testAgent)
	f.srv.AddUser("lisi", 2)
	f.srv.AddUser("ZhangSan", 1, 3)
	cfg := wecom.Config{
		CorpID: testCorp, Secret: testSecret, AgentID: testAgent,
		APIBase: f.srv.URL(), OAuthBase: f.srv.URL(), SSOBase: f.srv.URL(),
		HTTPClient: &http.Client{Transport: f.tr, Timeout: 5 * time.Second},
		Now:        f.clk.Now,
		Logger:     slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := wecom.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.c = c
	t.Cleanup(func() { f.assertNoLeaks(t) })
	return f
}

// assertNoLeaks checks that no log line carries the secret or a token.
func (f *fixture) assertNoLeaks(t *testing.T) {
	t.Helper()
	logs := f.logs.String()
	if strings.Contains(logs, testSecret) {
		t.Errorf("logs contain the secret:\n%s", logs)
	}
	f.tr.mu.Lock()
	defer f.tr.mu.Unlock()
	for _, tok := range f.tr.tokens {
		if strings.Contains(logs, tok) {
			t.Errorf("logs contain an access token:\n%s", logs)
		}
	}
}

func (f *fixture) send(t *testing.T, to, content string) (*wecom.SendResult, error) {
	t.Helper()
	return f.c.Send(context.Background(), wecom.OutMessage{ToUser: to, Content: content})
}

func apiErr(t *testing.T, err error, code int) *wecom.APIError {
	t.Helper()
	var ae *wecom.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want an *APIError %d", err, code)
	}
	if ae.Code != code {
		t.Fatalf("errcode = %d (%v), want %d", ae.Code, err, code)
	}
	return ae
}

func TestTokenIsCached(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	t1, err := f.c.Token(ctx)
	if err != nil || t1 == "" {
		t.Fatalf("Token = %q, %v", t1, err)
	}
	for range 3 {
		if _, err := f.send(t, "lisi", "hi"); err != nil {
			t.Fatal(err)
		}
	}
	if t2, _ := f.c.Token(ctx); t2 != t1 {
		t.Error("token changed")
	}
	if n := f.srv.TokenCalls(); n != 1 {
		t.Errorf("gettoken calls = %d, want 1", n)
	}
	f.c.InvalidateToken()
	if t3, _ := f.c.Token(ctx); t3 == t1 || f.srv.TokenCalls() != 2 {
		t.Error("InvalidateToken did not force a new token")
	}
}

func TestTokenSingleFlight(t *testing.T) {
	f := newFixture(t, nil)
	f.tr.delay["/cgi-bin/gettoken"] = 50 * time.Millisecond
	var wg sync.WaitGroup
	tokens := make([]string, 100)
	errs := make([]error, 100)
	start := make(chan struct{})
	for i := range 100 {
		wg.Go(func() {
			<-start
			tokens[i], errs[i] = f.c.Token(context.Background())
		})
	}
	close(start)
	wg.Wait()
	for i := range tokens {
		if errs[i] != nil || tokens[i] != tokens[0] || tokens[i] == "" {
			t.Fatalf("caller %d: %q, %v", i, tokens[i], errs[i])
		}
	}
	if n := f.srv.TokenCalls(); n != 1 {
		t.Errorf("100 concurrent callers made %d gettoken calls, want 1", n)
	}
}

func TestTokenWaitHonoursContext(t *testing.T) {
	f := newFixture(t, nil)
	f.tr.delay["/cgi-bin/gettoken"] = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := f.c.Token(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	// The shared fetch carried on and serves the next caller.
	if _, err := f.c.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := f.srv.TokenCalls(); n != 1 {
		t.Errorf("gettoken calls = %d, want 1", n)
	}
}

func TestTokenRefreshesBeforeExpiry(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	t1, _ := f.c.Token(ctx)
	f.clk.Add(7200*time.Second - 5*time.Minute - time.Second)
	if t2, _ := f.c.Token(ctx); t2 != t1 || f.srv.TokenCalls() != 1 {
		t.Fatal("refreshed too early")
	}
	f.clk.Add(time.Second)
	t3, err := f.c.Token(ctx)
	if err != nil || t3 == t1 || f.srv.TokenCalls() != 2 {
		t.Fatalf("no refresh 5 minutes before expiry: %v, calls %d", err, f.srv.TokenCalls())
	}
	// The old token was still valid at the server when it was replaced.
	if _, err := f.send(t, "lisi", "x"); err != nil {
		t.Fatal(err)
	}
}

func TestTokenErrorsInvalidateAndRetryOnce(t *testing.T) {
	for _, code := range []int{40001, 40014, 42001} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			f := newFixture(t, nil)
			if _, err := f.send(t, "lisi", "warm up"); err != nil {
				t.Fatal(err)
			}
			f.srv.FailNext("/cgi-bin/message/send", code, "token problem", 1)
			if _, err := f.send(t, "lisi", "after one failure"); err != nil {
				t.Fatalf("one token error should be retried: %v", err)
			}
			if n := f.srv.TokenCalls(); n != 2 {
				t.Errorf("gettoken calls = %d, want 2", n)
			}
			f.srv.FailNext("/cgi-bin/message/send", code, "token problem", 2)
			_, err := f.send(t, "lisi", "after two failures")
			apiErr(t, err, code)
			if !wecom.IsTokenError(err) {
				t.Error("IsTokenError = false")
			}
			if n := f.srv.TokenCalls(); n != 3 {
				t.Errorf("gettoken calls = %d, want 3 (one retry only)", n)
			}
		})
	}
}

func TestExpiredTokensAreReplaced(t *testing.T) {
	f := newFixture(t, nil)
	if _, err := f.send(t, "lisi", "a"); err != nil {
		t.Fatal(err)
	}
	f.srv.ExpireTokens()
	if _, err := f.send(t, "lisi", "b"); err != nil {
		t.Fatalf("expired token not replaced: %v", err)
	}
	if n := len(f.srv.Sent()); n != 2 {
		t.Errorf("sent %d", n)
	}
}

func TestWrongSecret(t *testing.T) {
	f := newFixture(t, func(c *wecom.Config) { c.Secret = "wrong-secret-value" })
	_, err := f.send(t, "lisi", "x")
	ae := apiErr(t, err, 40001)
	if wecom.IsTokenError(err) {
		t.Error("a gettoken 40001 is a wrong secret, not a token error")
	}
	if !strings.Contains(ae.Hint(), "apps.secret") || !strings.Contains(err.Error(), "apps.secret") {
		t.Errorf("hint does not name the config key: %v", err)
	}
	if strings.Contains(err.Error(), "wrong-secret-value") {
		t.Errorf("error leaks the secret: %v", err)
	}
	if n := f.srv.TokenCalls(); n != 1 {
		t.Errorf("gettoken calls = %d, want 1 (no retry)", n)
	}
	if f.tr.count("/cgi-bin/message/send") != 0 {
		t.Error("send attempted without a token")
	}
}

func TestUnknownCorp(t *testing.T) {
	f := newFixture(t, func(c *wecom.Config) { c.CorpID = "wwunknown" })
	_, err := f.c.Agent(context.Background())
	ae := apiErr(t, err, 40013)
	if !strings.Contains(ae.Hint(), "corp_id") {
		t.Errorf("hint %q", ae.Hint())
	}
}

func TestTrustedIPHint(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.FailNext("/cgi-bin/message/send", 60020,
		"not allow to access from your ip, hint: [1710000000_1], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=60020", 1)
	_, err := f.send(t, "lisi", "x")
	ae := apiErr(t, err, 60020)
	if ae.EgressIP() != "203.0.113.7" {
		t.Errorf("EgressIP = %q", ae.EgressIP())
	}
	if !strings.Contains(ae.Hint(), "203.0.113.7") || !strings.Contains(ae.Hint(), "企业可信IP") {
		t.Errorf("hint = %q", ae.Hint())
	}
	if f.tr.count("/cgi-bin/message/send") != 1 {
		t.Error("60020 must not be retried")
	}
}

// TestNoInternalRetries: the client makes one attempt and leaves the
// policy to its caller, which learns from Classify what may heal.
func TestNoInternalRetries(t *testing.T) {
	tests := []struct {
		name   string
		inject func(*wecomtest.Server)
		class  wecom.Class
		wait   time.Duration
	}{
		{"errcode -1", func(s *wecomtest.Server) { s.FailNext("/cgi-bin/message/send", -1, "system busy", 1) },
			wecom.ClassTransient, wecom.TransientWait},
		{"45009", func(s *wecomtest.Server) { s.FailNext("/cgi-bin/message/send", 45009, "api freq out of limit", 1) },
			wecom.ClassRateLimited, wecom.DefaultRateLimitWait},
		{"45033", func(s *wecomtest.Server) {
			s.FailNext("/cgi-bin/message/send", 45033, "api concurrent out of limit", 1)
		},
			wecom.ClassRateLimited, wecom.DefaultRateLimitWait},
		{"HTTP 502", func(s *wecomtest.Server) { s.FailHTTP("/cgi-bin/message/send", http.StatusBadGateway, 1) },
			wecom.ClassTransient, wecom.TransientWait},
		{"HTTP 404", func(s *wecomtest.Server) { s.FailHTTP("/cgi-bin/message/send", http.StatusNotFound, 1) },
			wecom.ClassConfig, wecom.ConfigWait},
		{"48002", func(s *wecomtest.Server) { s.FailNext("/cgi-bin/message/send", 48002, "api forbidden", 1) },
			wecom.ClassConfig, wecom.ConfigWait},
		{"60020", func(s *wecomtest.Server) {
			s.FailNext("/cgi-bin/message/send", 60020, "not allow to access from your ip", 1)
		},
			wecom.ClassConfig, wecom.ConfigWait},
		{"81013", func(s *wecomtest.Server) {
			s.FailNext("/cgi-bin/message/send", 81013, "user & party & tag all invalid", 1)
		},
			wecom.ClassPermanent, 0},
		{"HTTP 503 on gettoken", func(s *wecomtest.Server) { s.FailHTTP("/cgi-bin/gettoken", http.StatusServiceUnavailable, 1) },
			wecom.ClassTransient, wecom.TransientWait},
		{"40001 on gettoken", func(s *wecomtest.Server) { s.FailNext("/cgi-bin/gettoken", 40001, "invalid credential", 1) },
			wecom.ClassConfig, wecom.ConfigWait},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			tt.inject(f.srv)
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			start := time.Now()
			_, err := f.c.Send(ctx, wecom.OutMessage{ToUser: "lisi", Content: "x"})
			if err == nil {
				t.Fatal("the injected failure was retried away")
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Errorf("Send took %v: it waited inside", el)
			}
			if n := f.tr.count("/cgi-bin/message/send") + f.tr.count("/cgi-bin/gettoken"); n > 2 {
				t.Errorf("%d requests, want at most gettoken + one send", n)
			}
			r := wecom.Classify(err)
			if r.Class != tt.class || r.Wait != tt.wait || r.Heal != (tt.class != wecom.ClassPermanent) {
				t.Errorf("Classify(%v) = %+v, want class %v wait %v", err, r, tt.class, tt.wait)
			}
			// The caller's retry goes through.
			if r.Heal {
				if _, err := f.send(t, "lisi", "x"); err != nil {
					t.Fatalf("retry: %v", err)
				}
			}
		})
	}
}

func TestClassify(t *testing.T) {
	api := func(code int, path string) error {
		return fmt.Errorf("wecom: send message: %w", &wecom.APIError{Code: code, Path: path})
	}
	tests := []struct {
		err   error
		class wecom.Class
	}{
		{api(-1, "/cgi-bin/message/send"), wecom.ClassTransient},
		{api(45009, "/cgi-bin/message/send"), wecom.ClassRateLimited},
		{api(45033, "/cgi-bin/message/send"), wecom.ClassRateLimited},
		{api(45047, "/cgi-bin/message/send"), wecom.ClassRateLimited},
		{api(45002, "/cgi-bin/message/send"), wecom.ClassPermanent},
		{api(81013, "/cgi-bin/message/send"), wecom.ClassPermanent},
		{api(40003, "/cgi-bin/message/send"), wecom.ClassPermanent},
		{api(40008, "/cgi-bin/message/send"), wecom.ClassPermanent},
		{api(82001, "/cgi-bin/message/send"), wecom.ClassPermanent},
		{api(301002, "/cgi-bin/message/send"), wecom.ClassPermanent},
		{api(60020, "/cgi-bin/message/send"), wecom.ClassConfig},
		{api(40001, "/cgi-bin/gettoken"), wecom.ClassConfig},
		{api(40001, "/cgi-bin/message/send"), wecom.ClassTransient}, // token, already refetched
		{api(42001, "/cgi-bin/message/send"), wecom.ClassTransient},
		{api(40014, "/cgi-bin/message/send"), wecom.ClassTransient},
		{api(99999, "/cgi-bin/message/send"), wecom.ClassConfig},
		{&wecom.PartialError{InvalidUser: []string{"x"}}, wecom.ClassPermanent},
		{fmt.Errorf("wecom: send message: %w: empty content", wecom.ErrInvalidConfig), wecom.ClassPermanent},
		{fmt.Errorf("x: %w", wecom.ErrTooLarge), wecom.ClassPermanent},
		{fmt.Errorf("x: %w", context.Canceled), wecom.ClassCanceled},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), wecom.ClassCanceled},
		{errors.New("dial tcp: connection refused"), wecom.ClassTransient},
	}
	for _, tt := range tests {
		r := wecom.Classify(tt.err)
		heal := tt.class != wecom.ClassPermanent && tt.class != wecom.ClassCanceled
		if r.Class != tt.class || r.Heal != heal || (r.Wait > 0) != heal {
			t.Errorf("Classify(%v) = %+v, want %v", tt.err, r, tt.class)
		}
	}
	if r := wecom.Classify(nil); r != (wecom.Retry{}) {
		t.Errorf("Classify(nil) = %+v", r)
	}
}

func TestRetryBackoff(t *testing.T) {
	for _, tt := range []struct {
		r        wecom.Retry
		attempt  int
		min, max time.Duration
	}{
		{wecom.Classify(&wecom.APIError{Code: -1}), 0, 500 * time.Millisecond, time.Second},
		{wecom.Classify(&wecom.APIError{Code: -1}), 3, 4 * time.Second, 8 * time.Second},
		{wecom.Classify(&wecom.APIError{Code: -1}), 50, 32 * time.Second, 64 * time.Second},
		{wecom.Classify(&wecom.APIError{Code: 45009}), 0, time.Minute, time.Minute + time.Second/2},
		{wecom.Classify(&wecom.APIError{Code: 60020}), 0, 15 * time.Second, 15*time.Second + time.Second/2},
		{wecom.Classify(&wecom.APIError{Code: 60020}), 5, 32 * time.Second, 48 * time.Second},
		{wecom.Classify(&wecom.APIError{Code: 81013}), 0, 0, 0},
	} {
		for range 50 {
			if d := tt.r.Backoff(tt.attempt); d < tt.min || d > tt.max {
				t.Fatalf("%v attempt %d: Backoff = %v, want within [%v, %v]", tt.r.Class, tt.attempt, d, tt.min, tt.max)
			}
		}
	}
}

// TestRetryAfterLostResponseIsNotDeliveredTwice shows why a caller that
// retries Send should enable the duplicate check: the first response is
// lost after WeCom delivered, the retry carries the same request JSON, and
// WeCom drops it while answering errcode 0 with the first msgid.
func TestRetryAfterLostResponseIsNotDeliveredTwice(t *testing.T) {
	f := newFixture(t, nil)
	f.tr.lose["/cgi-bin/message/send"] = 1
	m := wecom.OutMessage{ToUser: "lisi", Content: "only once", EnableDuplicateCheck: true, DuplicateCheckInterval: time.Minute}
	_, err := f.c.Send(context.Background(), m)
	if r := wecom.Classify(err); err == nil || r.Class != wecom.ClassTransient {
		t.Fatalf("lost response: err %v, %+v", err, r)
	}
	res, err := f.c.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	sent, dropped := f.srv.Sent(), f.srv.Dropped()
	if len(sent) != 1 || len(dropped) != 1 || dropped[0].Drop != wecomtest.DropDuplicate {
		t.Fatalf("sent %+v dropped %+v", sent, dropped)
	}
	if res.MsgID != sent[0].MsgID {
		t.Errorf("msgid %q, delivered %q", res.MsgID, sent[0].MsgID)
	}
	if !sent[0].DuplicateCheck {
		t.Error("duplicate check not requested")
	}
}

func TestSendPartialFailure(t *testing.T) {
	f := newFixture(t, nil)
	res, err := f.send(t, "lisi|Ghost|zhangsan", "hello")
	var pe *wecom.PartialError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want *PartialError", err)
	}
	if res == nil || res.MsgID == "" || len(res.InvalidUser) != 1 || res.InvalidUser[0] != "ghost" {
		t.Fatalf("result = %+v", res)
	}
	if len(pe.InvalidUser) != 1 || !strings.Contains(err.Error(), "invaliduser=ghost") {
		t.Errorf("partial error = %v", err)
	}
	if n := len(f.srv.Sent()); n != 2 {
		t.Errorf("delivered %d, want 2", n)
	}

	_, err = f.send(t, "ghost", "hello")
	ae := apiErr(t, err, 81013)
	if !strings.Contains(ae.Hint(), "可见范围") {
		t.Errorf("hint = %q", ae.Hint())
	}
}

func TestSendMarkdownAndOptions(t *testing.T) {
	f := newFixture(t, nil)
	res, err := f.c.Send(context.Background(), wecom.OutMessage{ToUser: "lisi", MsgType: "markdown", Content: "**hi**", Safe: 1})
	if err != nil {
		t.Fatal(err)
	}
	m := f.srv.Sent()[0]
	if m.MsgType != "markdown" || m.Content != "**hi**" || m.MsgID != res.MsgID {
		t.Errorf("delivered %+v", m)
	}
}

func TestSendValidation(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name string
		m    wecom.OutMessage
		want error
	}{
		{"no recipient", wecom.OutMessage{Content: "x"}, wecom.ErrInvalidConfig},
		{"empty content", wecom.OutMessage{ToUser: "lisi"}, wecom.ErrInvalidConfig},
		{"bad type", wecom.OutMessage{ToUser: "lisi", MsgType: "news", Content: "x"}, wecom.ErrInvalidConfig},
		{"too long", wecom.OutMessage{ToUser: "lisi", Content: strings.Repeat("字", 683)}, wecom.ErrTooLarge},
		{"bad interval", wecom.OutMessage{ToUser: "lisi", Content: "x", EnableDuplicateCheck: true, DuplicateCheckInterval: 5 * time.Hour}, wecom.ErrInvalidConfig},
		{"bad safe", wecom.OutMessage{ToUser: "lisi", Content: "x", Safe: 3}, wecom.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.c.Send(context.Background(), tt.m); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if n := f.tr.count("/cgi-bin/message/send"); n != 0 {
		t.Errorf("invalid messages reached the server %d times", n)
	}
	if _, err := f.c.Send(context.Background(), wecom.OutMessage{ToUser: "lisi", Content: strings.Repeat("字", 682)}); err != nil {
		t.Errorf("2046 bytes should pass: %v", err)
	}
}

func TestRecall(t *testing.T) {
	f := newFixture(t, nil)
	res, err := f.send(t, "lisi", "oops")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.c.Recall(context.Background(), res.MsgID); err != nil {
		t.Fatal(err)
	}
	if !f.srv.Sent()[0].Recalled {
		t.Error("not recalled")
	}
	apiErr(t, f.c.Recall(context.Background(), "unknown"), 40058)
	if err := f.c.Recall(context.Background(), ""); !errors.Is(err, wecom.ErrInvalidConfig) {
		t.Errorf("empty msgid: %v", err)
	}
}

func TestUserInfo(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	code := f.srv.IssueCode(testCorp, "ZhangSan")
	u, err := f.c.UserInfo(ctx, code)
	if err != nil || u.UserID != "ZhangSan" || u.OpenID != "" {
		t.Fatalf("member: %+v, %v", u, err)
	}
	_, err = f.c.UserInfo(ctx, code)
	ae := apiErr(t, err, 40029)
	if !strings.Contains(ae.Hint(), "5") {
		t.Errorf("hint = %q", ae.Hint())
	}

	u, err = f.c.UserInfo(ctx, f.srv.IssueCode(testCorp, "visitor"))
	if err != nil || u.UserID != "" || u.OpenID != wecomtest.OpenID(testCorp, "visitor") {
		t.Fatalf("non-member: %+v, %v", u, err)
	}

	code = f.srv.IssueCode(testCorp, "lisi")
	f.clk.Add(5 * time.Minute)
	_, err = f.c.UserInfo(ctx, code)
	apiErr(t, err, 40029)
}

func TestOAuthFlowAgainstFake(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.SetLoginUser("lisi")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for name, link := range map[string]string{
		"oauth": f.c.OAuthURL("https://bridge.example.com/oauth/callback", "s1"),
		"qr":    f.c.QRLoginURL("https://bridge.example.com/oauth/callback", "s1"),
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := noFollow.Get(link)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || resp.StatusCode != http.StatusFound || loc.Query().Get("state") != "s1" {
				t.Fatalf("status %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			u, err := f.c.UserInfo(context.Background(), loc.Query().Get("code"))
			if err != nil || u.UserID != "lisi" {
				t.Fatalf("UserInfo = %+v, %v", u, err)
			}
		})
	}
}

func TestURLBuilders(t *testing.T) {
	c, err := wecom.New(wecom.Config{CorpID: "ww123", Secret: "s", AgentID: 1000002})
	if err != nil {
		t.Fatal(err)
	}
	got := c.OAuthURL("https://bridge.example.com/cb?a=1&b=2", "xyz")
	want := "https://open.weixin.qq.com/connect/oauth2/authorize?appid=ww123&redirect_uri=https%3A%2F%2Fbridge.example.com%2Fcb%3Fa%3D1%26b%3D2&response_type=code&scope=snsapi_base&state=xyz&agentid=1000002#wechat_redirect"
	if got != want {
		t.Errorf("OAuthURL =\n%s\nwant\n%s", got, want)
	}
	got = c.QRLoginURL("https://bridge.example.com/cb", "xyz")
	want = "https://login.work.weixin.qq.com/wwlogin/sso/login?login_type=CorpApp&appid=ww123&agentid=1000002&redirect_uri=https%3A%2F%2Fbridge.example.com%2Fcb&state=xyz"
	if got != want {
		t.Errorf("QRLoginURL =\n%s\nwant\n%s", got, want)
	}
}

func TestUserDepartmentsAndAgent(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	deps, err := f.c.UserDepartments(ctx, "zhangsan")
	if err != nil || len(deps) != 2 || deps[0] != 1 || deps[1] != 3 {
		t.Fatalf("UserDepartments = %v, %v", deps, err)
	}
	_, err = f.c.UserDepartments(ctx, "ghost")
	apiErr(t, err, 60111)

	a, err := f.c.Agent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a.AgentID != testAgent || a.Closed || len(a.AllowUsers) != 2 || a.Name == "" {
		t.Errorf("Agent = %+v", a)
	}
}

// TestErrorsNeverLeakSecrets drives every failure path that could echo a
// URL and checks the error text for the secret and the access token.
func TestErrorsNeverLeakSecrets(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	tok, err := f.c.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: want an error", name)
		}
		msg := err.Error()
		if strings.Contains(msg, testSecret) || strings.Contains(msg, tok) || strings.Contains(msg, url.QueryEscape(testSecret)) {
			t.Errorf("%s: error leaks a secret: %s", name, msg)
		}
		if strings.Contains(msg, "access_token=") || strings.Contains(msg, "corpsecret=") {
			t.Errorf("%s: error shows the query: %s", name, msg)
		}
	}
	// Network failure on an API call with a cached token.
	f.srv.Close()
	_, err = f.send(t, "lisi", "x")
	check("send after close", err)
	if !strings.Contains(err.Error(), "REDACTED") {
		t.Errorf("expected the redacted URL in %v", err)
	}
	// Network failure on gettoken, whose URL carries the secret.
	f.c.InvalidateToken()
	_, err = f.c.Token(ctx)
	check("gettoken after close", err)
	// Context cancellation also produces a *url.Error with the URL.
	f2 := newFixture(t, nil)
	tok2, _ := f2.c.Token(ctx)
	f2.tr.delay["/cgi-bin/message/send"] = 100 * time.Millisecond
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_, err = f2.c.Send(cctx, wecom.OutMessage{ToUser: "lisi", Content: "x"})
	check("cancelled send", err)
	if strings.Contains(err.Error(), tok2) {
		t.Errorf("cancelled send leaks the token: %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want DeadlineExceeded", err)
	}
}

func TestConfigValidation(t *testing.T) {
	err := wecom.Config{APIBase: "ftp://x"}.Validate()
	if !errors.Is(err, wecom.ErrInvalidConfig) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"corp id", "secret", "agent id", "api base"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
	if _, err := wecom.New(wecom.Config{}); !errors.Is(err, wecom.ErrInvalidConfig) {
		t.Errorf("New with an empty config: %v", err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "wecom", wecom.Config{CorpID: "ww1", Secret: testSecret, AgentID: 1})
	if strings.Contains(buf.String(), testSecret) || !strings.Contains(buf.String(), "redacted") {
		t.Errorf("logged config: %s", buf.String())
	}
}

func TestAPIErrorHelpers(t *testing.T) {
	tests := []struct {
		code     int
		msg      string
		temp     bool
		ip       string
		hintWant string
	}{
		{-1, "system busy", true, "", "retry"},
		{45009, "api freq out of limit", true, "", "60"},
		{45033, "concurrency", true, "", "concurrent"},
		{60020, "not allow to access from your ip, from ip: 2001:db8::1, more info", false, "2001:db8::1", "2001:db8::1"},
		{60020, "not allow to access from your ip", false, "", "企业可信IP"},
		{50001, "redirect_url not trusted", false, "", "可信域名"},
		{48002, "api forbidden", false, "", "secret"},
		{40029, "invalid code", false, "", "single-use"},
		{81013, "all invalid", false, "", "visible range"},
		{40014, "invalid access_token", false, "", "token"},
		{42001, "access_token expired", false, "", "token"},
		{45002, "content size out of limit", false, "", "2048"},
		{60011, "no privilege", false, "", "可见范围"},
		{40056, "invalid agentid", false, "", "agent_id"},
		{40058, "invalid param", false, "", "recall"},
		{99999, "whatever, from ip: not-an-ip", false, "", ""},
	}
	for _, tt := range tests {
		e := &wecom.APIError{Code: tt.code, Msg: tt.msg, Path: "/cgi-bin/message/send"}
		if e.Temporary() != tt.temp {
			t.Errorf("%d: Temporary = %v", tt.code, e.Temporary())
		}
		if e.EgressIP() != tt.ip {
			t.Errorf("%d: EgressIP = %q, want %q", tt.code, e.EgressIP(), tt.ip)
		}
		if !strings.Contains(e.Hint(), tt.hintWant) || (tt.hintWant == "") != (e.Hint() == "") {
			t.Errorf("%d: Hint = %q, want it to contain %q", tt.code, e.Hint(), tt.hintWant)
		}
		if !strings.Contains(e.Error(), tt.msg) {
			t.Errorf("%d: Error() = %q lacks errmsg", tt.code, e.Error())
		}
	}
	if wecom.IsTokenError(errors.New("x")) || !wecom.IsTokenError(&wecom.APIError{Code: 42001}) {
		t.Error("IsTokenError")
	}
}

// TestSecretOfAnotherApp is what the daemon's check command relies on: a
// secret that belongs to a different app of the corp is caught by Agent.
func TestSecretOfAnotherApp(t *testing.T) {
	f := newFixture(t, func(c *wecom.Config) { c.Secret = "other-app-secret" })
	f.srv.AddApp(testCorp, "other-app-secret", 1000003)
	_, err := f.c.Agent(context.Background())
	ae := apiErr(t, err, 301002)
	if !strings.Contains(ae.Hint(), "agent_id") {
		t.Errorf("hint = %q", ae.Hint())
	}
	_, err = f.send(t, "lisi", "x")
	apiErr(t, err, 301002)
}
