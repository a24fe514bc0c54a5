package bridge

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

const (
	testBotID     = "aibKB0001"
	testBotSecret = "kb-long-connection-secret"
)

// newBotHarness runs the daemon with a websocket bot "kbbot" (Dify backend
// kb) connected to an emulated WeCom long-connection server.
func newBotHarness(t testing.TB, extra string) (*harness, *emulator.BotServer) {
	t.Helper()
	bs, err := emulator.NewBotServer(emulator.BotConfig{Bots: map[string]string{testBotID: testBotSecret}, AckDelay: 3 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	url, err := bs.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, fmt.Sprintf(`
[[bots]]
name = "kbbot"
bot_id = %q
secret = %q
ws_url = %q
backend = "kb"
welcome = "你好，我是知识库助手。"
%s`, testBotID, testBotSecret, url, extra))
	t.Cleanup(func() { h.stop(); _ = bs.Close() })
	waitFor(t, func() bool { return bs.Connected(testBotID) })
	return h, bs
}

// botSeen is everything the user saw for one question: the bubble's final
// text, then the proactive messages to the chat, joined.
func botSeen(bs *emulator.BotServer, chat string) string {
	var parts []string
	for _, b := range bs.Bubbles() {
		if b.ChatKey == chat {
			parts = append(parts, b.Text)
		}
	}
	return strings.Join(append(parts, bs.Sent(chat)...), "\n\n")
}

func waitBubbleDone(t testing.TB, bs *emulator.BotServer, n int) []emulator.BotBubble {
	t.Helper()
	var done []emulator.BotBubble
	waitFor(t, func() bool {
		done = done[:0]
		for _, b := range bs.Bubbles() {
			if b.Finishes > 0 {
				done = append(done, b)
			}
		}
		return len(done) >= n
	})
	return done
}

func longMarkdown(paras int) string {
	var ps []string
	for i := 1; i <= paras; i++ {
		ps = append(ps, fmt.Sprintf("**第%d段**：%s", i, strings.Repeat("报销需要提交发票和审批单。", 6)))
	}
	return strings.Join(ps, "\n\n")
}

// One bubble: the answer streams in several frames, each only after the
// previous ack, with one finish; Markdown is kept as it is.
func TestBotStreamsOneBubble(t *testing.T) {
	h, bs := newBotHarness(t, "")
	answer := longMarkdown(8)
	h.dify.Push(llmtest.Script{Answer: answer, Deltas: 30, DeltaDelay: 15 * time.Millisecond})
	if _, err := bs.PushText(testBotID, "zhangsan", "报销流程是什么？"); err != nil {
		t.Fatal(err)
	}
	b := waitBubbleDone(t, bs, 1)[0]
	h.waitIdle()
	if b.Text != answer || b.Finishes != 1 || b.Frames < 3 {
		t.Fatalf("bubble: %d frames, %d finishes, text %q", b.Frames, b.Finishes, b.Text)
	}
	if v := bs.Violations(); len(v) != 0 {
		t.Fatalf("protocol violations: %v", v)
	}
	if s := bs.Sent("zhangsan"); len(s) != 0 {
		t.Fatalf("unexpected proactive messages: %q", s)
	}
	if b.FeedbackID == "" {
		t.Error("no feedback id on the first frame of a Dify answer")
	}
	e, _, err := h.store.History(kv.HistoryQuery{User: "zhangsan"})
	if err != nil || len(e) != 1 || e[0].Status != kv.StatusDone || e[0].App != "kbbot" || e[0].Answer != answer {
		t.Fatalf("history = %+v, %v", e, err)
	}
	if q := h.dify.Requests(); len(q) != 1 || q[0].Query != "报销流程是什么？" {
		t.Fatalf("dify asked %+v", q)
	}
	resp, err := http.Get(h.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	for _, want := range []string{`wecom_bridge_bot_online{bot="kbbot"} 1`, `wecom_bridge_bot_acks_total{bot="kbbot"}`, `wecom_bridge_callbacks_total{app="kbbot",result="accepted"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// 👍 on the answer: recorded in the history.
	if _, err := bs.Push(testBotID, aibot.Message{MsgType: aibot.MsgEvent, From: aibot.From{UserID: "zhangsan"},
		Event: &aibot.Event{EventType: aibot.EventFeedback, Feedback: &aibot.FeedbackEvent{ID: b.FeedbackID, Type: aibot.FeedbackAccurate}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		e, _, _ := h.store.History(kv.HistoryQuery{User: "zhangsan"})
		return len(e) == 1 && e[0].Feedback == "like"
	})
	// … and in Dify, as that user's rating of that answer.
	waitFor(t, func() bool { return len(h.dify.Feedbacks()) == 1 })
	if f := h.dify.Feedbacks()[0]; f.Rating != "like" || f.User != q0User(h) {
		t.Fatalf("Dify got feedback %+v", f)
	}
}

// q0User is the Dify user the first question was asked as.
func q0User(h *harness) string { return h.dify.Requests()[0].User }

// Group chats: the @mention is stripped before asking, the answer goes to
// the group's bubble, and group_memory = "group" shares one conversation.
func TestBotGroupMentionAndSharedMemory(t *testing.T) {
	h, bs := newBotHarness(t, `group_memory = "group"`)
	h.dify.Push(llmtest.Script{Answer: "第一个回答。"}, llmtest.Script{Answer: "第二个回答。"})
	if _, err := bs.PushGroupText(testBotID, "wrGroup1", "zhangsan", "@知识库助手 报销流程？"); err != nil {
		t.Fatal(err)
	}
	waitBubbleDone(t, bs, 1)
	h.waitIdle()
	if _, err := bs.PushGroupText(testBotID, "wrGroup1", "lisi", "@知识库助手 那差旅呢？"); err != nil {
		t.Fatal(err)
	}
	waitBubbleDone(t, bs, 2)
	h.waitIdle()
	reqs := h.dify.Requests()
	if len(reqs) != 2 || reqs[0].Query != "报销流程？" || reqs[1].Query != "那差旅呢？" {
		t.Fatalf("dify asked %+v", reqs)
	}
	if reqs[1].ConversationID == "" || reqs[1].ConversationID != h.dify.Conversations(reqs[0].User)[0] {
		t.Fatalf("the group's second question did not continue its conversation: %+v", reqs)
	}
	if got := botSeen(bs, "wrGroup1"); !strings.Contains(got, "第一个回答。") || !strings.Contains(got, "第二个回答。") {
		t.Fatalf("group saw %q", got)
	}
	// Each member's history has their own question.
	for _, u := range []string{"zhangsan", "lisi"} {
		if e, _, _ := h.store.History(kv.HistoryQuery{User: u}); len(e) != 1 {
			t.Errorf("%s's history has %d entries", u, len(e))
		}
	}
}

// A callback pushed twice (same msgid, e.g. after a reconnect) is answered
// once.
func TestBotDuplicateMsgIDAnsweredOnce(t *testing.T) {
	h, bs := newBotHarness(t, "")
	h.dify.Push(llmtest.Script{Answer: "只回答一次。"})
	m := aibot.Message{MsgID: "msg-dup-1", ChatType: aibot.ChatSingle, From: aibot.From{UserID: "zhangsan"},
		MsgType: aibot.MsgText, Text: &aibot.Text{Content: "问题"}}
	for range 2 {
		if _, err := bs.Push(testBotID, m); err != nil {
			t.Fatal(err)
		}
	}
	waitBubbleDone(t, bs, 1)
	h.waitIdle()
	time.Sleep(100 * time.Millisecond)
	if n := len(h.dify.Requests()); n != 1 {
		t.Fatalf("asked the LLM %d times", n)
	}
	if n := len(bs.Bubbles()); n != 1 {
		t.Fatalf("%d bubbles for one question", n)
	}
}

// The connection drops after the first frames: the bot reconnects, and the
// rest of the answer arrives once, by proactive messages, without
// repeating what the bubble already showed.
func TestBotDropMidAnswerDeliversRestOnce(t *testing.T) {
	h, bs := newBotHarness(t, "")
	answer := longMarkdown(10)
	h.dify.Push(llmtest.Script{Answer: answer, Deltas: 40, DeltaDelay: 40 * time.Millisecond})
	if _, err := bs.PushText(testBotID, "zhangsan", "长问题"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		for _, b := range bs.Bubbles() {
			if strings.HasPrefix(b.Text, "**第1段**") {
				return true
			}
		}
		return false
	})
	bs.Drop(testBotID)
	h.waitIdle()
	waitFor(t, func() bool { return bs.Connected(testBotID) })
	shown := ""
	for _, b := range bs.Bubbles() {
		shown = b.Text
	}
	rest := strings.Join(bs.Sent("zhangsan"), "")
	if !strings.HasPrefix(answer, shown) || shown == "" {
		t.Fatalf("bubble shows %q, not a prefix of the answer", shown)
	}
	got := strings.ReplaceAll(shown+rest, "\n", "")
	if got != strings.ReplaceAll(answer, "\n", "") {
		t.Fatalf("user saw (bubble %d bytes + %d messages):\n%s\nwant:\n%s", len(shown), len(bs.Sent("zhangsan")), shown+"|"+rest, answer)
	}
}

// An answer over the bubble's 20,480 bytes finishes the bubble at a
// paragraph with a note and continues by proactive messages, in order.
func TestBotLongAnswerContinuesByMessages(t *testing.T) {
	h, bs := newBotHarness(t, "")
	answer := longMarkdown(150) // ~35 KB
	h.dify.Push(llmtest.Script{Answer: answer, Deltas: 20})
	if _, err := bs.PushText(testBotID, "zhangsan", "很长的问题"); err != nil {
		t.Fatal(err)
	}
	b := waitBubbleDone(t, bs, 1)[0]
	h.waitIdle()
	if len(b.Text) > aibot.MaxContentBytes || !strings.Contains(b.Text, "下一条消息") {
		t.Fatalf("bubble of %d bytes without the note", len(b.Text))
	}
	head := strings.TrimSuffix(b.Text[:strings.LastIndex(b.Text, "（内容较长")], "\n\n")
	sent := bs.Sent("zhangsan")
	if len(sent) == 0 {
		t.Fatal("no continuation")
	}
	got := strings.ReplaceAll(head+strings.Join(sent, ""), "\n", "")
	if got != strings.ReplaceAll(answer, "\n", "") {
		t.Fatalf("bubble + %d messages differ from the answer", len(sent))
	}
}

// Past WeCom's stream window the bubble is closed with a note and the rest
// follows as messages.
func TestBotPastStreamWindowContinues(t *testing.T) {
	h, bs := newBotHarness(t, "")
	h.b.botWindowNS.Store(int64(400 * time.Millisecond))
	answer := longMarkdown(6)
	h.dify.Push(llmtest.Script{Answer: answer, Deltas: 12, DeltaDelay: 80 * time.Millisecond})
	if _, err := bs.PushText(testBotID, "zhangsan", "慢问题"); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	waitFor(t, func() bool { return len(bs.Sent("zhangsan")) > 0 })
	var shown string
	for _, b := range bs.Bubbles() {
		shown = b.Text
	}
	if !strings.HasPrefix(answer, shown) {
		t.Fatalf("bubble %q is not a prefix of the answer", shown)
	}
	got := strings.ReplaceAll(shown+strings.Join(bs.Sent("zhangsan"), ""), "\n", "")
	if got != strings.ReplaceAll(answer, "\n", "") {
		t.Fatalf("user saw %q", shown+"|"+strings.Join(bs.Sent("zhangsan"), "|"))
	}
}

// enter_chat gets the welcome within WeCom's 5 s; voice is answered as a
// question (WeCom transcribed it); an image gets the plain-Chinese reply.
func TestBotWelcomeVoiceAndImage(t *testing.T) {
	h, bs := newBotHarness(t, "\n[media]\nallowed = [\"file\"]\n") // pictures not taken here
	start := time.Now()
	req, err := bs.Push(testBotID, aibot.Message{MsgType: aibot.MsgEvent, From: aibot.From{UserID: "zhangsan"},
		Event: &aibot.Event{EventType: aibot.EventEnterChat}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := bs.Welcome(req); return ok })
	if w, _ := bs.Welcome(req); w != "你好，我是知识库助手。" || time.Since(start) > 5*time.Second {
		t.Fatalf("welcome %q after %v", w, time.Since(start))
	}
	h.dify.Push(llmtest.Script{Answer: "语音的回答。"})
	if _, err := bs.Push(testBotID, aibot.Message{MsgType: aibot.MsgVoice, ChatType: aibot.ChatSingle,
		From: aibot.From{UserID: "zhangsan"}, Voice: &aibot.Voice{Content: "年假怎么请"}}); err != nil {
		t.Fatal(err)
	}
	waitBubbleDone(t, bs, 1)
	h.waitIdle()
	if q := h.dify.Requests(); len(q) != 1 || q[0].Query != "年假怎么请" {
		t.Fatalf("dify asked %+v", q)
	}
	if _, err := bs.Push(testBotID, aibot.Message{MsgType: aibot.MsgImage, ChatType: aibot.ChatSingle,
		From: aibot.From{UserID: "zhangsan"}, Image: &aibot.Media{URL: "http://127.0.0.1:1/x", AESKey: "k"}}); err != nil {
		t.Fatal(err)
	}
	waitBubbleDone(t, bs, 2)
	h.waitIdle()
	if got := botSeen(bs, "zhangsan"); !strings.Contains(got, h.cfg.Texts.Unsupported) {
		t.Fatalf("image reply: %q", got)
	}
}

// A user's questions wait their turn, in order, each answered in its own
// bubble, while every req_id got its placeholder at once.
func TestBotQueuedQuestionsInOrder(t *testing.T) {
	h, bs := newBotHarness(t, "")
	for i := 1; i <= 3; i++ {
		h.dify.Push(llmtest.Script{Answer: fmt.Sprintf("回答%d。", i), Deltas: 3, DeltaDelay: 60 * time.Millisecond})
	}
	for i := 1; i <= 3; i++ {
		if _, err := bs.PushText(testBotID, "zhangsan", fmt.Sprintf("问题%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	done := waitBubbleDone(t, bs, 3)
	h.waitIdle()
	reqs := h.dify.Requests()
	for i, r := range reqs {
		if r.Query != fmt.Sprintf("问题%d", i+1) {
			t.Fatalf("asked out of order: %+v", reqs)
		}
	}
	for _, b := range done {
		if b.Frames < 2 || b.Finishes != 1 {
			t.Fatalf("bubble %s: %d frames, %d finishes", b.StreamID, b.Frames, b.Finishes)
		}
	}
	if v := bs.Violations(); len(v) != 0 {
		t.Fatalf("violations: %v", v)
	}
}

// A wrong secret: the daemon keeps trying slowly and says which key to fix;
// /healthz reports it.
func TestBotWrongSecret(t *testing.T) {
	bs, err := emulator.NewBotServer(emulator.BotConfig{Bots: map[string]string{testBotID: testBotSecret}})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	url, _ := bs.Listen("127.0.0.1:0")
	h := newHarness(t, fmt.Sprintf("\n[[bots]]\nname = \"kbbot\"\nbot_id = %q\nsecret = \"wrong\"\nws_url = %q\nbackend = \"kb\"\n", testBotID, url))
	defer h.stop()
	waitFor(t, func() bool { return bs.AuthFailures(testBotID) >= 1 })
	waitFor(t, func() bool {
		resp, err := http.Get(h.base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	time.Sleep(1500 * time.Millisecond)
	if n := bs.AuthFailures(testBotID); n > 2 {
		t.Fatalf("%d subscribe attempts in 1.5 s: hammering WeCom", n)
	}
	if !strings.Contains(h.logBuf.String(), "bots.kbbot.secret") {
		t.Fatalf("the log does not name the key to fix:\n%s", h.logBuf.String())
	}
}

// Webhook mode: WeCom posts the encrypted message and then refreshes the
// stream until finish; the bubble ends with the whole answer.
func TestBotWebhookModeWithRefreshes(t *testing.T) {
	h := newHarness(t, fmt.Sprintf("\n[[bots]]\nname = \"kbhook\"\nbot_id = \"aibHOOK\"\nmode = \"webhook\"\ntoken = %q\nencoding_aes_key = %q\nbackend = \"kb\"\n", testToken, testAESKey))
	defer h.stop()
	answer := longMarkdown(4)
	h.dify.Push(llmtest.Script{Answer: answer, Deltas: 8, DeltaDelay: 40 * time.Millisecond})
	wh, err := emulator.NewBotWebhook(emulator.BotWebhookConfig{URL: h.base + "/wecom/kbhook", Token: testToken,
		EncodingAESKey: testAESKey, BotID: "aibHOOK", RefreshInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := wh.Verify(ctx); err != nil {
		t.Fatalf("URL verification: %v", err)
	}
	b, err := wh.Send(ctx, aibot.Message{ChatType: aibot.ChatSingle, From: aibot.From{UserID: "zhangsan"},
		MsgType: aibot.MsgText, Text: &aibot.Text{Content: "报销？"}})
	if err != nil {
		t.Fatal(err)
	}
	if b.Text != answer || b.Finishes != 1 || b.Frames < 2 {
		t.Fatalf("bubble: %d frames %d finishes %q", b.Frames, b.Finishes, b.Text)
	}
	h.waitIdle()
}
