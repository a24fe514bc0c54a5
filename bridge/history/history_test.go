package history

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

const (
	uaDesktop = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
	uaWeCom   = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 wxwork/4.1.26 MicroMessenger/7.0.1 Language/zh ColorScheme/Light"
)

// webBrowser is a minimal cookie-keeping HTTP client that does not follow
// redirects, so every step of the sign-in can be checked.
type webBrowser struct {
	t   *testing.T
	h   *harness
	ua  string
	jar map[string]*http.Cookie
	hc  *http.Client
}

func newBrowser(h *harness, ua string) *webBrowser {
	return &webBrowser{t: h.t, h: h, ua: ua, jar: map[string]*http.Cookie{}, hc: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}}
}

// local maps a public URL (https://bot.example.com/...) to the daemon.
func (b *webBrowser) local(u string) string {
	for _, public := range []string{"https://bot.example.com", "http://bot.example.com"} {
		if rest, ok := strings.CutPrefix(u, public); ok {
			return b.h.base + rest
		}
	}
	if strings.HasPrefix(u, "/") {
		return b.h.base + u
	}
	return u
}

type webPage struct {
	status int
	header http.Header
	body   string
	set    []*http.Cookie
}

func (p webPage) location() string { return p.header.Get("Location") }

func (b *webBrowser) do(method, target string, form url.Values) webPage {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.local(target), body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("User-Agent", b.ua)
	if strings.HasPrefix(req.URL.String(), b.h.base) {
		for _, c := range b.jar {
			req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	p := webPage{status: resp.StatusCode, header: resp.Header, body: readAll(b.t, resp), set: resp.Cookies()}
	if strings.HasPrefix(req.URL.String(), b.h.base) {
		for _, c := range p.set {
			if c.MaxAge < 0 || c.Value == "" {
				delete(b.jar, c.Name)
			} else {
				b.jar[c.Name] = c
			}
		}
	}
	return p
}

func (b *webBrowser) get(target string) webPage {
	b.t.Helper()
	return b.do(http.MethodGet, target, nil)
}

// begin asks for path without a session and returns the WeCom URL the
// daemon sends the browser to.
func (b *webBrowser) begin(path string) string {
	b.t.Helper()
	p := b.get(path)
	if p.status != http.StatusFound || !strings.HasPrefix(p.location(), b.h.wc.URL()) {
		b.t.Fatalf("GET %s: %d to %q, want a redirect to WeCom", path, p.status, p.location())
	}
	return p.location()
}

// atWeCom follows the WeCom login page and returns the callback URL it
// redirects to (with code and state).
func (b *webBrowser) atWeCom(wecomURL string) string {
	b.t.Helper()
	p := b.get(wecomURL)
	if p.status != http.StatusFound {
		b.t.Fatalf("WeCom login page: %d %s", p.status, p.body)
	}
	return p.location()
}

// login signs in as user and returns the page landed on.
func (b *webBrowser) login(user, path string) webPage {
	b.t.Helper()
	b.h.wc.SetLoginUser(user)
	cb := b.atWeCom(b.begin(path))
	p := b.get(cb)
	if p.status != http.StatusSeeOther {
		b.t.Fatalf("callback: %d %s", p.status, p.body)
	}
	return b.get(p.location())
}

func (b *webBrowser) session() *http.Cookie {
	for _, name := range []string{"__Host-wb_session", "wb_session"} {
		if c := b.jar[name]; c != nil {
			return c
		}
	}
	return nil
}

var seedN atomic.Uint64

type historySeed struct {
	app     string
	chat    string // a group chat's id (AI bot)
	status  kv.Status
	conv    int
	newConv bool
	ref     string
	at      time.Time
	atts    []kv.Attachment // the question's attachments, as the intake records them
}

// seed records a question and its answer for user directly in the store.
func seedHistory(t testing.TB, st *kv.Store, user, q, a string, o historySeed) uint64 {
	t.Helper()
	if o.app == "" {
		o.app = "helpdesk"
	}
	if o.status == "" {
		o.status = kv.StatusDone
	}
	job, _, err := st.Accept(kv.Question{App: o.app, User: user, DedupKey: fmt.Sprintf("seed:%d", seedN.Add(1)),
		Kind: kv.KindQuestion, Text: q, MsgType: "text", Received: o.at, Chat: o.chat, Attachments: o.atts})
	if err != nil {
		t.Fatal(err)
	}
	if a != "" {
		job.Answer, job.AnswerDone = a, true
		if err := st.CompleteAnswer(kv.AnswerUpdate{Job: job, Entry: &kv.EntryUpdate{
			Answer: a, Status: kv.StatusAnswering, ConvSeq: o.conv, NewConv: o.newConv, RefID: o.ref,
		}}); err != nil {
			t.Fatal(err)
		}
	}
	final := o.status
	if final == kv.StatusPending {
		final = ""
	}
	if err := st.FinishJob(job, final); err != nil {
		t.Fatal(err)
	}
	if o.status == kv.StatusAnswering {
		if err := st.SetEntryStatus(user, job.ID, kv.StatusAnswering); err != nil {
			t.Fatal(err)
		}
	}
	return job.ID
}

// The whole flow through the browser (QR) login: the daemon sends the
// webBrowser to WeCom with a fresh state, the callback exchanges the code and
// sets the session cookie, and the page shows this user's questions and
// answers only.
func TestHistoryLoginShowsOwnHistory(t *testing.T) {
	h := newHarness(t, nil)
	seedHistory(t, h.store, "zhangsan", "报销流程是什么？", "报销需要**发票**和审批单。", historySeed{newConv: true})
	seedHistory(t, h.store, "lisi", "李四的私密问题", "李四的私密回答", historySeed{app: "chat", newConv: true})

	b := newBrowser(h, uaDesktop)
	h.wc.SetLoginUser("zhangsan")
	loc := b.begin("/history")
	u, _ := url.Parse(loc)
	q := u.Query()
	if u.Path != "/wwlogin/sso/login" || q.Get("login_type") != "CorpApp" || q.Get("appid") != testCorp ||
		q.Get("agentid") != "1000002" || q.Get("redirect_uri") != "https://bot.example.com/history/callback" {
		t.Fatalf("login redirect = %s", loc)
	}
	if st := q.Get("state"); !regexp.MustCompile(`^[0-9a-f]{48}$`).MatchString(st) {
		t.Fatalf("state %q: want 48 hex characters (WeCom allows a-zA-Z0-9)", st)
	}
	sc := b.jar["__Host-wb_state"]
	if sc == nil || !sc.HttpOnly || !sc.Secure || sc.SameSite != http.SameSiteLaxMode || sc.Path != "/" || sc.MaxAge != 600 {
		t.Fatalf("state cookie = %+v", sc)
	}
	if strings.Contains(sc.Value, q.Get("state")) {
		t.Error("the state cookie holds the state itself, not a MAC of it")
	}

	cb := b.atWeCom(loc)
	p := b.get(cb)
	if p.status != http.StatusSeeOther || p.location() != "/history" {
		t.Fatalf("callback: %d to %q: %s", p.status, p.location(), p.body)
	}
	if b.jar["__Host-wb_state"] != nil {
		t.Error("the state cookie outlives the callback")
	}
	sess := b.session()
	if sess == nil {
		t.Fatal("no session cookie")
	}
	var raw *http.Cookie
	for _, c := range p.set {
		if c.Name == "__Host-wb_session" {
			raw = c
		}
	}
	if !raw.HttpOnly || !raw.Secure || raw.SameSite != http.SameSiteLaxMode || raw.MaxAge != 7*24*3600 || raw.Path != "/" {
		t.Errorf("session cookie attributes = %+v", raw)
	}
	if strings.Contains(raw.Value, "zhangsan") {
		t.Error("the session cookie carries the user id")
	}

	p = b.get("/history")
	if p.status != http.StatusOK {
		t.Fatalf("page: %d %s", p.status, p.body)
	}
	for _, want := range []string{"我的问答记录", "报销流程是什么？", "<strong>发票</strong>", "zhangsan", "helpdesk", "/new · 新对话从这里开始"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, leak := range []string{"李四", "lisi", "secret-", "app-llmtest", "sk-llmtest"} {
		if strings.Contains(p.body, leak) {
			t.Errorf("page shows %q", leak)
		}
	}
	checkSecurityHeaders(t, p)
	if cc := p.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("page Cache-Control = %q", cc)
	}
}

func checkSecurityHeaders(t *testing.T, p webPage) {
	t.Helper()
	csp := p.header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'self'", "object-src 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP allows inline code: %q", csp)
	}
	if p.header.Get("X-Content-Type-Options") != "nosniff" || p.header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("headers: %v", p.header)
	}
}

