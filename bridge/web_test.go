package bridge

import (
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
)

// The history page is package history; these tests check only how the
// daemon wires it: the routes reach it, it reads what the answer path
// wrote, a reload reaches it, and it signs in with the login app's current
// client.

// pageClient is a browser for the daemon: it keeps cookies (the page's are
// Secure, for https://bot.example.com, so the jar is keyed on that URL) and
// does not follow redirects.
type pageClient struct {
	t   testing.TB
	h   *harness
	jar *cookiejar.Jar
	hc  *http.Client
}

func newPageClient(h *harness) *pageClient {
	jar, err := cookiejar.New(nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return &pageClient{t: h.t, h: h, jar: jar, hc: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}}
}

var publicURL = &url.URL{Scheme: "https", Host: "bot.example.com", Path: "/"}

// get fetches a path of the daemon, or a URL of the fake WeCom.
func (c *pageClient) get(target string) (int, string, http.Header) {
	c.t.Helper()
	own := strings.HasPrefix(target, "/")
	if own {
		target = c.h.base + target
	}
	req, err := http.NewRequest(http.MethodGet, strings.Replace(target, "https://bot.example.com", c.h.base, 1), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	mine := strings.HasPrefix(req.URL.String(), c.h.base)
	if mine {
		for _, k := range c.jar.Cookies(publicURL) {
			req.AddCookie(k)
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	body := readAll(c.t, resp)
	if mine {
		c.jar.SetCookies(publicURL, resp.Cookies())
	}
	return resp.StatusCode, body, resp.Header
}

// login signs in as user through the fake WeCom's browser login and
// returns the WeCom login URL the daemon sent the browser to.
func (c *pageClient) login(user string) string {
	c.t.Helper()
	c.h.wc.SetLoginUser(user)
	st, _, hdr := c.get("/history")
	loc := hdr.Get("Location")
	if st != http.StatusFound || !strings.HasPrefix(loc, c.h.wc.URL()) {
		c.t.Fatalf("GET /history: %d to %q, want WeCom", st, loc)
	}
	st, _, hdr = c.get(loc)
	if st != http.StatusFound {
		c.t.Fatalf("WeCom login: %d", st)
	}
	if st, body, _ := c.get(hdr.Get("Location")); st != http.StatusSeeOther {
		c.t.Fatalf("callback: %d %s", st, body)
	}
	return loc
}

// A question asked through WeCom shows on its asker's page, and only there.
func TestWebShowsAnsweredQuestion(t *testing.T) {
	h := newHarness(t, "")
	h.dify.Push(llmtest.Script{Answer: "报销需要**发票**和审批单。"})
	h.ask("helpdesk", "zhangsan", "报销流程是什么？")
	h.waitIdle()
	h.oai.Push(llmtest.Script{Answer: "李四的私密回答"})
	h.ask("chat", "lisi", "李四的私密问题")
	h.waitIdle()

	c := newPageClient(h)
	c.login("zhangsan")
	st, body, hdr := c.get("/history")
	if st != http.StatusOK {
		t.Fatalf("page: %d %s", st, body)
	}
	for _, want := range []string{"报销流程是什么？", "<strong>发票</strong>", "helpdesk", "/new · 新对话从这里开始", "问答记录保留 180 天"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, leak := range []string{"李四", "lisi", "secret-", "app-llmtest", "sk-llmtest"} {
		if strings.Contains(body, leak) {
			t.Errorf("page shows %q", leak)
		}
	}
	if hdr.Get("X-Content-Type-Options") != "nosniff" || hdr.Get("Strict-Transport-Security") != "max-age=31536000" {
		t.Errorf("page headers: %v", hdr)
	}
	// Paths next to the page stay the daemon's.
	if st, body, _ := c.get("/historyx"); st != http.StatusNotFound || strings.Contains(body, "<html") {
		t.Errorf("/historyx: %d", st)
	}
}

// A reload reaches the page: admins change, and a new login_app signs in
// with that app's (new) client.
func TestWebReload(t *testing.T) {
	h := newHarness(t, "")
	h.dify.Push(llmtest.Script{Answer: "李四的回答"})
	h.ask("helpdesk", "lisi", "李四的问题")
	h.waitIdle()
	c := newPageClient(h)
	if loc := c.login("zhangsan"); queryOf(t, loc).Get("agentid") != "1000002" {
		t.Fatalf("login redirect = %s", loc)
	}
	if st, _, _ := c.get("/history?user=lisi"); st != http.StatusForbidden {
		t.Fatalf("before reload: %d", st)
	}
	cfg, err := Parse("test.toml", []byte(h.configText()+"\n[history]\nadmins = [\"zhangsan\"]\nlogin_app = \"chat\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.b.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if st, body, _ := c.get("/history?user=LiSi"); st != http.StatusOK || !strings.Contains(body, "李四的回答") {
		t.Fatalf("after reload: %d", st)
	}
	c2 := newPageClient(h)
	if loc := c2.login("wangwu"); queryOf(t, loc).Get("agentid") != "1000003" {
		t.Fatalf("login redirect after reload = %s", loc)
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
