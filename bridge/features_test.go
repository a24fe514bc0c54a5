package bridge

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

// editApp applies a TOML snippet to the helpdesk app.
func editApp(snippet string) func(string) string {
	return func(s string) string {
		return strings.Replace(s, `backend = "kb"`+"\nthinking_after = \"-1s\"", `backend = "kb"`+"\n"+snippet, 1)
	}
}

func newHarnessWith(t *testing.T, edit func(string) string, extra string) *harness {
	h := newHarness(t, extra)
	h.stop()
	h.edit = edit
	h.start()
	return h
}

// A slow first delta triggers the thinking notice, which is recalled once the
// answer is delivered.
func TestThinkingNoticeAndRecall(t *testing.T) {
	h := newHarnessWith(t, editApp(`thinking_after = "50ms"`), "")
	h.dify.Push(llmtest.Script{Answer: "想好了。", FirstByteDelay: 300 * time.Millisecond})
	h.ask("helpdesk", "zhangsan", "难题")
	h.waitIdle()
	got := h.sentTo("zhangsan")
	if len(got) != 2 || got[0].Content != h.cfg.Texts.Thinking || got[1].Content != "想好了。" {
		t.Fatalf("got %q", contents(got))
	}
	if !got[0].Recalled || got[1].Recalled {
		t.Fatalf("recalled flags: notice %v answer %v", got[0].Recalled, got[1].Recalled)
	}
	// A fast answer gets no notice.
	h.ask("helpdesk", "lisi", "简单")
	h.waitIdle()
	if got := h.sentTo("lisi"); len(got) != 1 {
		t.Fatalf("fast answer got %q", contents(got))
	}
}

// delivery = "whole" sends one message however the answer streamed.
func TestWholeDelivery(t *testing.T) {
	h := newHarnessWith(t, editApp(`delivery = "whole"`+"\nthinking_after = \"-1s\""), "")
	para := strings.Repeat("整段发送的内容。", 12)
	h.dify.Push(llmtest.Script{Answer: para + "\n\n" + para + "\n\n" + para, Deltas: 30})
	h.ask("helpdesk", "zhangsan", "问")
	h.waitIdle()
	got := h.sentTo("zhangsan")
	if len(got) != 1 || strings.Count(got[0].Content, "整段发送的内容。") != 36 {
		t.Fatalf("got %d messages: %q", len(got), contents(got))
	}
}

// format = "text" (default) turns Markdown into readable plain text;
// format = "markdown" sends markdown messages.
func TestFormats(t *testing.T) {
	md := "## 步骤\n\n1. **登录** [OA](https://oa.example.com)\n2. 提交\n\n```\ncode line\n```"
	h := newHarness(t, "")
	h.dify.Push(llmtest.Script{Answer: md})
	h.ask("helpdesk", "zhangsan", "怎么做")
	h.waitIdle()
	text := joined(h.sentTo("zhangsan"))
	for _, bad := range []string{"**", "##", "```", "]("} {
		if strings.Contains(text, bad) {
			t.Errorf("plain text still has %q: %q", bad, text)
		}
	}
	for _, want := range []string{"登录", "https://oa.example.com", "    code line"} {
		if !strings.Contains(text, want) {
			t.Errorf("plain text lacks %q: %q", want, text)
		}
	}
	h2 := newHarnessWith(t, editApp(`format = "markdown"`+"\nthinking_after = \"-1s\""), "")
	h2.dify.Push(llmtest.Script{Answer: md})
	h2.ask("helpdesk", "zhangsan", "怎么做")
	h2.waitIdle()
	got := h2.sentTo("zhangsan")
	if len(got) == 0 || got[0].MsgType != "markdown" || !strings.Contains(joined(got), "**登录**") {
		t.Fatalf("markdown mode sent %+v", got)
	}
}

// The welcome on enter_agent is off by default and sent when configured.
func TestWelcomeOnEnterAgent(t *testing.T) {
	enter := func(h *harness, user string) {
		t.Helper()
		inner := wecomtest.EventXML(testCorp, user, "enter_agent", "", 1000002, time.Now())
		if st := h.postCallback("helpdesk", mustCallback(t, inner, 1000002)); st != 200 {
			t.Fatalf("status %d", st)
		}
	}
	h := newHarness(t, "")
	enter(h, "zhangsan")
	time.Sleep(100 * time.Millisecond)
	h.waitIdle()
	if got := h.sentTo("zhangsan"); len(got) != 0 {
		t.Fatalf("welcome sent while off: %q", contents(got))
	}
	h2 := newHarnessWith(t, editApp(`welcome = "欢迎使用知识库助手！"`+"\nthinking_after = \"-1s\""), "")
	enter(h2, "zhangsan")
	if got := h2.waitSent("zhangsan", 1); got[0].Content != "欢迎使用知识库助手！" {
		t.Fatalf("welcome = %q", got[0].Content)
	}
}