// Inside the WeCom client the daemon uses the in-app OAuth link, and after
// signing in the browser lands on the page it first asked for.
func TestHistoryInAppOAuthReturnsToPage(t *testing.T) {
	h := newHarness(t, nil)
	seedHistory(t, h.store, "zhangsan", "关于年假的问题", "年假有五天。", historySeed{newConv: true})
	seedHistory(t, h.store, "zhangsan", "关于报销的问题", "找财务。", historySeed{})
	b := newBrowser(h, uaWeCom)
	h.wc.SetLoginUser("zhangsan")
	loc := b.begin("/history?q=%E5%B9%B4%E5%81%87")
	u, _ := url.Parse(loc)
	q := u.Query()
	if u.Path != "/connect/oauth2/authorize" || q.Get("scope") != "snsapi_base" || q.Get("agentid") != "1000002" ||
		q.Get("appid") != testCorp || u.Fragment != "wechat_redirect" {
		t.Fatalf("in-app redirect = %s", loc)
	}
	p := b.get(b.atWeCom(loc))
	if p.status != http.StatusSeeOther || p.location() != "/history?q=%E5%B9%B4%E5%81%87" {
		t.Fatalf("callback: %d to %q", p.status, p.location())
	}
	p = b.get(p.location())
	if !strings.Contains(p.body, "年假有五天") || strings.Contains(p.body, "找财务") {
		t.Errorf("search result page:\n%s", p.body)
	}
}

// history.login_app chooses which app's agentid signs users in.
func TestHistoryLoginApp(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.LoginApp = "chat" })
	b := newBrowser(h, uaDesktop)
	h.wc.SetLoginUser("zhangsan")
	loc := b.begin("/history")
	if u, _ := url.Parse(loc); u.Query().Get("agentid") != "1000003" {
		t.Fatalf("login redirect = %s", loc)
	}
	p := b.get(b.atWeCom(loc))
	if p.status != http.StatusSeeOther {
		t.Fatalf("callback with the chat app: %d %s", p.status, p.body)
	}
}

// A code works once: replaying the callback, or using the code with a
// fresh state, does not sign anyone in.
func TestHistoryReplayedCodeRejected(t *testing.T) {
	h := newHarness(t, nil)
	seedHistory(t, h.store, "zhangsan", "问题", "回答", historySeed{})
	b := newBrowser(h, uaDesktop)
	h.wc.SetLoginUser("zhangsan")
	loc := b.begin("/history")
	stateCookie := *b.jar["__Host-wb_state"]
	cb := b.atWeCom(loc)
	if p := b.get(cb); p.status != http.StatusSeeOther {
		t.Fatalf("first use: %d", p.status)
	}

	// The same callback again, even with the state cookie put back (an
	// attacker who copied both): the state is spent.
	b2 := newBrowser(h, uaDesktop)
	b2.jar[stateCookie.Name] = &stateCookie
	p := b2.get(cb)
	if p.status != http.StatusBadRequest || b2.session() != nil || !strings.Contains(p.body, "登录已失效") {
		t.Fatalf("replayed callback: %d, session %v\n%s", p.status, b2.session(), p.body)
	}

	// The same code with a fresh, valid state: WeCom refuses the code.
	b3 := newBrowser(h, uaDesktop)
	loc3 := b3.begin("/history")
	u3, _ := url.Parse(loc3)
	code := queryOf(t, cb).Get("code")
	p = b3.get("/history/callback?code=" + url.QueryEscape(code) + "&state=" + u3.Query().Get("state"))
	if p.status != http.StatusBadRequest || b3.session() != nil || !strings.Contains(p.body, "登录未完成") {
		t.Fatalf("reused code: %d, session %v\n%s", p.status, b3.session(), p.body)
	}
	if strings.Contains(p.body, "问题") || strings.Contains(p.body, "回答") {
		t.Error("a refused sign-in shows data")
	}
}

