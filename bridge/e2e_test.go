package bridge

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
)

// A long streamed answer arrives as several pieces, in order, each within
// WeCom's 2048-byte limit, and together they carry the whole answer.
func TestQuestionAnswerPiecesInOrder(t *testing.T) {
	h := newHarness(t, "")
	var paras []string
	for i := 1; i <= 12; i++ {
		paras = append(paras, fmt.Sprintf("第%d段：%s", i, strings.Repeat("报销需要提交发票和审批单。", 8)))
	}
	answer := strings.Join(paras, "\n\n")
	h.dify.Push(llmtest.Script{Answer: answer, Deltas: 60, DeltaDelay: 2 * time.Millisecond})
	h.ask("helpdesk", "zhangsan", "报销流程是什么？")
	h.waitIdle()
	got := h.sentTo("zhangsan")
	if len(got) < 3 {
		t.Fatalf("got %d pieces, want several (streaming)", len(got))
	}
	// The first piece goes early: much smaller than the later ones.
	if len(got[0].Content) >= len(got[1].Content) {
		t.Errorf("first piece %d bytes, second %d: the first should go early", len(got[0].Content), len(got[1].Content))
	}
	for i, m := range got {
		if len(m.Content) > 2048 || m.Truncated {
			t.Errorf("piece %d is %d bytes (truncated=%v)", i, len(m.Content), m.Truncated)
		}
		if m.AgentID != 1000002 || m.MsgType != "text" || !m.DuplicateCheck {
			t.Errorf("piece %d: agent %d type %s dupcheck %v", i, m.AgentID, m.MsgType, m.DuplicateCheck)
		}
	}
	all := joined(got)
	last := -1
	for i := 1; i <= 12; i++ {
		at := strings.Index(all, fmt.Sprintf("第%d段", i))
		if at < 0 || at < last {
			t.Fatalf("paragraph %d missing or out of order in %q", i, all)
		}
		last = at
	}
	if strings.ReplaceAll(all, "\n", "") != strings.ReplaceAll(answer, "\n", "") {
		t.Errorf("delivered text differs from the answer:\n%s", all)
	}
	e, _, err := h.store.History(kv.HistoryQuery{User: "zhangsan"})
	if err != nil || len(e) != 1 || e[0].Status != kv.StatusDone || e[0].Answer != answer {
		t.Fatalf("history = %+v, %v", e, err)
	}
}

// WeCom retries a callback it thinks failed; every copy is acked and the
// question is answered once, also when the copies race.
func TestRetriedCallbackAnsweredOnce(t *testing.T) {
	h := newHarness(t, "")
	h.dify.Push(llmtest.Script{Answer: "只回答一次。", DeltaDelay: 20 * time.Millisecond})
	cb := h.callback("helpdesk", "zhangsan", "你好")
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st := h.postCallback("helpdesk", cb); st != http.StatusOK {
				t.Errorf("status %d", st)
			}
		}()
	}
	wg.Wait()
	if st := h.postCallback("helpdesk", cb); st != http.StatusOK { // a late retry
		t.Fatalf("status %d", st)
	}
	h.waitIdle()
	time.Sleep(50 * time.Millisecond)
	if got := h.sentTo("zhangsan"); len(got) != 1 || got[0].Content != "只回答一次。" {
		t.Fatalf("sent %q", contents(got))
	}
	if n := len(h.dify.Requests()); n != 1 {
		t.Fatalf("LLM asked %d times", n)
	}
	if d := h.b.metrics.get("wecom_bridge_callbacks_total", "helpdesk", "duplicate"); d != 3 {
		t.Fatalf("duplicates counted %d, want 3", d)
	}
}

// One user's questions are answered one at a time, in order; another user
// is not held up by them.
func TestUsersInParallelOneUserInOrder(t *testing.T) {
	h := newHarness(t, "")
	// zhangsan's first answer is slow.
	h.dify.Push(llmtest.Script{Answer: "慢的回答。", Deltas: 5, DeltaDelay: 60 * time.Millisecond})
	h.ask("helpdesk", "zhangsan", "Q1")
	waitFor(t, func() bool { return len(h.dify.Requests()) == 1 })
	h.ask("helpdesk", "zhangsan", "Q2")
	h.ask("helpdesk", "zhangsan", "Q3")
	h.ask("helpdesk", "lisi", "lisi的问题")
	h.waitSent("lisi", 1)
	if got := h.sentTo("zhangsan"); len(got) != 0 {
		t.Fatalf("lisi waited for zhangsan: zhangsan already has %q", contents(got))
	}
	got := h.waitSent("zhangsan", 3)
	want := []string{"慢的回答。", echo("Q2"), echo("Q3")}
	for i, w := range want {
		if got[i].Content != w {
			t.Fatalf("zhangsan got %q, want %q", contents(got), want)
		}
	}
	var order []string
	for _, r := range h.dify.Requests() {
		if r.User == "helpdesk:zhangsan" {
			order = append(order, r.Query)
		}
	}
	if strings.Join(order, ",") != "Q1,Q2,Q3" {
		t.Fatalf("LLM saw zhangsan's questions as %v", order)
	}
}

