package history

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// chromiumPath is Debian's chromium package; .ci/run installs it.
const chromiumPath = "/usr/bin/chromium"

// TestHistoryBrowser runs real headless Chromium, as a phone in the WeCom
// client, through the whole sign-in against the fake WeCom, and checks what
// the page really is: the text is there, no script of the stored content
// ran, the page's own script did, nothing broke the CSP, and the layout fits
// a 390-px-wide screen. Set HISTORY_SCREENSHOT=/tmp/x.png to keep pictures
// (the page, and x-signed-out.png).
func TestHistoryBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		// Not a skip: in CI a missing browser must not pass silently.
		t.Fatalf("the browser test needs Chromium at %s (apt-get install -y chromium; .ci/run does): %v", chromiumPath, err)
	}
	h, mediaDir := mediaHarness(t, nil)
	// The browser talks to the page itself, so public_url must be the
	// page's real address; the port is only known once it listens.
	h.reload(func(c *Config) { c.PublicURL = h.base })
	picID := seedBrowserData(t, h.store, mediaDir)
	h.wc.SetLoginUser("zhangsan")

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(390, 844),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	// The first action starts the browser; it must not run under a timeout.
	err := chromedp.Do(bctx,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulatePortrait, chromedp.EmulateTouch),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if _, err := cdp.Call(ctx, tg, emulation.SetUserAgentOverride, emulation.SetUserAgentOverrideParams{UserAgent: uaWeCom, AcceptLanguage: "zh-CN"}); err != nil {
				return err
			}
			// Record CSP violations: the page has none of its own, and
			// stored content must never even try.
			_, err := cdp.Call(ctx, tg, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: `
				window.__csp = [];
				document.addEventListener("securitypolicyviolation", function (e) {
					window.__csp.push(e.violatedDirective + " " + e.blockedURI);
				});`})
			return err
		}),
	)
	if err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
	defer cancel()
	run := func(what string, a chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, a); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(js string) any {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[any](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return v
	}

	// /history → WeCom's in-app OAuth → /history/callback → /history.
	run("open the page", chromedp.Navigate(h.base+"/history"))
	run("wait for the list", chromedp.WaitVisible(chromedp.CSS("section.conv")))
	// (The #wechat_redirect of the OAuth link stays on, as in WeCom.)
	if loc := eval(`location.origin + location.pathname + location.search`); loc != h.base+"/history" {
		t.Fatalf("landed on %v", loc)
	}
	text, _ := eval(`document.body.innerText`).(string)
	for _, want := range []string{"我的问答记录", "年假怎么申请？", "在 OA 系统提交请假单", "/new · 新对话从这里开始",
		"回答失败", "排队中，等待回答…", "<script>window.__xss=1</script>", "zhangsan"} {
		if !strings.Contains(text, want) {
			t.Errorf("page text lacks %q", want)
		}
	}
	if strings.Contains(text, "李四") {
		t.Error("page shows another user's question")
	}

	// Nothing of the stored content ran or became markup.
	if v := eval(`typeof window.__xss`); v != "undefined" {
		t.Errorf("an XSS payload ran: window.__xss is %v", v)
	}
	if v := eval(`document.title`); v != "问答记录" {
		t.Errorf("title = %v", v)
	}
	if v := eval(`document.querySelectorAll("iframe, svg, math, object, embed, style, body script").length`); v != float64(0) {
		t.Errorf("%v injected elements", v)
	}
	// The only picture is the attachment's thumbnail, from the media
	// route: it loads (the CSP allows img-src 'self'), and is capped in
	// size by the stylesheet.
	thumb := fmt.Sprintf("%s/history/media/%d/0", h.base, picID)
	if v := eval(`Array.from(document.querySelectorAll("img")).map(i => i.src).join(" ")`); v != thumb {
		t.Errorf("images on the page: %v, want only %s", v, thumb)
	}
	run("show the thumbnail", chromedp.ScrollIntoView(chromedp.CSS(".atts img")))
	run("wait for the thumbnail", chromedp.Poll[chromedp.Void](`(() => { const i = document.querySelector(".atts img"); return i.complete && i.naturalWidth > 0; })()`))
	if v := eval(`[document.querySelector(".atts img").naturalWidth, document.querySelector(".atts img").naturalHeight].join("x")`); v != "300x200" {
		t.Errorf("thumbnail's picture is %v, want 300x200", v)
	}
	if v := eval(`document.querySelector(".atts img").getBoundingClientRect().width`).(float64); v <= 0 || v > 160 {
		t.Errorf("thumbnail shown %v px wide, want at most 160", v)
	}
	if v := eval(`document.querySelector(".atts a.thumb").getAttribute("href")`); v != fmt.Sprintf("/history/media/%d/0", picID) {
		t.Errorf("thumbnail links to %v", v)
	}
	if text, _ := eval(`document.body.innerText`).(string); !strings.Contains(text, "发票说明.pdf") || !strings.Contains(text, "2.0 KB") {
		t.Errorf("the file attachment is not shown:\n%s", text)
	}
	if v := eval(`document.querySelectorAll("[onerror], [onload], [ontoggle], a[href^='javascript' i]").length`); v != float64(0) {
		t.Errorf("%v elements with handlers or script links", v)
	}
	if v := eval(`JSON.stringify(window.__csp)`); v != "[]" {
		t.Errorf("CSP violations: %v", v)
	}
	// The page's own script did run (CSP allows 'self'): copy buttons.
	if v := eval(`document.querySelectorAll("button.copy").length`); v == float64(0) {
		t.Error("the page's script did not run")
	}
	// The stylesheet applied.
	if v := eval(`getComputedStyle(document.querySelector(".bubble")).whiteSpace`); v != "pre-wrap" {
		t.Errorf("stylesheet not applied: .bubble white-space %v", v)
	}

	// It fits a phone: nothing scrolls sideways, wide code and tables
	// scroll inside themselves.
	if v := eval(`window.innerWidth`); v != float64(390) {
		t.Errorf("viewport is %v px wide, want 390", v)
	}
	if v := eval(`Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)`).(float64); v > 390 {
		wide := eval(`Array.from(document.querySelectorAll("body *")).filter(e => e.getBoundingClientRect().right > 391).slice(0, 5).map(e => e.tagName + "." + e.className).join(", ")`)
		t.Errorf("page is %v px wide at a 390-px viewport; too wide: %v", v, wide)
	}
	if v := eval(`document.querySelector(".md pre").scrollWidth > document.querySelector(".md pre").clientWidth`); v != true {
		t.Error("the wide code block does not scroll inside itself")
	}

	if path := os.Getenv("HISTORY_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Search from the box.
	run("type a search", chromedp.SendKeys(chromedp.CSS(`input[name="q"]`), "报销"))
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`form.search button`))); err != nil {
		t.Fatalf("search: %v", err)
	}
	text, _ = eval(`document.body.innerText`).(string)
	if !strings.Contains(text, "包含「报销」的记录") || !strings.Contains(text, "报销需要哪些材料") || strings.Contains(text, "年假怎么申请") {
		t.Errorf("search results:\n%s", text)
	}

	// Log out with the form; the session is gone.
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`form.logout button`))); err != nil {
		t.Fatalf("logout: %v", err)
	}
	if loc := eval(`location.origin + location.pathname`); loc != h.base+"/history/signed-out" {
		t.Fatalf("after logout at %v", loc)
	}
	if text, _ = eval(`document.body.innerText`).(string); !strings.Contains(text, "已退出登录") {
		t.Errorf("signed-out page: %s", text)
	}
	if path := os.Getenv("HISTORY_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(strings.TrimSuffix(path, ".png")+"-signed-out.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if v := eval(`document.cookie`); v != "" {
		t.Errorf("cookies readable by script: %v", v)
	}
	// Signing in again as someone else shows only their history.
	h.wc.SetLoginUser("lisi")
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`a.btn`))); err != nil {
		t.Fatalf("sign in again: %v", err)
	}
	text, _ = eval(`document.body.innerText`).(string)
	if !strings.Contains(text, "李四的问题") || strings.Contains(text, "年假") {
		t.Errorf("after signing in as lisi:\n%s", text)
	}
}