func queryOf(t *testing.T, raw string) url.Values {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

// The state must be the one this browser started with.
func TestHistoryStateMismatchRejected(t *testing.T) {
	h := newHarness(t, nil)
	h.wc.SetLoginUser("zhangsan")
	victim := newBrowser(h, uaDesktop)
	attacker := newBrowser(h, uaDesktop)

	// Login CSRF: the attacker's own callback link (code and state of the
	// attacker's sign-in) opened in the victim's browser, which started a
	// sign-in of its own.
	victim.begin("/history")
	attackerCB := attacker.atWeCom(attacker.begin("/history"))
	p := victim.get(attackerCB)
	if p.status != http.StatusBadRequest || victim.session() != nil {
		t.Fatalf("foreign state: %d, session %v", p.status, victim.session())
	}

	// No state cookie at all.
	fresh := newBrowser(h, uaDesktop)
	p = fresh.get(attackerCB)
	if p.status != http.StatusBadRequest || fresh.session() != nil {
		t.Fatalf("no state cookie: %d", p.status)
	}

	// A state cookie for another state, and a state altered in the URL.
	b := newBrowser(h, uaDesktop)
	loc := b.begin("/history")
	cb := b.atWeCom(loc)
	q := queryOf(t, cb)
	st := q.Get("state")
	alt := "0" + st[1:]
	if alt == st {
		alt = "1" + st[1:]
	}
	keep := *b.jar["__Host-wb_state"]
	for _, bad := range []string{alt, "", st + "00", strings.ToUpper(st)} {
		b.jar[keep.Name] = &keep
		p = b.get("/history/callback?code=" + url.QueryEscape(q.Get("code")) + "&state=" + url.QueryEscape(bad))
		if p.status != http.StatusBadRequest || b.session() != nil {
			t.Fatalf("state %q: %d", bad, p.status)
		}
	}
	// The refused attempts did not spend this browser's real state. (The
	// code itself is still unused: the daemon never sent it to WeCom.)
	b.jar[keep.Name] = &keep
	if p = b.get(cb); p.status != http.StatusSeeOther || b.session() == nil {
		t.Fatalf("the genuine callback after refused ones: %d %s", p.status, p.body)
	}

	// A tampered state cookie.
	b4 := newBrowser(h, uaDesktop)
	loc4 := b4.begin("/history")
	c := b4.jar["__Host-wb_state"]
	c.Value = flipChar(c.Value, 3)
	if p = b4.get(b4.atWeCom(loc4)); p.status != http.StatusBadRequest || b4.session() != nil {
		t.Fatalf("tampered state cookie: %d", p.status)
	}
}

// flip changes the character at i of a base64url string.
func flipChar(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

// A forged, tampered, revoked or expired session cookie leads to the
// sign-in, never to data.
func TestHistoryBadSessionCookie(t *testing.T) {
	h := newHarness(t, nil)
	seedHistory(t, h.store, "zhangsan", "机密问题", "机密回答", historySeed{})
	b := newBrowser(h, uaDesktop)
	if p := b.login("zhangsan", "/history"); !strings.Contains(p.body, "机密回答") {
		t.Fatal("signed in, but no data")
	}
	good := *b.session()
	token, sig, _ := strings.Cut(good.Value, ".")
	for name, value := range map[string]string{
		"mac flipped":   token + "." + flipChar(sig, 5),
		"token flipped": flipChar(token, 5) + "." + sig,
		"no mac":        token,
		"empty mac":     token + ".",
		"garbage":       "x.y",
		"forged":        strings.Repeat("A", 43) + "." + strings.Repeat("A", 43),
		"other user":    strings.Replace(good.Value, token, b64url.EncodeToString([]byte("zhangsan"+strings.Repeat("x", 24))), 1),
	} {
		x := newBrowser(h, uaDesktop)
		x.jar[good.Name] = &http.Cookie{Name: good.Name, Value: value}
		for _, path := range []string{"/history", "/history/export.json", "/history/export.md", "/history?user=zhangsan"} {
			p := x.get(path)
			if p.status != http.StatusFound || !strings.HasPrefix(p.location(), h.wc.URL()) || strings.Contains(p.body, "机密") {
				t.Errorf("%s cookie, %s: %d to %q", name, path, p.status, p.location())
			}
		}
		if x.session() != nil {
			t.Errorf("%s cookie: not cleared", name)
		}
	}
}

func TestHistorySessionExpires(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.SessionTTL = time.Second })
	seedHistory(t, h.store, "zhangsan", "机密问题", "机密回答", historySeed{})
	b := newBrowser(h, uaDesktop)
	b.login("zhangsan", "/history")
	if c := b.session(); c == nil || c.MaxAge != 1 {
		t.Fatalf("session cookie %+v, want Max-Age=1", c)
	}
	time.Sleep(1100 * time.Millisecond)
	// The browser would have dropped it; a replayed copy is refused too.
	p := b.get("/history")
	if p.status != http.StatusFound || strings.Contains(p.body, "机密") {
		t.Fatalf("expired session: %d", p.status)
	}
}

// A user sees only their own history; another user's id in the query is a
// 403, for the page and the exports.
func TestHistoryOtherUserForbidden(t *testing.T) {
	h := newHarness(t, nil)
	seedHistory(t, h.store, "zhangsan", "张三的问题", "张三的回答", historySeed{})
	seedHistory(t, h.store, "lisi", "李四的问题", "李四的回答", historySeed{})
	b := newBrowser(h, uaDesktop)
	b.login("zhangsan", "/history")
	for _, path := range []string{"/history?user=lisi", "/history/export.md?user=lisi", "/history/export.json?user=lisi", "/history?user=LISI&q=%E6%9D%8E"} {
		p := b.get(path)
		if p.status != http.StatusForbidden || strings.Contains(p.body, "李四的") {
			t.Errorf("%s: %d\n%s", path, p.status, p.body)
		}
		checkSecurityHeaders(t, p)
	}
	// Naming oneself is fine, in any case.
	for _, self := range []string{"zhangsan", "ZhangSan"} {
		if p := b.get("/history?user=" + self); p.status != http.StatusOK || !strings.Contains(p.body, "张三的回答") || strings.Contains(p.body, "管理员视图") {
			t.Errorf("own id %s in the query: %d", self, p.status)
		}
	}
	// The admin picker is not shown to non-admins.
	if p := b.get("/history"); strings.Contains(p.body, "管理员") {
		t.Error("a non-admin sees admin tools")
	}
}

// Admins may view and export anyone's history with ?user=.
func TestHistoryAdminViewsUser(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Admins = []string{"WangWu"} }) // userids ignore case
	seedHistory(t, h.store, "zhangsan", "张三的问题", "张三的回答", historySeed{})
	seedHistory(t, h.store, "wangwu", "王五的问题", "王五的回答", historySeed{})
	b := newBrowser(h, uaDesktop)
	p := b.login("wangwu", "/history")
	if !strings.Contains(p.body, "王五的回答") || !strings.Contains(p.body, "管理员：查看成员记录") {
		t.Fatalf("admin's own page:\n%s", p.body)
	}
	p = b.get("/history?user=zhangsan")
	if p.status != http.StatusOK || !strings.Contains(p.body, "张三的回答") || strings.Contains(p.body, "王五的回答") ||
		!strings.Contains(p.body, "管理员视图") {
		t.Fatalf("admin view: %d\n%s", p.status, p.body)
	}
	// Links on the page keep the viewed user.
	if !strings.Contains(p.body, `href="/history/export.json?user=zhangsan"`) || !strings.Contains(p.body, `name="user" value="zhangsan"`) {
		t.Error("export link or search form loses ?user=")
	}
	p = b.get("/history/export.json?user=zhangsan")
	var doc exportDoc
	if err := json.Unmarshal([]byte(p.body), &doc); err != nil || doc.User != "zhangsan" || len(doc.Entries) != 1 || doc.Entries[0].Answer != "张三的回答" {
		t.Fatalf("admin export: %v %+v", err, doc)
	}
	if !strings.Contains(h.logBuf.String(), "admin views a user's history") {
		t.Error("admin access is not logged")
	}
	// An invalid id is a 400, not a lookup.
	if p = b.get("/history?user=a%00b"); p.status != http.StatusBadRequest {
		t.Errorf("control character in ?user=: %d", p.status)
	}
}

