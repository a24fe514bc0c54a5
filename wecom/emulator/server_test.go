package emulator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

const (
	corpID = "ww0000000000000001"
	secret = "app-secret-0001"
	agent  = int64(1000002)
)

// clock is a settable test clock.
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

func newServer(t *testing.T, opts emulator.Options) (*emulator.Server, *clock) {
	t.Helper()
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	s, err := emulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.AddApp(corpID, secret, agent)
	s.AddUser("ZhangSan", 1, 2)
	s.AddUser("lisi")
	return s, clk
}

type answer struct {
	ErrCode     int    `json:"errcode"`
	ErrMsg      string `json:"errmsg"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	MsgID       string `json:"msgid"`
	InvalidUser string `json:"invaliduser"`
	UserID      string `json:"userid"`
	OpenID      string `json:"openid"`
	Department  []int  `json:"department"`
}

func get(t *testing.T, u string) answer {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("decode %s: %v", u, err)
	}
	return a
}

func post(t *testing.T, u string, body any) answer {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(u, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return a
}

func token(t *testing.T, s *emulator.Server) string {
	t.Helper()
	a := get(t, s.URL()+"/cgi-bin/gettoken?corpid="+corpID+"&corpsecret="+secret)
	if a.ErrCode != 0 || a.AccessToken == "" || a.ExpiresIn != 7200 {
		t.Fatalf("gettoken = %+v", a)
	}
	return a.AccessToken
}

func sendText(t *testing.T, s *emulator.Server, tok, to, content string, extra map[string]any) answer {
	t.Helper()
	body := map[string]any{"touser": to, "msgtype": "text", "agentid": agent, "text": map[string]string{"content": content}}
	for k, v := range extra {
		body[k] = v
	}
	return post(t, s.URL()+"/cgi-bin/message/send?access_token="+url.QueryEscape(tok), body)
}

func TestGetToken(t *testing.T) {
	s, clk := newServer(t, emulator.Options{})
	tests := []struct {
		name, query string
		code        int
	}{
		{"wrong secret", "corpid=" + corpID + "&corpsecret=nope", 40001},
		{"unknown corp", "corpid=wwx&corpsecret=" + secret, 40013},
		{"missing corpid", "corpsecret=" + secret, 41002},
		{"missing secret", "corpid=" + corpID, 41004},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := get(t, s.URL()+"/cgi-bin/gettoken?"+tt.query)
			if a.ErrCode != tt.code || a.AccessToken != "" {
				t.Errorf("got %+v, want errcode %d", a, tt.code)
			}
			if !strings.Contains(a.ErrMsg, "from ip: 127.0.0.1") {
				t.Errorf("errmsg %q lacks the caller ip", a.ErrMsg)
			}
		})
	}

	tok := token(t, s)
	check := func(tok string, want int) {
		t.Helper()
		a := get(t, s.URL()+"/cgi-bin/user/get?userid=lisi&access_token="+tok)
		if a.ErrCode != want {
			t.Errorf("user/get with token: errcode %d, want %d (%s)", a.ErrCode, want, a.ErrMsg)
		}
	}
	check(tok, 0)
	check("garbage", 40014)
	if a := get(t, s.URL()+"/cgi-bin/user/get?userid=lisi"); a.ErrCode != 41001 {
		t.Errorf("missing token: %+v", a)
	}
	clk.Add(7199 * time.Second)
	check(tok, 0)
	clk.Add(time.Second)
	check(tok, 42001)

	tok2 := token(t, s)
	s.ExpireTokens()
	check(tok2, 42001)
	if n := s.TokenCalls(); n != 6 {
		t.Errorf("TokenCalls = %d, want 6", n)
	}
}

func TestSendRecordsAndTruncates(t *testing.T) {
	s, _ := newServer(t, emulator.Options{})
	tok := token(t, s)
	long := strings.Repeat("a", 2047) + "中文" // the CJK character straddles byte 2048
	a := sendText(t, s, tok, "zhangsan|LISI|Ghost", long, nil)
	if a.ErrCode != 0 || a.MsgID == "" || a.InvalidUser != "ghost" {
		t.Fatalf("send = %+v", a)
	}
	sent := s.Sent()
	if len(sent) != 2 {
		t.Fatalf("Sent = %d messages, want 2", len(sent))
	}
	for _, m := range sent {
		if len(m.Content) != 2047 || !m.Truncated || !utf8.ValidString(m.Content) {
			t.Errorf("content %d bytes, truncated %v", len(m.Content), m.Truncated)
		}
		if m.MsgID != a.MsgID || m.AgentID != agent || m.MsgType != "text" {
			t.Errorf("record = %+v", m)
		}
	}
	if sent[0].ToUser != "ZhangSan" || sent[1].ToUser != "lisi" {
		t.Errorf("recipients = %s, %s", sent[0].ToUser, sent[1].ToUser)
	}

	exact := strings.Repeat("b", 2048)
	sendText(t, s, tok, "lisi", exact, nil)
	if m := s.Sent()[2]; m.Content != exact || m.Truncated {
		t.Errorf("2048 bytes should pass untouched, got %d truncated=%v", len(m.Content), m.Truncated)
	}

	if a := sendText(t, s, tok, "ghost|nobody", "hi", nil); a.ErrCode != 81013 {
		t.Errorf("all invalid: %+v", a)
	}
	if a := sendText(t, s, tok, "lisi", "", nil); a.ErrCode != 44004 {
		t.Errorf("empty content: %+v", a)
	}
	if a := sendText(t, s, tok, "lisi", "x", map[string]any{"agentid": 99}); a.ErrCode != 301002 {
		t.Errorf("other agent: %+v", a)
	}
	if a := sendText(t, s, tok, "lisi", "x", map[string]any{"msgtype": "news"}); a.ErrCode != 40008 {
		t.Errorf("unsupported msgtype: %+v", a)
	}
	if a := sendText(t, s, tok, "@all", "to all", nil); a.ErrCode != 0 || len(s.Sent()) != 5 {
		t.Errorf("@all: %+v, %d sent", a, len(s.Sent()))
	}
}

func TestSendRateLimitDrops(t *testing.T) {
	s, clk := newServer(t, emulator.Options{})
	tok := token(t, s)
	for i := range 35 {
		if a := sendText(t, s, tok, "lisi", "m", nil); a.ErrCode != 0 {
			t.Fatalf("send %d: %+v", i, a)
		}
	}
	if got, dropped := len(s.Sent()), len(s.Dropped()); got != 30 || dropped != 5 {
		t.Fatalf("sent %d dropped %d, want 30 and 5", got, dropped)
	}
	// Another member has a window of their own.
	sendText(t, s, tok, "zhangsan", "m", nil)
	if len(s.Sent()) != 31 {
		t.Error("the limit is per member")
	}
	clk.Add(61 * time.Second)
	sendText(t, s, tok, "lisi", "m", nil)
	if len(s.Sent()) != 32 {
		t.Error("the window should have moved on")
	}
}

func TestSendDuplicateCheck(t *testing.T) {
	s, clk := newServer(t, emulator.Options{})
	tok := token(t, s)
	dup := map[string]any{"enable_duplicate_check": 1, "duplicate_check_interval": 60}
	a1 := sendText(t, s, tok, "lisi", "same", dup)
	a2 := sendText(t, s, tok, "lisi", "same", dup)
	if a1.ErrCode != 0 || a2.ErrCode != 0 || a1.MsgID != a2.MsgID {
		t.Fatalf("answers %+v %+v", a1, a2)
	}
	if n := len(s.Sent()); n != 1 {
		t.Fatalf("duplicate delivered: %d", n)
	}
	if !s.Sent()[0].DuplicateCheck {
		t.Error("DuplicateCheck not recorded")
	}
	sendText(t, s, tok, "lisi", "other", dup)
	sendText(t, s, tok, "lisi", "same", nil) // no check requested
	if n := len(s.Sent()); n != 3 {
		t.Fatalf("sent %d, want 3", n)
	}
	clk.Add(61 * time.Second)
	sendText(t, s, tok, "lisi", "same", dup)
	if n := len(s.Sent()); n != 4 {
		t.Fatalf("after the interval: sent %d, want 4", n)
	}
}

func TestRecall(t *testing.T) {
	s, clk := newServer(t, emulator.Options{})
	tok := token(t, s)
	a := sendText(t, s, tok, "lisi|zhangsan", "oops", nil)
	u := s.URL() + "/cgi-bin/message/recall?access_token=" + tok
	if r := post(t, u, map[string]string{"msgid": a.MsgID}); r.ErrCode != 0 {
		t.Fatalf("recall: %+v", r)
	}
	for _, m := range s.Sent() {
		if !m.Recalled {
			t.Errorf("%s not recalled", m.ToUser)
		}
	}
	if r := post(t, u, map[string]string{"msgid": "nope"}); r.ErrCode != 40058 {
		t.Errorf("unknown msgid: %+v", r)
	}
	b := sendText(t, s, tok, "lisi", "old", nil)
	clk.Add(25 * time.Hour)
	tok = token(t, s)
	u = s.URL() + "/cgi-bin/message/recall?access_token=" + tok
	if r := post(t, u, map[string]string{"msgid": b.MsgID}); r.ErrCode != 42052 {
		t.Errorf("old msgid: %+v", r)
	}
}

func TestCodes(t *testing.T) {
	s, clk := newServer(t, emulator.Options{CodeTTL: time.Minute})
	tok := token(t, s)
	info := func(code string) answer {
		return get(t, s.URL()+"/cgi-bin/auth/getuserinfo?access_token="+tok+"&code="+code)
	}
	c := s.IssueCode(corpID, "ZhangSan")
	if a := info(c); a.ErrCode != 0 || a.UserID != "ZhangSan" {
		t.Fatalf("member: %+v", a)
	}
	if a := info(c); a.ErrCode != 40029 {
		t.Errorf("replayed code: %+v", a)
	}
	c = s.IssueCode(corpID, "outsider")
	if a := info(c); a.ErrCode != 0 || a.UserID != "" || a.OpenID != emulator.OpenID(corpID, "outsider") {
		t.Errorf("non-member: %+v", a)
	}
	c = s.IssueCode(corpID, "lisi")
	clk.Add(time.Minute)
	if a := info(c); a.ErrCode != 40029 {
		t.Errorf("expired code: %+v", a)
	}
	if a := info(s.IssueCode("wwother", "lisi")); a.ErrCode != 40029 {
		t.Errorf("code of another corp: %+v", a)
	}
	if a := info(""); a.ErrCode != 41008 {
		t.Errorf("missing code: %+v", a)
	}
}

func TestLoginPagesRedirect(t *testing.T) {
	s, _ := newServer(t, emulator.Options{})
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	fetch := func(u string) *http.Response {
		t.Helper()
		resp, err := noFollow.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	redirect := url.QueryEscape("https://bridge.example.com/oauth/callback?x=1")
	oauth := s.URL() + "/connect/oauth2/authorize?appid=" + corpID + "&redirect_uri=" + redirect +
		"&response_type=code&scope=snsapi_base&state=st8&agentid=1000002#wechat_redirect"
	sso := s.URL() + "/wwlogin/sso/login?login_type=CorpApp&appid=" + corpID + "&agentid=1000002&redirect_uri=" + redirect + "&state=st8"

	if r := fetch(oauth); r.StatusCode != http.StatusForbidden {
		t.Errorf("without a login user: %d", r.StatusCode)
	}
	s.SetLoginUser("lisi")
	tok := token(t, s)
	for name, u := range map[string]string{"oauth": oauth, "sso": sso} {
		t.Run(name, func(t *testing.T) {
			r := fetch(u)
			if r.StatusCode != http.StatusFound {
				t.Fatalf("status %d", r.StatusCode)
			}
			loc, err := url.Parse(r.Header.Get("Location"))
			if err != nil || loc.Host != "bridge.example.com" || loc.Query().Get("state") != "st8" || loc.Query().Get("x") != "1" {
				t.Fatalf("Location = %s", r.Header.Get("Location"))
			}
			a := get(t, s.URL()+"/cgi-bin/auth/getuserinfo?access_token="+tok+"&code="+loc.Query().Get("code"))
			if a.UserID != "lisi" {
				t.Errorf("code resolves to %+v", a)
			}
		})
	}
	bad := []string{
		strings.Replace(oauth, "appid="+corpID, "appid=wwnope", 1),
		strings.Replace(oauth, "response_type=code", "response_type=token", 1),
		strings.Replace(oauth, "scope=snsapi_base", "scope=snsapi_userinfo", 1),
		strings.Replace(oauth, "agentid=1000002", "agentid=7", 1),
		strings.Replace(oauth, redirect, "not-a-url", 1),
		strings.Replace(sso, "login_type=CorpApp", "login_type=ServiceApp", 1),
		strings.Replace(sso, "&agentid=1000002", "", 1),
	}
	for _, u := range bad {
		if r := fetch(u); r.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", u, r.StatusCode)
		}
	}
}

func TestUserAndAgent(t *testing.T) {
	s, _ := newServer(t, emulator.Options{})
	tok := token(t, s)
	if a := get(t, s.URL()+"/cgi-bin/user/get?access_token="+tok+"&userid=zhangsan"); a.ErrCode != 0 || len(a.Department) != 2 {
		t.Errorf("user/get: %+v", a)
	}
	if a := get(t, s.URL()+"/cgi-bin/user/get?access_token="+tok+"&userid=ghost"); a.ErrCode != 60111 {
		t.Errorf("unknown user: %+v", a)
	}
	if a := get(t, s.URL()+"/cgi-bin/agent/get?access_token="+tok+"&agentid=5"); a.ErrCode != 301002 {
		t.Errorf("other agent: %+v", a)
	}
}

func TestInjection(t *testing.T) {
	s, _ := newServer(t, emulator.Options{})
	tok := token(t, s)
	s.FailNext("/cgi-bin/message/send", 60020, "not allow to access from your ip, from ip: 203.0.113.7", 2)
	s.FailHTTP("/cgi-bin/message/send", http.StatusBadGateway, 1)
	for range 2 {
		if a := sendText(t, s, tok, "lisi", "x", nil); a.ErrCode != 60020 || !strings.Contains(a.ErrMsg, "203.0.113.7") {
			t.Fatalf("injected: %+v", a)
		}
	}
	resp, err := http.Post(s.URL()+"/cgi-bin/message/send?access_token="+tok, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d", resp.StatusCode)
	}
	if len(s.Sent()) != 0 {
		t.Error("injected failures must not deliver")
	}
	if a := sendText(t, s, tok, "lisi", "x", nil); a.ErrCode != 0 {
		t.Errorf("after the injections: %+v", a)
	}
}

func TestWaitSentAndOnSend(t *testing.T) {
	s, _ := newServer(t, emulator.Options{})
	tok := token(t, s)
	var mu sync.Mutex
	var hooked []string
	s.OnSend(func(m emulator.SentMessage) {
		mu.Lock()
		hooked = append(hooked, m.Content)
		mu.Unlock()
	})
	go func() {
		for _, c := range []string{"a", "b", "c"} {
			sendText(t, s, tok, "lisi", c, nil)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := s.WaitSent(ctx, 3)
	if err != nil || len(got) < 3 {
		t.Fatalf("WaitSent = %d, %v", len(got), err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if _, err := s.WaitSent(short, 4); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitSent beyond what was sent: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(hooked, "") != "abc" {
		t.Errorf("hook saw %q", hooked)
	}
}