// Questions accepted before a shutdown are answered after the restart, once.
func TestRestartAnswersPendingOnce(t *testing.T) {
	h := newHarness(t, "")
	h.dify.Push(llmtest.Script{Hang: true})
	h.ask("helpdesk", "zhangsan", "第一个问题")
	waitFor(t, func() bool { return len(h.dify.Requests()) == 1 })
	h.ask("helpdesk", "zhangsan", "第二个问题")
	h.ask("helpdesk", "lisi", "李四的问题")
	h.waitSent("lisi", 1)
	h.stop() // the hanging answer is cut off; both of zhangsan's stay pending
	st, _ := kvStats(t, h.dbPath)
	if st != 2 {
		t.Fatalf("pending after shutdown = %d, want 2", st)
	}
	h.start()
	got := h.waitSent("zhangsan", 2)
	h.waitIdle()
	time.Sleep(50 * time.Millisecond)
	got = h.sentTo("zhangsan")
	if len(got) != 2 || got[0].Content != echo("第一个问题") || got[1].Content != echo("第二个问题") {
		t.Fatalf("after restart zhangsan got %q", contents(got))
	}
	if l := h.sentTo("lisi"); len(l) != 1 {
		t.Fatalf("lisi answered %d times", len(l))
	}
}

// A job interrupted in the middle of a segment resumes with exactly the
// pieces that were cut before, from the first unacknowledged one.
func TestResumeOpenSegment(t *testing.T) {
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
	j.Attempts = 1
	j.Answer, j.AnswerDone = "甲\n\n乙\n\n丙", true
	j.Segment = &kv.Segment{RawEnd: len("甲\n\n乙\n\n"), Pieces: []string{"甲", "乙"}, Sent: 1}
	if err := store.SaveJob(j); err != nil {
		t.Fatal(err)
	}
	store.Close()
	h.start()
	h.waitIdle()
	got := h.sentTo("zhangsan")
	if len(got) != 2 || got[0].Content != "乙" || got[1].Content != "丙" {
		t.Fatalf("resumed delivery sent %q, want [乙 丙]", contents(got))
	}
	if len(h.dify.Requests()) != 0 {
		t.Fatal("a finished answer was asked again")
	}
}