// Payloads in stored questions and answers come out as text: no tag, no
// event handler, no script URL of theirs makes it into the markup.
func TestHistoryXSSInert(t *testing.T) {
	h := newHarness(t, nil)
	payloads := []string{
		`<script>window.__xss=1</script>`,
		`<img src=x onerror="window.__xss=1">`,
		`<svg onload=window.__xss=1>`,
		`"><script>window.__xss=1</script>`,
		`<a href="javascript:window.__xss=1">点我</a>`,
		`[点我](javascript:window.__xss=1)`,
		`[点我](JaVaScRiPt:window.__xss=1)`,
		`[点我](&#106;avascript:window.__xss=1)`,
		`[点我](  javascript:window.__xss=1 "t")`,
		`[点我](vbscript:msgbox)`,
		`[点我](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)`,
		`<javascript:window.__xss=1>`,
		`![x](javascript:window.__xss=1)`,
		`![x](https://tracker.example/pixel.png)`,
		`[a]: javascript:window.__xss=1` + "\n\n[点我][a]",
		"```html\n<script>window.__xss=1</script>\n```",
		`<iframe src="https://evil.example"></iframe>`,
		`<style>body{display:none}</style>`,
		`<div style="position:fixed">x</div>`,
		`<math><mi xlink:href="javascript:alert(1)">x</mi></math>`,
		"<details open ontoggle=window.__xss=1>",
		`{{.CSRF}} ${alert(1)}`,
	}
	for _, pl := range payloads {
		seedHistory(t, h.store, "zhangsan", "问："+pl, "答："+pl, historySeed{})
	}
	seedHistory(t, h.store, "zhangsan", "<b>拒绝</b>", `<script>window.__xss=1</script>`, historySeed{status: kv.StatusRefused})
	b := newBrowser(h, uaDesktop)
	p := b.login("zhangsan", "/history?q=")
	if p.status != http.StatusOK {
		t.Fatal(p.status)
	}
	checkInert(t, p.body)
	if !strings.Contains(p.body, "&lt;script&gt;window.__xss=1&lt;/script&gt;") {
		t.Error("the question's script tag is not shown as text")
	}
	if !strings.Contains(p.body, `<a href="https://tracker.example/pixel.png"`) {
		t.Error("a remote image is not turned into a link")
	}
	// The exports are downloads, never rendered as HTML by the browser.
	for _, path := range []string{"/history/export.md", "/history/export.json"} {
		p := b.get(path)
		if !strings.HasPrefix(p.header.Get("Content-Disposition"), "attachment;") || p.header.Get("X-Content-Type-Options") != "nosniff" ||
			strings.Contains(p.header.Get("Content-Type"), "html") {
			t.Errorf("%s headers: %v", path, p.header)
		}
	}
}

var (
	reTag  = regexp.MustCompile(`<([a-zA-Z][a-zA-Z0-9]*)([^<>]*)>`)
	reAttr = regexp.MustCompile(`\s([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:="([^"]*)")?`)
)

// checkInert scans the markup the page really has (text can't contain a
// raw "<" once escaped) for anything that could run script.
func checkInert(t *testing.T, body string) {
	t.Helper()
	allowed := map[string]bool{
		"html": true, "head": true, "meta": true, "title": true, "link": true, "script": true, "body": true,
		"header": true, "div": true, "h1": true, "form": true, "input": true, "span": true, "button": true,
		"p": true, "b": true, "a": true, "details": true, "summary": true, "main": true, "section": true,
		"article": true, "time": true, "nav": true, "footer": true, "strong": true, "em": true, "code": true,
		"pre": true, "ul": true, "ol": true, "li": true, "blockquote": true, "br": true, "hr": true,
		"table": true, "thead": true, "tbody": true, "tr": true, "th": true, "td": true, "del": true,
		"h2": true, "h3": true, "h4": true, "h5": true, "h6": true,
	}
	for _, m := range reTag.FindAllStringSubmatch(body, -1) {
		tag := strings.ToLower(m[1])
		if !allowed[tag] {
			t.Errorf("unexpected tag <%s%s>", m[1], m[2])
		}
		for _, a := range reAttr.FindAllStringSubmatch(m[2], -1) {
			name, val := strings.ToLower(a[1]), strings.ToLower(strings.TrimSpace(a[2]))
			if strings.HasPrefix(name, "on") || name == "style" || name == "srcdoc" || name == "formaction" {
				t.Errorf("dangerous attribute %s in <%s%s>", name, m[1], m[2])
			}
			if (name == "href" || name == "src" || name == "action") && !(strings.HasPrefix(val, "/history") ||
				strings.HasPrefix(val, "https://") || strings.HasPrefix(val, "http://") || strings.HasPrefix(val, "mailto:") || val == "data:,") {
				t.Errorf("link to %q in <%s%s>", val, m[1], m[2])
			}
		}
		if tag == "script" && !strings.Contains(m[2], `src="/history/static/`) {
			t.Errorf("script not from this site: <%s%s>", m[1], m[2])
		}
		if tag == "link" && !strings.Contains(m[2], `href="/history/static/`) && !strings.Contains(m[2], `href="data:,"`) {
			t.Errorf("link element not from this site: <%s%s>", m[1], m[2])
		}
	}
	if n := strings.Count(strings.ToLower(body), "<script"); n != 1 {
		t.Errorf("%d script tags, want only the page's own", n)
	}
}

// Markdown rendering keeps answers' formatting but none of their markup.
func TestRenderMarkdownSafe(t *testing.T) {
	md := newMarkdown()
	for _, c := range []struct{ in, want, not string }{
		{"**粗体** 和 `代码`", "<strong>粗体</strong> 和 <code>代码</code>", ""},
		{"第一行\n第二行", "第一行<br>", ""},
		{"| a | b |\n|:-|-:|\n| 1 | 2 |", `<td align="left">1</td>`, "style="},
		{"见 https://example.com/a?b=1&c=2", `<a href="https://example.com/a?b=1&amp;c=2" rel="nofollow noopener noreferrer" target="_blank">`, ""},
		{"www.example.com", `href="http://www.example.com"`, ""},
		{"写信给 a@example.com", `href="mailto:a@example.com"`, ""},
		{"[站内](/history/logout)", "站内", "href"},
		{"[协议相对](//evil.example/x)", "协议相对", "href"},
		{"[x](javascript:alert(1))", "x", "href"},
		{"<b>粗</b>", "&lt;b&gt;粗&lt;/b&gt;", "<b>"},
		{"用 <br> 换行", "用 &lt;br&gt; 换行", "<br>"},
		{"<!-- c --><script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;", "<script"},
		{"<div onclick=\"x()\">\n段落\n</div>", "&lt;div onclick=&quot;x()&quot;&gt;<br>", "<div"},
		{"![猫](https://example.com/cat.png)", `[图片: 猫]</a>`, "<img"},
		{"![](data:image/png;base64,AAAA)", "[图片]", "<img"},
		{"- [x] 完成", `type="checkbox"`, ""},
	} {
		got := string(md.render(c.in))
		if !strings.Contains(got, c.want) || (c.not != "" && strings.Contains(got, c.not)) {
			t.Errorf("render(%q) = %q; want %q, not %q", c.in, got, c.want, c.not)
		}
	}
}

// Logout needs the CSRF token, revokes the session on the server and
// clears the cookie.
func TestHistoryLogout(t *testing.T) {
	h := newHarness(t, nil)
	seedHistory(t, h.store, "zhangsan", "问题一", "回答一", historySeed{})
	b := newBrowser(h, uaDesktop)
	p := b.login("zhangsan", "/history")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatal("no CSRF token in the logout form")
	}
	stolen := *b.session()

	if p = b.get("/history/logout"); p.status != http.StatusMethodNotAllowed {
		t.Errorf("GET logout: %d", p.status)
	}
	for _, bad := range []url.Values{{}, {"csrf": {""}}, {"csrf": {flipChar(m[1], 2)}}} {
		if p = b.do(http.MethodPost, "/history/logout", bad); p.status != http.StatusForbidden {
			t.Errorf("logout with csrf %q: %d", bad.Get("csrf"), p.status)
		}
	}
	// Another session's token does not work either.
	other := newBrowser(h, uaDesktop)
	op := other.login("zhangsan", "/history")
	om := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(op.body)
	if om[1] == m[1] {
		t.Fatal("two sessions share a CSRF token")
	}
	if p = b.do(http.MethodPost, "/history/logout", url.Values{"csrf": {om[1]}}); p.status != http.StatusForbidden {
		t.Errorf("logout with another session's token: %d", p.status)
	}
	if p = b.get("/history"); p.status != http.StatusOK {
		t.Fatalf("session gone after refused logouts: %d", p.status)
	}

	p = b.do(http.MethodPost, "/history/logout", url.Values{"csrf": {m[1]}})
	if p.status != http.StatusSeeOther || p.location() != "/history/signed-out" || b.session() != nil {
		t.Fatalf("logout: %d to %q, cookie %v", p.status, p.location(), b.session())
	}
	if p = b.get(p.location()); p.status != http.StatusOK || !strings.Contains(p.body, "已退出登录") || !strings.Contains(p.body, `href="/history/login"`) {
		t.Errorf("signed-out page: %d\n%s", p.status, p.body)
	}
	// The old cookie is dead on the server, not just in this browser.
	thief := newBrowser(h, uaDesktop)
	thief.jar[stolen.Name] = &stolen
	if p = thief.get("/history"); p.status != http.StatusFound || strings.Contains(p.body, "回答一") {
		t.Errorf("cookie after logout: %d", p.status)
	}
	// The other session lives on.
	if p = other.get("/history"); p.status != http.StatusOK {
		t.Errorf("other session after logout: %d", p.status)
	}
	// /history/login starts a new sign-in.
	if p = b.get("/history/login"); p.status != http.StatusFound || !strings.HasPrefix(p.location(), h.wc.URL()) {
		t.Errorf("login link: %d %q", p.status, p.location())
	}
}

