package bridge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

// WeCom's duplicate check compares whole requests: answers that repeat
// content a user already got within the window must still arrive — the
// same question asked twice, answers sharing their opening paragraph, the
// same fixed reply twice.
func TestRepeatedContentStillArrives(t *testing.T) {
	h := newHarness(t, "")
	opening := "关于报销，先说结论：需要提交发票、行程单和部门负责人的审批单，三样缺一不可。"
	h.dify.Push(
		llmtest.Script{Answer: "同样的回答。"},
		llmtest.Script{Answer: "同样的回答。"},
		llmtest.Script{Answer: opening + "\n\n第一种情况：出差。"},
		llmtest.Script{Answer: opening + "\n\n第二种情况：招待。"},
	)
	for i := 0; i < 4; i++ {
		h.ask("helpdesk", "zhangsan", fmt.Sprintf("问题 %d", i))
		h.waitIdle()
	}
	h.ask("helpdesk", "zhangsan", "/help")
	h.ask("helpdesk", "zhangsan", "/help")
	h.waitIdle()
	all := joined(h.sentTo("zhangsan"))
	for want, n := range map[string]int{"同样的回答。": 2, opening: 2, "第一种情况": 1, "第二种情况": 1, "/new": 2} {
		if got := strings.Count(all, want); got != n {
			t.Errorf("%q arrived %d times, want %d; WeCom dropped %d messages; user got:\n%s",
				want, got, n, len(h.wc.Dropped()), all)
		}
	}
	if d := h.wc.Dropped(); len(d) != 0 {
		t.Errorf("WeCom dropped %d messages as duplicates or over the limit: %q", len(d), contents(d))
	}
}