// A job interrupted mid-stream is asked again; if the new answer starts with
// what was delivered, delivery continues without repeating it.
func TestResumeMidStreamContinues(t *testing.T) {
	h := newHarness(t, "")
	h.stop()
	store, err := kv.Open(h.dbPath, kv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Both jobs resume in parallel, so their answers come from the fake's
	// echo (decided by the question) rather than from a shared script
	// queue, whose order between the two users is a race.
	j, _, _ := store.Accept(kv.Question{App: "helpdesk", User: "zhangsan", DedupKey: "m:1", Kind: kv.KindQuestion, Text: "第一段。\n\n第二段。"})
	j.Attempts = 1
	j.Answer = echo("第一段。\n\n")
	j.Delivered = len(j.Answer)
	_ = store.SaveJob(j)
	j2, _, _ := store.Accept(kv.Question{App: "helpdesk", User: "lisi", DedupKey: "m:2", Kind: kv.KindQuestion, Text: "新的回答。"})
	j2.Attempts = 1
	j2.Answer, j2.Delivered = "旧的开头。\n\n", len("旧的开头。\n\n")
	_ = store.SaveJob(j2)
	store.Close()
	h.start()
	h.waitIdle()
	if got := h.sentTo("zhangsan"); len(got) != 1 || got[0].Content != "第二段。" {
		t.Fatalf("zhangsan got %q, want only the rest", contents(got))
	}
	got := h.sentTo("lisi")
	if len(got) != 2 || !strings.Contains(got[0].Content, "完整") || got[1].Content != echo("新的回答。") {
		t.Fatalf("lisi got %q, want a notice then the whole new answer", contents(got))
	}
}

func kvStats(t *testing.T, path string) (int, error) {
	s, err := kv.Open(path, kv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Stats()
	return st.PendingJobs, err
}

// The Dify conversation is continued on the next question and reset by /new.
func TestDifyConversationContinuedAndReset(t *testing.T) {
	h := newHarness(t, "")
	h.ask("helpdesk", "zhangsan", "一")
	h.waitSent("zhangsan", 1)
	h.ask("helpdesk", "zhangsan", "二")
	h.waitSent("zhangsan", 2)
	h.ask("helpdesk", "zhangsan", "/new")
	got := h.waitSent("zhangsan", 3)
	if got[2].Content != h.cfg.Texts.NewChat {
		t.Fatalf("/new answered %q", got[2].Content)
	}
	h.ask("helpdesk", "zhangsan", "三")
	h.waitSent("zhangsan", 4)
	reqs := h.dify.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d Dify requests (the command must not reach the LLM)", len(reqs))
	}
	if reqs[0].ConversationID != "" || reqs[1].ConversationID == "" || reqs[2].ConversationID != "" {
		t.Fatalf("conversation ids: %q %q %q", reqs[0].ConversationID, reqs[1].ConversationID, reqs[2].ConversationID)
	}
	if !reqs[0].HasInputs || reqs[0].User != "helpdesk:zhangsan" {
		t.Fatalf("request: inputs present %v, user %q", reqs[0].HasInputs, reqs[0].User)
	}
	h.waitIdle()
	e, _, _ := h.store.History(kv.HistoryQuery{User: "zhangsan"})
	if len(e) != 3 || !e[0].NewConv || e[1].NewConv || e[0].ConvSeq == e[1].ConvSeq {
		t.Fatalf("history conversation markers: %+v", e)
	}
}

// A conversation deleted in Dify (404 not_found) is dropped and the question
// asked again in a new one.
func TestDifyConversationNotFoundRecovers(t *testing.T) {
	h := newHarness(t, "")
	h.ask("helpdesk", "zhangsan", "一")
	h.waitSent("zhangsan", 1)
	h.waitIdle()
	conv, _ := h.store.Conversation("helpdesk", "zhangsan")
	h.dify.DeleteConversation(conv.DifyID)
	h.ask("helpdesk", "zhangsan", "二")
	got := h.waitSent("zhangsan", 2)
	if got[1].Content != echo("二") {
		t.Fatalf("got %q", got[1].Content)
	}
	reqs := h.dify.Requests()
	if len(reqs) != 3 || reqs[1].ConversationID != conv.DifyID || reqs[2].ConversationID != "" {
		t.Fatalf("requests: %+v", reqs)
	}
	h.waitIdle()
	next, _ := h.store.Conversation("helpdesk", "zhangsan")
	if next.DifyID == "" || next.DifyID == conv.DifyID {
		t.Fatalf("stored conversation %q after recovery", next.DifyID)
	}
}

// An LLM 500 is retried and the user gets the answer.
func TestLLM500ThenSuccess(t *testing.T) {
	h := newHarness(t, "")
	h.dify.Push(llmtest.Script{Status: 500}, llmtest.Script{Answer: "重试后成功。"})
	h.ask("helpdesk", "zhangsan", "你好")
	got := h.waitSent("zhangsan", 1)
	if got[0].Content != "重试后成功。" {
		t.Fatalf("got %q", got[0].Content)
	}
}

// When the LLM keeps failing, the user gets a short apology with a
// reference id, and the history says failed.
func TestLLMTotalFailureApologises(t *testing.T) {
	h := newHarness(t, "")
	for i := 0; i < 6; i++ {
		h.dify.Push(llmtest.Script{Status: 503})
	}
	h.ask("helpdesk", "zhangsan", "你好")
	got := h.waitSent("zhangsan", 1)
	h.waitIdle()
	e, _, _ := h.store.History(kv.HistoryQuery{User: "zhangsan"})
	if len(e) != 1 || e[0].Status != kv.StatusFailed || e[0].RefID == "" {
		t.Fatalf("history = %+v", e)
	}
	if want := fmt.Sprintf(h.cfg.Texts.Failed, e[0].RefID); got[0].Content != want {
		t.Fatalf("apology %q, want %q", got[0].Content, want)
	}
	if !strings.Contains(h.logBuf.String(), e[0].RefID) {
		t.Fatal("the reference id is not in the log, so an admin cannot find the cause")
	}
}

// A stream cut after some text delivers what came and marks it interrupted.
func TestLLMCutMidStream(t *testing.T) {
	h := newHarness(t, "")
	h.dify.Push(llmtest.Script{Answer: "第一段内容比较长，足够先发出去。\n\n第二段内容也比较长，会被截断在这里的后面。", Deltas: 10, CutAfter: 6})
	h.ask("helpdesk", "zhangsan", "你好")
	h.waitIdle()
	all := joined(h.sentTo("zhangsan"))
	if !strings.Contains(all, "第一段") || !strings.Contains(all, "不完整") {
		t.Fatalf("got %q", all)
	}
}

// An access token that expires in the middle of a delivery is refreshed and
// delivery continues.
func TestTokenExpiredMidDelivery(t *testing.T) {
	h := newHarness(t, "")
	para := strings.Repeat("这是一段比较长的回答内容。", 10)
	h.dify.Push(llmtest.Script{Answer: para + "\n\n" + para + "\n\n" + para + "\n\n结束。", Deltas: 40, DeltaDelay: 3 * time.Millisecond})
	h.ask("helpdesk", "zhangsan", "你好")
	h.waitSent("zhangsan", 1)
	h.wc.ExpireTokens()
	h.waitIdle()
	all := joined(h.sentTo("zhangsan"))
	if !strings.HasSuffix(all, "结束。") {
		t.Fatalf("delivery did not finish: %q", all)
	}
	if n := h.wc.TokenCalls(); n < 2 {
		t.Fatalf("gettoken called %d times; the expired token was not refreshed", n)
	}
}

// Injected WeCom failures on send are retried.
func TestSendErrorsRetried(t *testing.T) {
	h := newHarness(t, "")
	h.wc.FailNext("/cgi-bin/message/send", -1, "system busy", 2)
	h.ask("helpdesk", "zhangsan", "你好")
	got := h.waitSent("zhangsan", 1)
	if got[0].Content != echo("你好") {
		t.Fatalf("got %q", got[0].Content)
	}
}

// Two apps on one daemon are routed to their own backends, with state kept
// apart.
func TestTwoAppsTwoBackends(t *testing.T) {
	h := newHarness(t, "")
	h.dify.Push(llmtest.Script{Answer: "来自 Dify"})
	h.oai.Push(llmtest.Script{Answer: "来自 OpenAI", Reasoning: "先想一想……"})
	h.ask("helpdesk", "zhangsan", "问 Dify")
	h.waitSent("zhangsan", 1)
	h.ask("chat", "zhangsan", "问 OpenAI")
	got := h.waitSent("zhangsan", 2)
	if got[0].AgentID != 1000002 || got[0].Content != "来自 Dify" || got[1].AgentID != 1000003 || got[1].Content != "来自 OpenAI" {
		t.Fatalf("got %+v", got)
	}
	if len(h.dify.Requests()) != 1 || len(h.oai.Requests()) != 1 {
		t.Fatal("a backend got the other app's question")
	}
	// The OpenAI app keeps its own memory: the next question carries the
	// first turn, with the system prompt first, and no reasoning text.
	h.ask("chat", "zhangsan", "再问")
	h.waitSent("zhangsan", 3)
	msgs := h.oai.Requests()[1].Messages
	if len(msgs) != 4 || msgs[0].Role != "system" || msgs[1].Content != "问 OpenAI" || msgs[2].Content != "来自 OpenAI" {
		t.Fatalf("OpenAI messages: %+v", msgs)
	}
	h.waitIdle()
	e, _, _ := h.store.History(kv.HistoryQuery{User: "zhangsan"})
	if len(e) != 3 || e[0].App != "chat" || e[2].App != "helpdesk" {
		t.Fatalf("history: %+v", e)
	}
	if strings.Contains(e[1].Answer, "先想") {
		t.Fatal("reasoning stored as the answer")
	}
	dc, _ := h.store.Conversation("helpdesk", "zhangsan")
	oc, _ := h.store.Conversation("chat", "zhangsan")
	if dc.DifyID == "" || len(dc.Turns) != 0 || oc.DifyID != "" || len(oc.Turns) != 2 {
		t.Fatalf("conversations mixed: dify %+v openai %+v", dc, oc)
	}
}

// Non-text messages and commands get their fixed replies; the LLM is not
// asked.
func TestNonTextAndHelp(t *testing.T) {
	h := newHarness(t, "")
	// A location: a message kind nobody can ask about.
	inner := []byte(fmt.Sprintf(`<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[location]]></MsgType><Location_X>23.13</Location_X><Location_Y>113.26</Location_Y><Scale>15</Scale><Label><![CDATA[广州]]></Label><MsgId>99</MsgId><AgentID>1000002</AgentID></xml>`, testCorp, time.Now().Unix()))
	cb := mustCallback(t, inner, 1000002)
	if st := h.postCallback("helpdesk", cb); st != http.StatusOK {
		t.Fatalf("status %d", st)
	}
	h.waitSent("zhangsan", 1)
	h.ask("helpdesk", "zhangsan", "帮助")
	got := h.waitSent("zhangsan", 2)
	if got[0].Content != h.cfg.Texts.Unsupported || got[1].Content != h.cfg.Texts.Help {
		t.Fatalf("got %q", contents(got))
	}
	if len(h.dify.Requests()) != 0 {
		t.Fatal("the LLM was asked")
	}
}

// Allowlists refuse politely without calling the LLM; department members
// are let in; quotas stop a user past the limit.
func TestAccessAndQuota(t *testing.T) {
	h := newHarness(t, "")
	h.stop()
	h.edit = func(s string) string {
		return strings.Replace(s, `backend = "kb"`, "backend = \"kb\"\nallow_users = [\"zhangsan\"]\nallow_departments = [2]\nrate_per_minute = 2", 1)
	}
	h.start()
	h.ask("helpdesk", "outsider", "我能用吗")
	got := h.waitSent("outsider", 1)
	if got[0].Content != h.cfg.Texts.NotAllowed {
		t.Fatalf("outsider got %q", got[0].Content)
	}
	h.ask("helpdesk", "lisi", "一") // in department 2
	h.ask("helpdesk", "lisi", "二")
	h.ask("helpdesk", "lisi", "三")
	got = h.waitSent("lisi", 3)
	if got[0].Content != echo("一") || got[1].Content != echo("二") || got[2].Content != h.cfg.Texts.OverMinute {
		t.Fatalf("lisi got %q", contents(got))
	}
	for _, r := range h.dify.Requests() {
		if r.Query == "我能用吗" || r.Query == "三" {
			t.Fatalf("refused question reached the LLM: %q", r.Query)
		}
	}
}

// Forged, malformed and oversized callbacks get a 4xx and leave nothing
// pending.
func TestBadCallbacksRejected(t *testing.T) {
	h := newHarness(t, "")
	good := h.callback("helpdesk", "zhangsan", "x")
	forged := *good
	forged.Query = cloneQuery(good.Query)
	forged.Query.Set("msg_signature", strings.Repeat("0", 40))
	wrongCorp := mustCallbackCorp(t, wecomtestText("wxOtherCorp", "zhangsan", "x"), 1000002, "wxOtherCorp")
	huge := *good
	huge.Body = bytes.Repeat([]byte("A"), 70<<10)
	truncated := *good
	truncated.Body = good.Body[:len(good.Body)/2]
	cases := []struct {
		name string
		cb   *wecomCallback
		want int
	}{
		{"bad signature", &forged, 403},
		{"wrong receiveid", wrongCorp, 403},
		{"oversized", &huge, 413},
		{"truncated body", &truncated, 400},
	}
	for _, c := range cases {
		if c.name == "oversized" {
			// Sending all of it races with the server closing after its
			// 413 (the client may see a reset): announce it only.
			if st := postOversized(t, h.base, good, len(c.cb.Body)); st != c.want {
				t.Errorf("%s: status %d, want %d", c.name, st, c.want)
			}
			continue
		}
		if st := h.postCallback("helpdesk", c.cb); st != c.want {
			t.Errorf("%s: status %d, want %d", c.name, st, c.want)
		}
	}
	if st := h.postCallback("nosuchapp", good); st != 404 {
		t.Errorf("unknown app: %d", st)
	}
	st, _ := h.store.Stats()
	if st.PendingJobs != 0 || st.HistoryEntries != 0 {
		t.Fatalf("a rejected callback left state: %+v", st)
	}
}

// The GET URL verification echoes the plain text.
func TestURLVerification(t *testing.T) {
	h := newHarness(t, "")
	q, err := wecomtestVerify("1616140317555161061")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(h.base + "/wecom/helpdesk?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != 200 || body != "1616140317555161061" {
		t.Fatalf("verify: %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("Server") != "" {
		t.Fatalf("Server header %q", resp.Header.Get("Server"))
	}
	q.Set("msg_signature", strings.Repeat("a", 40))
	resp, _ = http.Get(h.base + "/wecom/helpdesk?" + q.Encode())
	readAll(t, resp)
	if resp.StatusCode != 403 {
		t.Fatalf("forged verify: %d", resp.StatusCode)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// echo is what the fakes answer when no script is queued.
func echo(q string) string { return "You asked: " + q }