// A WeCom account that is not a member of the corp gets an openid only,
// and a clear refusal.
func TestHistoryNonMemberRefused(t *testing.T) {
	h := newHarness(t, nil)
	seedHistory(t, h.store, wecomtest.OpenID(testCorp, "stranger"), "问题", "回答", historySeed{})
	b := newBrowser(h, uaDesktop)
	h.wc.SetLoginUser("stranger")
	p := b.get(b.atWeCom(b.begin("/history")))
	if p.status != http.StatusForbidden || b.session() != nil || !strings.Contains(p.body, "仅限本企业成员") {
		t.Fatalf("non-member: %d, session %v\n%s", p.status, b.session(), p.body)
	}
	checkSecurityHeaders(t, p)
}

func TestHistoryExport(t *testing.T) {
	h := newHarness(t, nil)
	t0 := time.Now().Add(-48 * time.Hour).Truncate(time.Minute)
	seedHistory(t, h.store, "zhangsan", "第一个问题", "第一个回答", historySeed{newConv: true, at: t0})
	seedHistory(t, h.store, "zhangsan", "第二个问题\n第二行", "第二个**回答**", historySeed{conv: 0, at: t0.Add(time.Minute)})
	seedHistory(t, h.store, "zhangsan", "失败的问题", "抱歉（参考编号：R123）", historySeed{status: kv.StatusFailed, ref: "R123", at: t0.Add(2 * time.Minute)})
	seedHistory(t, h.store, "zhangsan", "等待中的问题", "", historySeed{status: kv.StatusPending, at: t0.Add(3 * time.Minute)})
	seedHistory(t, h.store, "lisi", "李四的问题", "李四的回答", historySeed{at: t0})
	b := newBrowser(h, uaDesktop)
	b.login("zhangsan", "/history")

	p := b.get("/history/export.json")
	if p.status != http.StatusOK || !strings.HasPrefix(p.header.Get("Content-Type"), "application/json") {
		t.Fatalf("json export: %d %v", p.status, p.header)
	}
	if cd := p.header.Get("Content-Disposition"); !regexp.MustCompile(`^attachment; filename="wecom-history-zhangsan-\d{8}\.json"$`).MatchString(cd) {
		t.Errorf("Content-Disposition = %q", cd)
	}
	var doc exportDoc
	if err := json.Unmarshal([]byte(p.body), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.User != "zhangsan" || doc.Count != 4 || len(doc.Entries) != 4 || doc.Order != "oldest_first" {
		t.Fatalf("export = %+v", doc)
	}
	e := doc.Entries
	if e[0].Question != "第一个问题" || !e[0].NewConv || e[1].Answer != "第二个**回答**" || e[2].Status != kv.StatusFailed ||
		e[2].Ref != "R123" || e[3].Status != kv.StatusPending || !e[0].Created.Equal(t0) {
		t.Errorf("entries = %+v", e)
	}
	if strings.Contains(p.body, "李四") {
		t.Error("export has another user's entries")
	}

	p = b.get("/history/export.md")
	if p.status != http.StatusOK || p.header.Get("Content-Type") != "text/markdown; charset=utf-8" {
		t.Fatalf("md export: %d %v", p.status, p.header)
	}
	for _, want := range []string{"# 问答记录：zhangsan", "共 4 条", "## " + t0.In(chinaTime).Format("2006-01-02 15:04") + " · helpdesk · 新对话", "> 第二个问题\n> 第二行\n",
		"第二个**回答**", "*回答失败 · 参考编号 R123*", "*（尚未回答）*"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("markdown export lacks %q:\n%s", want, p.body)
		}
	}
	if strings.Index(p.body, "第一个问题") > strings.Index(p.body, "等待中的问题") {
		t.Error("markdown export is not oldest first")
	}

	// A search narrows the export too.
	p = b.get("/history/export.json?q=" + url.QueryEscape("失败"))
	doc = exportDoc{}
	if err := json.Unmarshal([]byte(p.body), &doc); err != nil || doc.Count != 1 || doc.Search != "失败" {
		t.Errorf("search export: %v %+v", err, doc)
	}
}

// Pages follow the cursor without gaps or repeats; search filters; the
// conversation markers and statuses show.
func TestHistoryPagesAndSearch(t *testing.T) {
	h := newHarness(t, nil)
	t0 := time.Now().Add(-time.Hour)
	for i := 0; i < 45; i++ {
		seedHistory(t, h.store, "zhangsan", fmt.Sprintf("问题编号%02d", i), fmt.Sprintf("回答编号%02d", i),
			historySeed{conv: i / 10, newConv: i%10 == 0, at: t0.Add(time.Duration(i) * time.Second)})
	}
	b := newBrowser(h, uaDesktop)
	p := b.login("zhangsan", "/history")
	seen := map[string]bool{}
	reQ := regexp.MustCompile(`问题编号(\d\d)`)
	reOlder := regexp.MustCompile(`href="(/history\?before=\d+)"`)
	for pageN := 0; ; pageN++ {
		got := reQ.FindAllStringSubmatch(p.body, -1)
		if pageN < 2 && len(got) != pageSize || pageN == 2 && len(got) != 5 {
			t.Fatalf("page %d has %d entries", pageN, len(got))
		}
		for _, g := range got {
			if seen[g[1]] {
				t.Fatalf("entry %s on two pages", g[1])
			}
			seen[g[1]] = true
		}
		if pageN == 0 && got[0][1] != "44" {
			t.Errorf("newest first: got %s first", got[0][1])
		}
		m := reOlder.FindStringSubmatch(p.body)
		if m == nil {
			break
		}
		if !strings.Contains(p.body, "本对话更早的内容在下一页") {
			t.Errorf("page %d: a conversation cut by the page is not marked", pageN)
		}
		p = b.get(m[1])
		if !strings.Contains(p.body, "« 最新") {
			t.Error("no link back to the newest page")
		}
	}
	if len(seen) != 45 {
		t.Fatalf("saw %d entries over all pages", len(seen))
	}
	// Conversations 0..4 each started with /new: five markers, five groups.
	p = b.get("/history?q=" + url.QueryEscape("回答编号0"))
	if n := strings.Count(p.body, `<section class="conv">`); n != 1 {
		t.Errorf("search shows %d conversations, want 1", n)
	}
	if n := len(reQ.FindAllString(p.body, -1)); n != 10 {
		t.Errorf("search found %d, want 10", n)
	}
	if !strings.Contains(p.body, "新对话从这里开始") || !strings.Contains(p.body, "清除搜索") {
		t.Error("search page lacks the /new marker or the clear link")
	}
	p = b.get("/history?q=" + url.QueryEscape("没有这种内容"))
	if !strings.Contains(p.body, "没有找到包含「没有这种内容」的记录") {
		t.Error("empty search result not explained")
	}
	if p = b.get("/history?before=abc"); p.status != http.StatusBadRequest {
		t.Errorf("bad cursor: %d", p.status)
	}
}