// Operations endpoints: health, metrics, the 可信域名 verification file.
func TestOperationsEndpoints(t *testing.T) {
	h := newHarness(t, "\n[server.verify_files]\n\"WW_verify_abc123.txt\" = \"abc123content\"\n")
	// The verify_files table lands under [backends.chat] if appended after
	// it; the harness places extra at the end, so check the parse result.
	get := func(path string) (int, string, http.Header) {
		resp, err := http.Get(h.base + path)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, readAll(t, resp), resp.Header
	}
	if st, body, _ := get("/healthz"); st != 200 || body != "ok\n" {
		t.Fatalf("healthz %d %q", st, body)
	}
	h.ask("helpdesk", "zhangsan", "hi")
	h.waitIdle()
	st, body, _ := get("/metrics")
	for _, want := range []string{
		`wecom_bridge_callbacks_total{app="helpdesk",result="accepted"} 1`,
		`wecom_bridge_sends_total{app="helpdesk",result="ok"} 1`,
		"wecom_bridge_ack_seconds_count 1",
		"wecom_bridge_queue_depth 0",
		"wecom_bridge_llm_first_delta_seconds_count 1",
		"# TYPE wecom_bridge_store_commit_seconds histogram",
		`wecom_bridge_store_commit_seconds_bucket{le="+Inf"} `,
	} {
		if st != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// At least the accept, the answer's progress and its end were
	// committed, each carrying at least one write.
	m := parseMetrics(t, body)
	if n, w := m["wecom_bridge_store_commit_seconds_count"], m["wecom_bridge_store_commit_writes_total"]; n < 3 || w < n {
		t.Errorf("store commits %v carrying %v writes", n, w)
	}
	if st, body, _ := get("/WW_verify_abc123.txt"); st != 200 || body != "abc123content" {
		t.Fatalf("verify file %d %q", st, body)
	}
	if st, _, _ := get("/WW_verify_other.txt"); st != 404 {
		t.Fatalf("unknown verify file %d", st)
	}
}

// SIGHUP-style reload swaps texts and apps without dropping work.
func TestReload(t *testing.T) {
	h := newHarness(t, "")
	h.dify.Push(llmtest.Script{Answer: "慢慢来。", Deltas: 4, DeltaDelay: 50 * time.Millisecond})
	h.ask("helpdesk", "zhangsan", "问题")
	waitFor(t, func() bool { return len(h.dify.Requests()) == 1 })
	next, err := Parse("reload.toml", []byte(h.configText()+"\n[texts]\nhelp = \"新的帮助文字\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.b.Reload(next); err != nil {
		t.Fatal(err)
	}
	h.ask("helpdesk", "zhangsan", "/help")
	got := h.waitSent("zhangsan", 2)
	if got[0].Content != "慢慢来。" || got[1].Content != "新的帮助文字" {
		t.Fatalf("got %q", contents(got))
	}
}

// 60020 (trusted IP) is logged with the egress IP and the fix, retried for
// a while, then given up on — not retried forever.
func TestTrustedIPErrorLoggedAndBounded(t *testing.T) {
	h := newHarness(t, "")
	h.stop()
	h.edit = func(s string) string {
		return strings.Replace(s, "sso_base", "send_retry_for = \"300ms\"\nsso_base", 1)
	}
	h.start()
	h.wc.FailNext("/cgi-bin/message/send", 60020, "not allow to access from your ip, hint: [x], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=60020", 100)
	h.ask("helpdesk", "zhangsan", "你好")
	h.waitIdle()
	log := h.logBuf.String()
	if !strings.Contains(log, "203.0.113.7") || !strings.Contains(log, "可信IP") {
		t.Fatalf("log lacks the egress IP or the fix:\n%s", log)
	}
	if got := h.sentTo("zhangsan"); len(got) != 0 {
		t.Fatalf("sent despite 60020: %q", contents(got))
	}
	if strings.Contains(log, "secret-helpdesk") {
		t.Fatal("the corp secret leaked into the log")
	}
}

// parseMetrics reads the Prometheus text format into series -> value.
func parseMetrics(t *testing.T, body string) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("metrics line %q", line)
		}
		m[line[:i]] = v
	}
	return m
}