// The other half: a piece sent again after a crash (its progress was not
// saved) is the same request byte for byte, so WeCom drops it and the user
// sees it once.
func TestResentPieceIsDroppedByWeCom(t *testing.T) {
	h := newHarness(t, "")
	h.stop()
	seed := func(dedup string) {
		store, err := kv.Open(h.dbPath, kv.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		j, _, err := store.Accept(kv.Question{App: "helpdesk", User: "zhangsan", DedupKey: dedup, Kind: kv.KindQuestion, Text: "q"})
		if err != nil {
			t.Fatal(err)
		}
		j.Attempts = 1
		j.Answer, j.AnswerDone = "甲\n\n乙", true
		// The same segment as saved before the first send: after a crash
		// between the send of 甲 and the save of its progress, the job
		// comes back exactly like this.
		j.Segment = &kv.Segment{RawEnd: len(j.Answer), Pieces: []string{"甲", "乙"}, Dup: 7}
		if err := store.SaveJob(j); err != nil {
			t.Fatal(err)
		}
	}
	seed("m:1")
	h.start()
	h.waitIdle()
	h.stop()
	seed("m:2") // the crash replay: same pieces, same numbers
	h.start()
	h.waitIdle()
	if got := contents(h.sentTo("zhangsan")); len(got) != 2 || got[0] != "甲" || got[1] != "乙" {
		t.Fatalf("user saw %q, want each piece once", got)
	}
	if d := h.wc.Dropped(); len(d) != 2 || d[0].Drop != wecomtest.DropDuplicate {
		t.Fatalf("WeCom dropped %+v, want the 2 resent pieces as duplicates", d)
	}
}

// Every accepted question of a backlog from a few reused user names, with
// identical answers, arrives: nothing is swallowed by the duplicate check.
func TestBacklogOfIdenticalAnswersAllArrive(t *testing.T) {
	h := newHarness(t, "")
	const per = 12
	users := []string{"zhangsan", "lisi", "wangwu"}
	for range per * len(users) {
		h.dify.Push(llmtest.Script{Answer: "请联系 IT 服务台，分机 8000。"})
	}
	for i := 0; i < per; i++ {
		for _, u := range users {
			h.ask("helpdesk", u, fmt.Sprintf("第 %d 个问题", i))
		}
	}
	h.waitIdle()
	for _, u := range users {
		if got := h.sentTo(u); len(got) != per {
			t.Errorf("%s got %d answers, want %d", u, len(got), per)
		}
	}
}

// A job that panics every time ends after maxPanics runs with an apology
// carrying a reference id, a failed history entry with that id and a log
// line; it does not come back after a restart.
func TestPoisonJobApologisesOnce(t *testing.T) {
	h := newHarness(t, "")
	h.stop()
	store, err := kv.Open(h.dbPath, kv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	j, _, err := store.Accept(kv.Question{App: "helpdesk", User: "zhangsan", DedupKey: "m:1", Kind: kv.KindQuestion, Text: "q"})
	if err != nil {
		t.Fatal(err)
	}
	// A damaged record: more delivered than there is answer. Every run
	// panics on it (slice bounds) while streaming.
	j.Attempts, j.Answer, j.Delivered = 1, "ab", 9
	j.Panics = 1 // one panic already before the last restart
	if err := store.SaveJob(j); err != nil {
		t.Fatal(err)
	}
	store.Close()
	for range 4 {
		h.dify.Push(llmtest.Script{Answer: "正常的回答。"})
	}
	h.start()
	h.waitIdle()
	got := h.sentTo("zhangsan")
	if len(got) != 1 || !strings.Contains(got[0].Content, "参考编号") {
		t.Fatalf("user got %q, want one apology with a reference id", contents(got))
	}
	e, _, err := h.store.History(kv.HistoryQuery{User: "zhangsan"})
	if err != nil || len(e) != 1 || e[0].Status != kv.StatusFailed || e[0].RefID == "" || !strings.Contains(got[0].Content, e[0].RefID) {
		t.Fatalf("history = %+v, %v", e, err)
	}
	log := h.logBuf.String()
	if !strings.Contains(log, "panic while answering") || !strings.Contains(log, e[0].RefID) {
		t.Fatalf("the log lacks the panic or the reference id:\n%s", log)
	}
	if n := strings.Count(log, "panic while answering"); n != maxPanics-1 {
		t.Errorf("panicked %d times in this run, want %d (the saved count carries over)", n, maxPanics-1)
	}
	h.restart()
	h.waitIdle()
	if got := h.sentTo("zhangsan"); len(got) != 1 {
		t.Fatalf("after a restart the poison job came back: %q", contents(got))
	}
}

// Every response carries nosniff, and HSTS when public_url is https.
func TestSecurityHeadersEverywhere(t *testing.T) {
	h := newHarness(t, "")
	for _, path := range []string{"/healthz", "/metrics", "/nope", "/wecom/helpdesk", "/wecom/unknown"} {
		resp, err := http.Get(h.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options = %q", path, resp.Header.Get("X-Content-Type-Options"))
		}
		if !strings.HasPrefix(resp.Header.Get("Strict-Transport-Security"), "max-age=") {
			t.Errorf("%s: no HSTS with an https public_url", path)
		}
	}
}

// Metrics labels stay bounded: an LLM's own error code (free text from a
// remote server) is never a label value.
func TestErrorLabelsBounded(t *testing.T) {
	for i := 0; i < 3; i++ {
		err := &llm.APIError{Status: 400, Code: fmt.Sprintf("weird_code_%d", i)}
		if got := errCode(err); got != "4xx" {
			t.Fatalf("errCode(%v) = %q, want 4xx", err, got)
		}
	}
	if got := errCode(&llm.APIError{Status: 503, Code: "x"}); got != "5xx" {
		t.Fatalf("5xx mapped to %q", got)
	}
}

// A reload keeps each app's WeCom client (no new gettoken) and applies a
// new per-member limit.
func TestReloadReusesClients(t *testing.T) {
	h := newHarness(t, "")
	h.ask("helpdesk", "zhangsan", "你好")
	h.waitIdle()
	before := h.wc.TokenCalls()
	next, err := Parse("reload.toml", []byte(strings.Replace(h.configText(), "sso_base", "per_member_per_minute = 7\nsso_base", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.b.Reload(next); err != nil {
		t.Fatal(err)
	}
	h.ask("helpdesk", "zhangsan", "再问一次")
	h.waitIdle()
	if after := h.wc.TokenCalls(); after != before {
		t.Fatalf("reload cost %d gettoken calls", after-before)
	}
	if h.b.budget.perMinute != 7 {
		t.Fatalf("per-member limit after reload = %d, want 7", h.b.budget.perMinute)
	}
	// A changed secret is a different client.
	next2, _ := Parse("reload.toml", []byte(strings.Replace(h.configText(), `secret = "secret-helpdesk"`, `secret = "secret-helpdesk-2"`, 1)))
	if err := h.b.Reload(next2); err != nil {
		t.Fatal(err)
	}
	if h.b.app("helpdesk").client == h.b.app("chat").client {
		t.Fatal("two apps share a client")
	}
}

// The pool takes no job once stop has begun, also when submit races stop.
func TestPoolSubmitAfterStop(t *testing.T) {
	ran := make(chan struct{}, 100)
	p := newPool(2, func(context.Context, jobRef) time.Duration { ran <- struct{}{}; return 0 }, nil)
	p.stop()
	for i := 0; i < 10; i++ {
		p.submit(context.Background(), &kv.Job{ID: uint64(i), Question: kv.Question{App: "a", User: "u"}})
	}
	if !p.wait(context.Background()) {
		t.Fatal("wait did not return")
	}
	select {
	case <-ran:
		t.Fatal("a job ran after stop")
	case <-time.After(20 * time.Millisecond):
	}
	if q := p.queued.Load(); q != 0 {
		t.Fatalf("queued gauge = %d after stop", q)
	}
}

// Bursts to several members, counted the way WeCom counts (a sliding minute
// of its own arrival times, which lag our clock by a varying network
// delay): nobody gets more than 30 in any minute, so WeCom drops nothing.
func TestBudgetBurstsNeverExceedWeComsWindow(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	h := newHarness(t, "")
	h.stop()
	h.now = clock.Now
	h.wc.Close()
	var rmu sync.Mutex
	rng := rand.New(rand.NewPCG(7, 9))
	h.wc = newWeComAt(func() time.Time {
		// Time passes while a request travels: WeCom's arrival clock
		// reads somewhere after our send began.
		rmu.Lock()
		d := time.Duration(rng.Int64N(int64(400 * time.Millisecond)))
		rmu.Unlock()
		clock.Add(d)
		return clock.Now()
	})
	h.start()
	h.b.budget.sleep = clock.sleep
	users := []string{"zhangsan", "lisi", "wangwu"}
	const per = 36
	for i := 0; i < per; i++ {
		for _, u := range users {
			h.ask("helpdesk", u, fmt.Sprintf("%s 的第 %d 个问题", u, i))
		}
	}
	waitFor(t, func() bool {
		st, _ := h.store.Stats()
		return st.PendingJobs == 0
	})
	if d := h.wc.Dropped(); len(d) != 0 {
		t.Fatalf("WeCom dropped %d messages (first: %+v)", len(d), d[0])
	}
	for _, u := range users {
		got := h.sentTo(u)
		if len(got) != per {
			t.Fatalf("%s got %d answers, want %d", u, len(got), per)
		}
		for i := range got {
			n := 0
			for j := i; j < len(got) && got[j].At.Sub(got[i].At) < time.Minute; j++ {
				n++
			}
			if n > 30 {
				t.Fatalf("%s: %d messages arrived within a minute from %v", u, n, got[i].At)
			}
		}
	}
}

// The thinking notice never holds up the answer: when WeCom refuses it
// (45009, which the answer's pieces would wait out for rate_limit_wait),
// it is dropped after one try and the answer streams on.
func TestThinkingNoticeDoesNotBlockTheAnswer(t *testing.T) {
	h := newHarness(t, "")
	h.stop()
	h.edit = func(s string) string {
		return strings.Replace(s, "thinking_after = \"-1s\"", "thinking_after = \"20ms\"", 1)
	}
	h.start()
	h.dify.Push(llmtest.Script{Answer: "第一段。\n\n第二段。", FirstByteDelay: 300 * time.Millisecond, Deltas: 2})
	h.wc.FailNext("/cgi-bin/message/send", 45009, "api freq out of limit", 1)
	h.ask("helpdesk", "zhangsan", "慢一点的问题")
	got := h.waitSent("zhangsan", 1)
	if joined(got) != "第一段。\n\n第二段。" {
		t.Fatalf("user got %q; the refused notice should be skipped, not retried", contents(got))
	}
	if !strings.Contains(h.logBuf.String(), "cannot send the thinking notice") {
		t.Fatal("the refused notice was not logged")
	}
}

// An LLM log line names its backend once (the bridge's name for it), not
// twice (issue 9 item 16).
func TestLLMLogLinesNameTheBackendOnce(t *testing.T) {
	h := newHarness(t, "")
	h.dify.Push(llmtest.Script{Status: 500}, llmtest.Script{Answer: "重试后成功。"})
	h.ask("helpdesk", "zhangsan", "你好")
	h.waitSent("zhangsan", 1)
	lines := 0
	for _, l := range strings.Split(h.logBuf.String(), "\n") {
		if !strings.Contains(l, "component=llm") {
			continue
		}
		lines++
		if n := strings.Count(l, " backend="); n != 1 || !strings.Contains(l, "backend=kb") {
			t.Errorf("llm log line with %d backend= attributes: %s", n, l)
		}
	}
	if lines == 0 {
		t.Fatalf("no llm log line to check:\n%s", h.logBuf.String())
	}
}

// With [wecom] proxy, every WeCom API call of the running daemon goes
// through the proxy (so that a fixed-IP proxy can be put in 企业可信IP),
// while the LLM backends do not.
func TestDaemonWeComCallsGoThroughTheProxy(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	target, _ := url.Parse("http://placeholder")
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target); r.Out.Host = r.In.Host }}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path)
		mu.Unlock()
		if !r.URL.IsAbs() {
			http.Error(w, "not a proxy request", http.StatusBadRequest)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	h := newHarness(t, "")
	h.stop()
	u, _ := url.Parse(h.wc.URL())
	*target = *u
	h.edit = func(s string) string {
		return strings.Replace(s, "sso_base", "proxy = \""+proxy.URL+"\"\nsso_base", 1)
	}
	h.start()
	h.ask("helpdesk", "zhangsan", "经代理的问题")
	h.waitSent("zhangsan", 1)
	mu.Lock()
	defer mu.Unlock()
	has := func(p string) bool { return slices.Contains(seen, p) }
	if !has("/cgi-bin/gettoken") || !has("/cgi-bin/message/send") {
		t.Fatalf("the proxy saw %v; every WeCom call must go through it", seen)
	}
	for _, p := range seen {
		if !strings.HasPrefix(p, "/cgi-bin/") {
			t.Fatalf("a non-WeCom call went through the WeCom proxy: %s", p)
		}
	}
}

// A full disk while answering keeps the job: it is retried with back-off,
// /healthz is unhealthy meanwhile, and once writes work again the answer
// arrives — once, whole — without a restart.
func TestStorageFailureKeepsTheJob(t *testing.T) {
	h := newHarness(t, "")
	answer := "第一段，说明报销的材料。\n\n第二段，说明审批的流程。\n\n第三段，说明付款的时间。"
	h.dify.Push(llmtest.Script{Answer: answer, Deltas: 6, DeltaDelay: 60 * time.Millisecond})
	h.dify.Push(llmtest.Script{Answer: answer, Deltas: 3})
	h.ask("helpdesk", "zhangsan", "报销流程？")
	waitFor(t, func() bool { return len(h.dify.Requests()) == 1 })
	enospc := fmt.Errorf("write bridge.db: %w", syscall.ENOSPC)
	h.failWrites.Store(&enospc)
	waitFor(t, func() bool { return strings.Contains(h.logBuf.String(), "storage error while answering") })
	resp, err := http.Get(h.base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "writes failing") {
		t.Fatalf("/healthz while writes fail: %d %q", resp.StatusCode, body)
	}
	time.Sleep(300 * time.Millisecond)
	h.failWrites.Store(nil) // space is back
	h.waitIdle()
	if got := joined(h.sentTo("zhangsan")); strings.ReplaceAll(got, "\n", "") != strings.ReplaceAll(answer, "\n", "") {
		t.Fatalf("after the disk came back the user saw:\n%s", got)
	}
	e, _, err := h.store.History(kv.HistoryQuery{User: "zhangsan"})
	if err != nil || len(e) != 1 || e[0].Status != kv.StatusDone {
		t.Fatalf("history = %+v, %v", e, err)
	}
	resp, err = http.Get(h.base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Body.Close(); resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz after recovery: %d", resp.StatusCode)
	}
}

// The send budget survives a restart: WeCom still counts the messages sent
// just before it, so the resumed ones wait instead of being dropped.
func TestBudgetSurvivesRestart(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	h := newHarness(t, "")
	h.stop()
	h.now = clock.Now
	h.wc.Close()
	h.wc = newWeComAt(clock.Now)
	h.start()
	h.b.budget.sleep = clock.sleep
	for i := 0; i < 25; i++ {
		h.ask("helpdesk", "zhangsan", fmt.Sprintf("重启前的问题 %d", i))
	}
	waitFor(t, func() bool { return len(h.sentTo("zhangsan")) == 25 })
	h.stop()
	h.start()
	h.b.budget.sleep = clock.sleep
	for i := 0; i < 16; i++ {
		h.ask("helpdesk", "zhangsan", fmt.Sprintf("重启后的问题 %d", i))
	}
	waitFor(t, func() bool { return len(h.sentTo("zhangsan")) == 41 })
	if d := h.wc.Dropped(); len(d) != 0 {
		t.Fatalf("after the restart WeCom dropped %d messages", len(d))
	}
}