func TestHistoryGroupsAndStatuses(t *testing.T) {
	h := newHarness(t, nil)
	t0 := time.Now().Add(-time.Hour)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Minute) }
	seedHistory(t, h.store, "zhangsan", "第一轮问题", "第一轮回答", historySeed{conv: 0, newConv: true, at: at(0)})
	seedHistory(t, h.store, "zhangsan", "第一轮追问", "第一轮追答", historySeed{conv: 0, at: at(1)})
	seedHistory(t, h.store, "zhangsan", "被拒的问题", "抱歉，你暂时没有使用这个应用的权限", historySeed{status: kv.StatusRefused, at: at(2)})
	seedHistory(t, h.store, "zhangsan", "第二轮问题", "第二轮回答", historySeed{conv: 1, newConv: true, at: at(3)})
	seedHistory(t, h.store, "zhangsan", "另一个应用的问题", "另一个应用的回答", historySeed{app: "chat", conv: 0, newConv: true, at: at(4)})
	seedHistory(t, h.store, "zhangsan", "失败的问题", "抱歉，回答时出了点问题（参考编号：ABC123）", historySeed{conv: 1, status: kv.StatusFailed, ref: "ABC123", at: at(5)})
	seedHistory(t, h.store, "zhangsan", "回答中的问题", "部分回答", historySeed{conv: 1, status: kv.StatusAnswering, at: at(6)})
	seedHistory(t, h.store, "zhangsan", "排队的问题", "", historySeed{status: kv.StatusPending, at: at(7)})
	b := newBrowser(h, uaDesktop)
	p := b.login("zhangsan", "/history")
	// Newest first: [helpdesk conv1: 排队, 回答中, 失败] [chat conv0 /new]
	// [helpdesk conv1 /new: 第二轮] [helpdesk conv0 /new: 被拒, 追问, 第一轮]
	groups := strings.Split(p.body, `<section class="conv">`)[1:]
	if len(groups) != 4 {
		t.Fatalf("%d groups:\n%s", len(groups), p.body)
	}
	expect := []struct {
		has     []string
		started bool
	}{
		{[]string{"排队的问题", "回答中的问题", "失败的问题"}, false},
		{[]string{"另一个应用的问题", `<span class="app">chat</span>`}, true},
		{[]string{"第二轮问题"}, true},
		{[]string{"被拒的问题", "第一轮追问", "第一轮问题"}, true},
	}
	for i, e := range expect {
		for _, s := range e.has {
			if !strings.Contains(groups[i], s) {
				t.Errorf("group %d lacks %q", i, s)
			}
		}
		if strings.Contains(groups[i], "新对话从这里开始") != e.started {
			t.Errorf("group %d: /new marker %v, want %v", i, !e.started, e.started)
		}
	}
	for _, want := range []string{"排队中，等待回答…", "正在回答…", "回答失败 · 参考编号 ABC123", "未回答", "抱歉，你暂时没有使用这个应用的权限"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

// Static files are embedded, versioned by content hash and cacheable.
func TestHistoryStatic(t *testing.T) {
	h := newHarness(t, nil)
	b := newBrowser(h, uaDesktop)
	p := b.login("zhangsan", "/history")
	m := regexp.MustCompile(`href="(/history/static/[0-9a-f]{12}/app\.css)"`).FindStringSubmatch(p.body)
	js := regexp.MustCompile(`src="(/history/static/[0-9a-f]{12}/app\.js)"`).FindStringSubmatch(p.body)
	if m == nil || js == nil {
		t.Fatalf("no hashed asset links in\n%s", p.body)
	}
	anon := newBrowser(h, uaDesktop)
	css := anon.get(m[1])
	if css.status != http.StatusOK || css.header.Get("Content-Type") != "text/css; charset=utf-8" ||
		css.header.Get("Cache-Control") != "public, max-age=31536000, immutable" || css.header.Get("ETag") == "" ||
		!strings.Contains(css.body, ".conv") {
		t.Fatalf("css: %d %v", css.status, css.header)
	}
	if p := anon.get(js[1]); p.status != http.StatusOK || p.header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("js: %d %v", p.status, p.header)
	}
	req, _ := http.NewRequest(http.MethodGet, h.base+m[1], nil)
	req.Header.Set("If-None-Match", css.header.Get("ETag"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", resp.StatusCode)
	}
	if p := anon.get("/history/static/000000000000/app.css"); p.status != http.StatusOK || p.header.Get("Cache-Control") != "no-cache" {
		t.Errorf("stale hash: %d %q", p.status, p.header.Get("Cache-Control"))
	}
	for _, path := range []string{"/history/static/x/nope.css", "/history/static/app.css", "/history/static/../web.go", "/history/nothing"} {
		if p := anon.get(path); p.status != http.StatusNotFound {
			t.Errorf("%s: %d", path, p.status)
		}
	}
	if p := anon.do(http.MethodPost, "/history", url.Values{}); p.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /history: %d", p.status)
	}
	// Paths outside /history stay the daemon's.
	if p := anon.get("/historyx"); p.status != http.StatusNotFound || strings.Contains(p.body, "<html") {
		t.Errorf("/historyx: %d", p.status)
	}
}

// A public_url with a path (a reverse proxy serving the daemon under
// /ai) puts that path into every link and redirect; the daemon accepts
// requests with or without it.
func TestHistoryPublicURLPrefix(t *testing.T) {
	h := newHarness(t, nil)
	h.cfg.PublicURL = "https://bot.example.com/ai/"
	h.restart()
	seedHistory(t, h.store, "zhangsan", "问题", "回答", historySeed{})
	b := newBrowser(h, uaDesktop)
	h.wc.SetLoginUser("zhangsan")
	loc := b.begin("/history?q=%E9%97%AE")
	if got := queryOf(t, loc).Get("redirect_uri"); got != "https://bot.example.com/ai/history/callback" {
		t.Fatalf("redirect_uri = %q", got)
	}
	cb := b.atWeCom(loc) // https://bot.example.com/ai/history/callback?...
	p := b.get(strings.Replace(cb, "https://bot.example.com/ai", h.base, 1))
	if p.status != http.StatusSeeOther || p.location() != "/ai/history?q=%E9%97%AE" {
		t.Fatalf("callback: %d to %q", p.status, p.location())
	}
	for _, path := range []string{"/history", "/ai/history"} {
		p = b.get(path)
		if p.status != http.StatusOK || !strings.Contains(p.body, `action="/ai/history/logout"`) || !strings.Contains(p.body, `href="/ai/history/static/`) {
			t.Errorf("%s: %d\n%s", path, p.status, p.body)
		}
	}
}