// seedBrowserData stores a realistic history with the awkward cases: XSS
// payloads, long unbroken text, a wide code block and table, every status.
func seedBrowserData(t *testing.T, st *kv.Store, mediaDir string) (picID uint64) {
	t.Helper()
	writeMedia(t, mediaDir, "2-0.png", testPNG(t, 300, 200))
	writeMedia(t, mediaDir, "2-1.pdf", append([]byte("%PDF-1.4\n"), make([]byte, 2039)...))
	t0 := time.Now().Add(-26 * time.Hour)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	seedHistory(t, st, "zhangsan", "报销需要哪些材料？", "报销需要准备：\n\n1. **发票原件**（抬头为公司全称）\n2. 审批单\n3. 付款凭证\n\n超过 5000 元需要总监审批。",
		historySeed{conv: 0, newConv: true, at: at(0)})
	picID = seedHistory(t, st, "zhangsan", "发票抬头写错了怎么办？", "需要联系开票方**重新开具**，作废的发票不能报销。", historySeed{conv: 0, at: at(3),
		atts: []kv.Attachment{
			{Kind: "image", Name: "发票.png", MIME: "image/png", Size: 1234, File: "2-0.png"},
			{Kind: "file", Name: "发票说明.pdf", MIME: "application/pdf", Size: 2048, File: "2-1.pdf"},
		}})
	seedHistory(t, st, "zhangsan", "帮我写一个导出脚本", "可以用下面的命令：\n\n```sh\n"+
		"oa export --month 2026-01 --format csv --fields id,applicant,department,amount,currency,status,approver,created_at,updated_at --output /tmp/expense-report-2026-01.csv\n"+
		"```\n\n| 字段 | 含义 | 示例 | 说明 | 必填 | 类型 | 默认值 | 备注 |\n|---|---|---|---|---|---|---|---|\n"+
		"| id | 编号 | 10001 | 报销单编号 | 是 | 整数 | 无 | 自动生成 |\n| amount | 金额 | 1234.56 | 含税金额 | 是 | 小数 | 0 | 单位：元 |",
		historySeed{conv: 0, at: at(5)})
	seedHistory(t, st, "zhangsan", "年假怎么申请？", "在 OA 系统提交请假单，选择「年假」，由直属上级审批。详见 https://oa.example.com/help/leave/annual-leave-policy-2026-version-final-really-final-this-time-with-a-very-long-path", historySeed{conv: 1, newConv: true, at: at(24 * 60)})
	seedHistory(t, st, "zhangsan", `<script>window.__xss=1</script><img src=x onerror="window.__xss=1">`,
		"试试这些：<img src=x onerror=window.__xss=1> <svg onload=window.__xss=1></svg>\n\n[点我](javascript:window.__xss=1) ![图](javascript:window.__xss=1)\n\n<details open ontoggle=window.__xss=1>x</details><style>body{display:none}</style>",
		historySeed{conv: 1, at: at(24*60 + 2)})
	seedHistory(t, st, "zhangsan", "Averyveryverylongwordwithoutanyspacesthatwouldoverflowanarrowphonescreenifnotwrapped_averyveryverylongword", "收到。", historySeed{conv: 1, at: at(24*60 + 4)})
	seedHistory(t, st, "zhangsan", "公司有几天年假？", "抱歉，回答时出了点问题，请稍后再试。（参考编号：K7Q2XM）", historySeed{conv: 1, status: kv.StatusFailed, ref: "K7Q2XM", at: at(24*60 + 6)})
	seedHistory(t, st, "zhangsan", "帮我总结一下今天的会议", "", historySeed{app: "chat", status: kv.StatusPending, at: at(24*60 + 8)})
	seedHistory(t, st, "lisi", "李四的问题", "李四的回答", historySeed{at: at(1)})
	return picID
}