// Config reload updates the admins.
func TestHistoryReloadAdmins(t *testing.T) {
	h := newHarness(t, nil)
	seedHistory(t, h.store, "lisi", "李四的问题", "李四的回答", historySeed{})
	b := newBrowser(h, uaDesktop)
	b.login("zhangsan", "/history")
	if p := b.get("/history?user=lisi"); p.status != http.StatusForbidden {
		t.Fatalf("before reload: %d", p.status)
	}
	h.reload(func(c *Config) { c.Admins = []string{"zhangsan"} })
	if p := b.get("/history?user=lisi"); p.status != http.StatusOK || !strings.Contains(p.body, "李四的回答") {
		t.Fatalf("after reload: %d", p.status)
	}
}

// With a session_key in the config, sessions are signed with it, and a
// cookie made under the generated key no longer works.
func TestHistoryConfiguredSessionKey(t *testing.T) {
	h := newHarness(t, nil)
	b := newBrowser(h, uaDesktop)
	b.login("zhangsan", "/history")
	h.cfg.SessionKey = []byte(strings.Repeat("k", 40))
	h.restart()
	if p := b.get("/history"); p.status != http.StatusFound {
		t.Fatalf("cookie signed with the old key: %d", p.status)
	}
	if p := b.login("zhangsan", "/history"); p.status != http.StatusOK {
		t.Fatalf("sign-in with the configured key: %d", p.status)
	}
	// A restart keeps the key, so the session survives.
	h.restart()
	if p := b.get("/history"); p.status != http.StatusOK {
		t.Fatalf("session after restart: %d", p.status)
	}
}

// "More of this conversation on the next page" is only said when the next
// page really goes on with it.
func TestHistoryContinuedMarker(t *testing.T) {
	h := newHarness(t, nil)
	t0 := time.Now().Add(-time.Hour)
	seedHistory(t, h.store, "zhangsan", "另一个应用", "回答", historySeed{app: "chat", conv: 0, newConv: true, at: t0})
	for i := 1; i <= pageSize; i++ {
		seedHistory(t, h.store, "zhangsan", fmt.Sprintf("问题%d", i), "回答", historySeed{conv: 3, at: t0.Add(time.Duration(i) * time.Second)})
	}
	b := newBrowser(h, uaDesktop)
	p := b.login("zhangsan", "/history")
	if !strings.Contains(p.body, "更早的记录") || strings.Contains(p.body, "本对话更早的内容在下一页") {
		t.Errorf("page 1 claims the conversation goes on:\n%s", p.body)
	}
	seedHistory(t, h.store, "zhangsan", "再问一个", "回答", historySeed{conv: 3, at: t0.Add(time.Minute)})
	if p = b.get("/history"); !strings.Contains(p.body, "本对话更早的内容在下一页") {
		t.Error("a conversation cut by the page is not marked")
	}
}

// The page asked for before signing in is where the sign-in ends, within
// limits: only this page's paths, and nothing too long for a cookie.
func TestHistoryReturnAfterLogin(t *testing.T) {
	h := newHarness(t, nil)
	h.wc.SetLoginUser("zhangsan")
	for _, c := range []struct{ ask, land string }{
		{"/history?q=https%3A%2F%2Fexample.com%2F%2Fx", "/history?q=https%3A%2F%2Fexample.com%2F%2Fx"},
		{"/history?q=a//b", "/history?q=a//b"},
		{"/history/export.md", "/history/export.md"},
		{"/history?q=" + strings.Repeat("x", 2000), "/history"},
	} {
		b := newBrowser(h, uaDesktop)
		cb := b.atWeCom(b.begin(c.ask))
		if p := b.get(cb); p.status != http.StatusSeeOther || p.location() != c.land {
			t.Errorf("asked for %.60s: landed on %q (%d)", c.ask, p.location(), p.status)
		}
	}
}

// WeCom userids ignore case (issue 9 item 17): an admin asking for
// ?user=BOB sees bob's history, which WeCom recorded under "bob"; the
// exports and links use the folded id; a non-admin is refused bob's in any
// case, and naming oneself in another case is one's own page.
func TestHistoryUserIDCase(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Admins = []string{"WangWu"} })
	seedHistory(t, h.store, "bob", "鲍勃的问题", "鲍勃的回答", historySeed{})
	seedHistory(t, h.store, "wangwu", "王五的问题", "王五的回答", historySeed{})
	admin := newBrowser(h, uaDesktop)
	admin.login("wangwu", "/history")
	for _, asked := range []string{"BOB", "Bob", "bob", " BoB "} {
		p := admin.get("/history?user=" + url.QueryEscape(asked))
		if p.status != http.StatusOK || !strings.Contains(p.body, "鲍勃的回答") || strings.Contains(p.body, "王五的回答") ||
			!strings.Contains(p.body, "管理员视图") || !strings.Contains(p.body, `<b>bob</b>`) {
			t.Errorf("admin ?user=%q: %d\n%s", asked, p.status, p.body)
		}
		if !strings.Contains(p.body, `href="/history/export.json?user=bob"`) {
			t.Errorf("admin ?user=%q: export link does not name bob", asked)
		}
	}
	p := admin.get("/history/export.json?user=BOB")
	var doc exportDoc
	if err := json.Unmarshal([]byte(p.body), &doc); err != nil || doc.User != "bob" || len(doc.Entries) != 1 || doc.Entries[0].Answer != "鲍勃的回答" {
		t.Fatalf("admin export of BOB: %v %+v", err, doc)
	}
	if cd := p.header.Get("Content-Disposition"); !strings.Contains(cd, "wecom-history-bob-") {
		t.Errorf("export file name %q", cd)
	}
	if p = admin.get("/history/export.md?user=BOB"); !strings.Contains(p.body, "# 问答记录：bob") || !strings.Contains(p.body, "鲍勃的回答") {
		t.Errorf("admin markdown export of BOB:\n%s", p.body)
	}
	// The admin's own id in another case is the own page, not an admin view.
	if p = admin.get("/history?user=WANGWU"); p.status != http.StatusOK || !strings.Contains(p.body, "王五的回答") || strings.Contains(p.body, "管理员视图") {
		t.Errorf("admin names self as WANGWU: %d\n%s", p.status, p.body)
	}

	// A non-admin gets no one else's history, whatever the case.
	other := newBrowser(h, uaDesktop)
	other.login("zhangsan", "/history")
	for _, asked := range []string{"BOB", "bob"} {
		if p := other.get("/history?user=" + asked); p.status != http.StatusForbidden || strings.Contains(p.body, "鲍勃") {
			t.Errorf("non-admin ?user=%s: %d", asked, p.status)
		}
	}
	// bob himself, signed in, sees his own page.
	bob := newBrowser(h, uaDesktop)
	if p := bob.login("bob", "/history?user=BOB"); p.status != http.StatusOK || !strings.Contains(p.body, "鲍勃的回答") || strings.Contains(p.body, "管理员视图") {
		t.Errorf("bob with ?user=BOB: %d", p.status)
	}
}

func TestNormUser(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "bob": "bob", "BOB": "bob", "ZhangSan": "zhangsan", "a.B-c_D@E": "a.b-c_d@e",
		"ww0123/LiSi": "ww0123/lisi", "王Wu": "王wu", "ÄB": "Äb", // only ASCII folds
	} {
		if got := normUser(in); got != want {
			t.Errorf("normUser(%q) = %q, want %q", in, got, want)
		}
	}
}

// Every response of the page carries the security headers (issue 9 item
// 18): pages, redirects, errors, static files and their 404 and 304; HSTS
// only when public_url is https.
func TestHistorySecurityHeadersEverywhere(t *testing.T) {
	for _, scheme := range []string{"https", "http"} {
		t.Run(scheme, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.PublicURL = scheme + "://bot.example.com" })
			seedHistory(t, h.store, "zhangsan", "问题", "回答", historySeed{})
			wantHSTS := ""
			if scheme == "https" {
				wantHSTS = "max-age=31536000"
			}
			check := func(what string, p webPage, status int) {
				t.Helper()
				if p.status != status {
					t.Errorf("%s: status %d, want %d", what, p.status, status)
				}
				if got := p.header.Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("%s: X-Content-Type-Options %q", what, got)
				}
				if got := p.header.Get("Strict-Transport-Security"); got != wantHSTS {
					t.Errorf("%s: Strict-Transport-Security %q, want %q", what, got, wantHSTS)
				}
				if !strings.Contains(p.header.Get("Content-Security-Policy"), "default-src 'self'") ||
					p.header.Get("Referrer-Policy") != "no-referrer" || p.header.Get("X-Frame-Options") != "SAMEORIGIN" {
					t.Errorf("%s: headers %v", what, p.header)
				}
			}
			anon := newBrowser(h, uaDesktop)
			check("sign-in redirect", anon.get("/history"), http.StatusFound)
			check("bad callback", anon.get("/history/callback?state=x&code=y"), http.StatusBadRequest)
			check("POST /history", anon.do(http.MethodPost, "/history", url.Values{}), http.StatusMethodNotAllowed)
			check("unknown path", anon.get("/history/nothing"), http.StatusNotFound)
			check("missing static file", anon.get("/history/static/x/nope.css"), http.StatusNotFound)
			check("static without hash", anon.get("/history/static/app.css"), http.StatusNotFound)
			check("signed-out page", anon.get("/history/signed-out"), http.StatusOK)
			check("logout without session", anon.do(http.MethodPost, "/history/logout", url.Values{}), http.StatusSeeOther)

			b := newBrowser(h, uaDesktop)
			h.wc.SetLoginUser("zhangsan")
			cb := b.atWeCom(b.begin("/history"))
			check("callback", b.get(cb), http.StatusSeeOther)
			p := b.get("/history")
			check("page", p, http.StatusOK)
			check("forbidden", b.get("/history?user=lisi"), http.StatusForbidden)
			check("bad request", b.get("/history?before=x"), http.StatusBadRequest)
			check("export.md", b.get("/history/export.md"), http.StatusOK)
			check("export.json", b.get("/history/export.json"), http.StatusOK)
			css := regexp.MustCompile(`href="(/history/static/[0-9a-f]{12}/app\.css)"`).FindStringSubmatch(p.body)
			if css == nil {
				t.Fatalf("no stylesheet link in\n%s", p.body)
			}
			sp := b.get(css[1])
			check("static file", sp, http.StatusOK)
			req, _ := http.NewRequest(http.MethodGet, h.base+css[1], nil)
			req.Header.Set("If-None-Match", sp.header.Get("ETag"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			check("static 304", webPage{status: resp.StatusCode, header: resp.Header, body: readAll(t, resp)}, http.StatusNotModified)
			m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(p.body)
			check("logout with a bad token", b.do(http.MethodPost, "/history/logout", url.Values{"csrf": {"x"}}), http.StatusForbidden)
			check("logout", b.do(http.MethodPost, "/history/logout", url.Values{"csrf": {m[1]}}), http.StatusSeeOther)
		})
	}
}

// The page says how long history is kept, so that old questions do not
// vanish unexplained; with no retention it says nothing, and a reload
// changes it.
func TestHistoryRetentionNote(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Retention = 180 * 24 * time.Hour })
	b := newBrowser(h, uaDesktop)
	if p := b.login("zhangsan", "/history"); !strings.Contains(p.body, "问答记录保留 180 天，更早的会自动删除。") {
		t.Errorf("no retention note:\n%s", p.body)
	}
	h.reload(func(c *Config) { c.Retention = 0 })
	if p := b.get("/history"); p.status != http.StatusOK || strings.Contains(p.body, "问答记录保留") {
		t.Errorf("history kept forever, but the page says otherwise: %d", p.status)
	}
	for d, want := range map[time.Duration]string{
		time.Hour: "保留 1 小时", 90 * time.Minute: "保留 2 小时", 47 * time.Hour: "保留 47 小时", 48 * time.Hour: "保留 2 天", 30 * 24 * time.Hour: "保留 30 天",
	} {
		if got := retentionNote(d); !strings.Contains(got, want) {
			t.Errorf("retentionNote(%v) = %q, want %q", d, got, want)
		}
	}
}

// The page asks for the login app's client on every sign-in, because the
// daemon swaps its clients on reload: a swapped client is used at once,
// and without one the sign-in is a 503, not a crash or a stale client.
func TestHistoryLoginClientSwapped(t *testing.T) {
	h := newHarness(t, nil)
	b := newBrowser(h, uaDesktop)
	h.wc.SetLoginUser("zhangsan")
	if loc := b.begin("/history"); queryOf(t, loc).Get("agentid") != "1000002" {
		t.Fatalf("login redirect = %s", loc)
	}
	h.mu.Lock()
	h.clients["helpdesk"] = h.newClient("secret-chat", 1000003) // what a reload of the app would do
	h.mu.Unlock()
	loc := b.begin("/history")
	if queryOf(t, loc).Get("agentid") != "1000003" {
		t.Fatalf("login redirect after the swap = %s", loc)
	}
	cb := b.atWeCom(loc)

	// The app goes away between the start of a sign-in and its callback.
	h.mu.Lock()
	delete(h.clients, "helpdesk")
	h.mu.Unlock()
	p := b.get(cb)
	if p.status != http.StatusServiceUnavailable || b.session() != nil || !strings.Contains(p.body, "服务暂时不可用") {
		t.Fatalf("callback without a login client: %d\n%s", p.status, p.body)
	}
	checkSecurityHeaders(t, p)
	p = newBrowser(h, uaDesktop).get("/history")
	if p.status != http.StatusServiceUnavailable || !strings.Contains(p.body, "服务暂时不可用") {
		t.Fatalf("sign-in without a login client: %d", p.status)
	}
	if !strings.Contains(h.logBuf.String(), "history.login_app names no configured app") {
		t.Error("the operator is not told which setting is wrong")
	}
}

// Bot conversations show the bot's name; a group chat's are marked as
// such; a rated answer shows the rating.
func TestHistoryBotGroupAndFeedback(t *testing.T) {
	h := newHarness(t, nil)
	seedHistory(t, h.store, "bob", "单聊里的问题", "单聊的回答", historySeed{app: "kbbot"})
	id := seedHistory(t, h.store, "bob", "群里的问题", "群里的回答", historySeed{app: "kbbot", chat: "wrGroup1"})
	if err := h.store.SetEntryFeedback("bob", id, "like", ""); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(h, uaDesktop)
	b.login("bob", "/history")
	p := b.get("/history")
	if p.status != http.StatusOK || strings.Count(p.body, `<span class="app">kbbot</span>`) != 2 ||
		strings.Count(p.body, `<span class="tag">群聊</span>`) != 1 || !strings.Contains(p.body, "👍 有用") {
		t.Fatalf("history page:\n%s", p.body)
	}
}
