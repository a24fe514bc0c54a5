package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/llm/demo"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

// demoRun is a Demo running in the background, typed at through a pipe.
type demoRun struct {
	t      *testing.T
	in     *io.PipeWriter
	out    *syncBuffer
	logBuf *syncBuffer
	parent string // DemoOptions.TempDir
	info   DemoInfo
	cancel context.CancelFunc
	errc   chan error
}

func startDemo(t *testing.T, env map[string]string) *demoRun {
	t.Helper()
	r := &demoRun{t: t, out: newSyncBuffer(), logBuf: newSyncBuffer(), parent: t.TempDir(), errc: make(chan error, 1)}
	inR, inW := io.Pipe()
	r.in = inW
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	started := make(chan DemoInfo, 1)
	o := DemoOptions{
		In: inR, Out: r.out, TempDir: r.parent, ModelDelay: time.Millisecond,
		Log:     slog.New(slog.NewTextHandler(r.logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Env:     func(k string) string { return env[k] },
		Started: func(i DemoInfo) { started <- i },
	}
	go func() { r.errc <- Demo(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		_ = inW.Close()
		select {
		case <-r.errc:
		case <-time.After(30 * time.Second):
			t.Error("Demo did not return after cancel")
		}
	})
	select {
	case r.info = <-started:
	case err := <-r.errc:
		t.Fatalf("Demo ended before starting: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Demo did not start")
	}
	return r
}

func (r *demoRun) say(line string) {
	r.t.Helper()
	if _, err := io.WriteString(r.in, line+"\n"); err != nil {
		r.t.Fatalf("type %q: %v", line, err)
	}
}

// waitOut waits until the terminal shows want (a generous deadline, not a
// speed assertion).
func (r *demoRun) waitOut(want string) {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(r.out.String(), want) {
		if time.Now().After(deadline) {
			r.t.Fatalf("terminal never showed %q; it shows:\n%s\nlog:\n%s", want, r.out.String(), r.logBuf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSent waits for the n-th delivery and returns everything delivered.
func (r *demoRun) waitSent(n int) []emulator.SentMessage {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sent, err := r.info.Emulator.WaitSent(ctx, n)
	if err != nil {
		r.t.Fatalf("%d deliveries, waited for %d: %v", len(sent), n, err)
	}
	return sent
}

// answerPieces waits until the answer ending with end has been delivered,
// from delivery number from on, and returns its pieces.
func (r *demoRun) answerPieces(from int, end string) []emulator.SentMessage {
	r.t.Helper()
	for n := from + 1; ; n++ {
		sent := r.waitSent(n)
		if strings.Contains(sent[len(sent)-1].Content, end) {
			return sent[from:]
		}
	}
}

func TestDemoEndToEnd(t *testing.T) {
	r := startDemo(t, nil)
	entries, err := os.ReadDir(r.parent)
	if err != nil || len(entries) != 1 || !strings.HasPrefix(entries[0].Name(), "wecom-bridge-demo-") {
		t.Fatalf("want one temporary demo directory in %s, got %v (%v)", r.parent, entries, err)
	}
	if _, err := os.Stat(r.info.Dir + "/demo.db"); err != nil {
		t.Fatalf("the store is not in the temporary directory: %v", err)
	}
	r.waitOut("/history")
	banner := r.out.String()
	historyURL := regexp.MustCompile(`http://127\.0\.0\.1:\d+/history`).FindString(banner)
	metricsURL := regexp.MustCompile(`http://127\.0\.0\.1:\d+/metrics`).FindString(banner)
	if historyURL != r.info.HistoryURL || metricsURL != r.info.MetricsURL {
		t.Fatalf("banner URLs %q %q, want %q %q:\n%s", historyURL, metricsURL, r.info.HistoryURL, r.info.MetricsURL, banner)
	}
	if i, j := strings.Index(banner, "演示"), strings.Index(banner, "demo mode"); i < 0 || j < 0 || i > j {
		t.Errorf("banner is not Chinese first:\n%s", banner)
	}

	// A question: the demo answer arrives in several pieces, in order.
	q1 := "报销流程是什么？"
	r.say(q1)
	pieces := r.answerPieces(0, "演示回答 #1 结束")
	if len(pieces) < 3 {
		t.Fatalf("answer came in %d piece(s), want at least 3 to show splitting", len(pieces))
	}
	var whole strings.Builder
	for i, p := range pieces {
		if p.ToUser != DefaultDemoUser || p.AgentID != demoAgentID || p.MsgType != "text" || p.Truncated || len(p.Content) > 2048 {
			t.Errorf("piece %d: %+v", i, p)
		}
		whole.WriteString(p.Content + "\n")
	}
	if !strings.HasPrefix(pieces[0].Content, demo.Label+"（#1）") {
		t.Errorf("first piece does not start with the demo label: %q", pieces[0].Content)
	}
	last := -1
	for _, want := range []string{demo.Label, "「" + q1 + "」", "第 1 个问题", "• 回答是流式生成的", "演示模型 | 真实模型", "1. 发送 /new", "演示回答 #1 结束"} {
		i := strings.Index(whole.String(), want)
		if i <= last {
			t.Fatalf("%q missing or out of order in the delivered answer:\n%s", want, whole.String())
		}
		last = i
	}
	// The terminal shows each piece as WeCom delivered it, in order. (The
	// emulator records a delivery before it calls OnSend.)
	r.waitOut(indentReply(pieces[len(pieces)-1].Content))
	out := r.out.String()
	at := 0
	for i, p := range pieces {
		head := fmt.Sprintf("第 %d 条消息", i+1)
		j := strings.Index(out[at:], head)
		if j < 0 || !strings.Contains(out[at+j:], indentReply(p.Content)) {
			t.Fatalf("terminal lacks piece %d as delivered:\n%s", i+1, out)
		}
		at += j + len(head)
	}

	// A second question continues the conversation; /new starts a new one.
	r.say("第二个问题")
	var n int
	second := r.answerPieces(len(pieces), "演示回答 #2 结束")
	if !strings.Contains(joinContent(second), "第 2 个问题") {
		t.Errorf("the second question is not the conversation's second:\n%s", joinContent(second))
	}
	n = len(pieces) + len(second)
	r.say("/new")
	if got := r.waitSent(n + 1)[n]; got.Content != DefaultTexts().NewChat {
		t.Fatalf("/new answered %q, want %q", got.Content, DefaultTexts().NewChat)
	}
	r.waitOut(DefaultTexts().NewChat)
	r.say("/help")
	if got := r.waitSent(n + 2)[n+1]; got.Content != DefaultTexts().Help {
		t.Fatalf("/help answered %q", got.Content)
	}
	r.say("第三个问题")
	third := r.answerPieces(n+2, "演示回答 #3 结束")
	if !strings.Contains(joinContent(third), "第 1 个问题") {
		t.Errorf("after /new the question is not the first of a new conversation:\n%s", joinContent(third))
	}
	if d := r.info.Emulator.Dropped(); len(d) != 0 {
		t.Errorf("WeCom silently dropped %d message(s): %+v", len(d), d)
	}

	// The history page, in a browser: signing in goes through the
	// emulator's login and back, over plain http.
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	var hops []string
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		hops = append(hops, req.URL.Host+req.URL.Path)
		if len(via) > 10 {
			return fmt.Errorf("too many redirects: %v", hops)
		}
		return nil
	}}
	resp, err := hc.Get(historyURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	emu, _ := url.Parse(r.info.Emulator.URL())
	if resp.StatusCode != http.StatusOK || resp.Request.URL.String() != historyURL {
		t.Fatalf("history page: HTTP %d at %s after %v:\n%s", resp.StatusCode, resp.Request.URL, hops, body)
	}
	viaEmu := false
	for _, h := range hops {
		viaEmu = viaEmu || strings.HasPrefix(h, emu.Host+"/")
	}
	if !viaEmu || !strings.Contains(strings.Join(hops, " "), "/history/callback") {
		t.Errorf("sign-in did not go through the emulator and back: %v", hops)
	}
	for _, want := range []string{q1, "第二个问题", "第三个问题"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("history page lacks the question %q", want)
		}
	}
	hu, _ := url.Parse(historyURL)
	if len(jar.Cookies(hu)) == 0 {
		t.Error("no session cookie kept for the history page")
	}
	// Signed in, the page answers at once.
	hops = nil
	resp, err = hc.Get(historyURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(hops) != 0 {
		t.Errorf("second visit: HTTP %d after redirects %v, want 200 directly", resp.StatusCode, hops)
	}

	resp, err = http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `wecom_bridge_callbacks_total{app="demo"`) {
		t.Fatalf("/metrics: HTTP %d:\n%s", resp.StatusCode, body)
	}

	// Ctrl-C: Demo returns and removes what it created.
	r.cancel()
	select {
	case err := <-r.errc:
		if err != nil {
			t.Fatalf("Demo after cancel: %v", err)
		}
		r.errc <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("Demo did not return after cancel")
	}
	if entries, _ := os.ReadDir(r.parent); len(entries) != 0 {
		t.Fatalf("left behind in %s: %v", r.parent, entries)
	}
	if _, err := http.Get(historyURL); err == nil {
		t.Error("the daemon still answers after the demo ended")
	}
	if strings.Contains(r.logBuf.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", r.logBuf.String())
	}
}

func joinContent(ms []emulator.SentMessage) string {
	var b strings.Builder
	for _, m := range ms {
		b.WriteString(m.Content + "\n")
	}
	return b.String()
}

// TestDemoEOFWaitsForTheAnswer: input that ends (a pipe, Ctrl-D) ends the
// demo only once the last question is answered.
func TestDemoEOFWaitsForTheAnswer(t *testing.T) {
	r := startDemo(t, nil)
	r.say("一个问题")
	r.in.Close()
	select {
	case err := <-r.errc:
		if err != nil {
			t.Fatal(err)
		}
		r.errc <- nil
	case <-time.After(60 * time.Second):
		t.Fatal("Demo did not return at EOF")
	}
	if s := joinContent(r.info.Emulator.Sent()); !strings.Contains(s, "演示回答 #1 结束") {
		t.Fatalf("Demo returned before the answer was delivered:\n%s", s)
	}
	if entries, _ := os.ReadDir(r.parent); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}

func TestDemoQuit(t *testing.T) {
	r := startDemo(t, nil)
	r.say("/quit")
	select {
	case err := <-r.errc:
		if err != nil {
			t.Fatal(err)
		}
		r.errc <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("/quit did not end the demo")
	}
	if n := len(r.info.Emulator.Sent()); n != 0 {
		t.Errorf("/quit reached the daemon: %d message(s) sent", n)
	}
	if entries, _ := os.ReadDir(r.parent); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}

// TestDemoRealBackends: OPENAI_* or DIFY_* replace the demo model with that
// service, called through the real llm clients.
func TestDemoRealBackends(t *testing.T) {
	t.Run("openai", func(t *testing.T) {
		oai := llmtest.NewOpenAI(llmtest.WithAPIKey("sk-demo-test"), llmtest.WithModels("qwen-test"))
		defer oai.Close()
		oai.Push(llmtest.Script{Answer: "来自真实 OpenAI 兼容后端的回答。"}, llmtest.Script{Answer: "第二个回答。"})
		r := startDemo(t, map[string]string{"OPENAI_BASE_URL": oai.URL(), "OPENAI_API_KEY": "sk-demo-test", "OPENAI_MODEL": "qwen-test"})
		r.waitOut("qwen-test")
		r.say("你好")
		if got := r.waitSent(1)[0].Content; got != "来自真实 OpenAI 兼容后端的回答。" {
			t.Fatalf("delivered %q", got)
		}
		r.say("再问一个")
		r.waitSent(2)
		reqs := oai.Requests()
		if len(reqs) != 2 || reqs[1].Model != "qwen-test" {
			t.Fatalf("requests: %+v", reqs)
		}
		// The bridge keeps the conversation for OpenAI-compatible APIs.
		var msgs []string
		for _, m := range reqs[1].Messages {
			msgs = append(msgs, m.Content)
		}
		if !strings.Contains(strings.Join(msgs, "|"), "你好|来自真实 OpenAI 兼容后端的回答。|再问一个") {
			t.Errorf("second request does not carry the first turn: %q", msgs)
		}
		if strings.Contains(r.out.String(), "sk-demo-test") || strings.Contains(r.logBuf.String(), "sk-demo-test") {
			t.Error("the API key was printed")
		}
	})
	t.Run("dify", func(t *testing.T) {
		dify := llmtest.NewDify(llmtest.WithAPIKey("app-demo-test"))
		defer dify.Close()
		dify.Push(llmtest.Script{Answer: "来自 Dify 的回答。"})
		r := startDemo(t, map[string]string{"DIFY_BASE_URL": dify.URL(), "DIFY_API_KEY": "app-demo-test"})
		r.waitOut("Dify " + dify.URL())
		r.say("你好 Dify")
		if got := r.waitSent(1)[0].Content; got != "来自 Dify 的回答。" {
			t.Fatalf("delivered %q", got)
		}
		reqs := dify.Requests()
		if len(reqs) != 1 || reqs[0].Query != "你好 Dify" || reqs[0].User != "demo:"+DefaultDemoUser {
			t.Fatalf("requests: %+v", reqs)
		}
	})
}

func TestDemoBackendFromEnv(t *testing.T) {
	for _, c := range []struct {
		name    string
		env     map[string]string
		typ     string // "" is the demo model
		errHas  []string
		noteHas string
	}{
		{name: "nothing set", env: nil},
		{name: "only a key", env: map[string]string{"OPENAI_API_KEY": "sk-x"}, noteHas: "演示模型"},
		{name: "openai", env: map[string]string{"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1", "OPENAI_API_KEY": "x", "OPENAI_MODEL": "qwen2.5"}, typ: llm.TypeOpenAI},
		{name: "openai default model", env: map[string]string{"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1", "OPENAI_API_KEY": "x"}, typ: llm.TypeOpenAI, noteHas: DefaultOpenAIModel},
		{name: "dify", env: map[string]string{"DIFY_BASE_URL": "http://127.0.0.1/v1", "DIFY_API_KEY": "app-x"}, typ: llm.TypeDify},
		{name: "url without key", env: map[string]string{"OPENAI_BASE_URL": "http://127.0.0.1/v1"}, errHas: []string{"OPENAI_API_KEY"}},
		{name: "dify url without key", env: map[string]string{"DIFY_BASE_URL": "http://127.0.0.1/v1"}, errHas: []string{"DIFY_API_KEY"}},
		{name: "both", env: map[string]string{"OPENAI_BASE_URL": "http://a/v1", "OPENAI_API_KEY": "x", "DIFY_BASE_URL": "http://b/v1", "DIFY_API_KEY": "y"}, errHas: []string{"OPENAI_BASE_URL", "DIFY_BASE_URL"}},
		{name: "bad url", env: map[string]string{"OPENAI_BASE_URL": "ftp://x", "OPENAI_API_KEY": "x"}, errHas: []string{"OPENAI_BASE_URL"}},
		{name: "bad dify mode", env: map[string]string{"DIFY_BASE_URL": "http://127.0.0.1/v1", "DIFY_API_KEY": "app-x", "DIFY_MODE": "nope"}, errHas: []string{"DIFY_MODE"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ch, err := demoBackend(func(k string) string { return c.env[k] })
			if len(c.errHas) > 0 {
				if err == nil {
					t.Fatalf("no error; chose %+v", ch.cfg)
				}
				for _, s := range c.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not name %s", err, s)
					}
				}
				if strings.Contains(err.Error(), c.env["OPENAI_API_KEY"]+"\"") && c.env["OPENAI_API_KEY"] != "" {
					t.Errorf("error shows the key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ch.cfg.Type != c.typ {
				t.Fatalf("type %q, want %q", ch.cfg.Type, c.typ)
			}
			if c.noteHas != "" && !strings.Contains(strings.Join(ch.notes, "\n"), c.noteHas) {
				t.Errorf("notes %q lack %q", ch.notes, c.noteHas)
			}
			if c.typ != "" && strings.Contains(ch.title, ch.cfg.APIKey) {
				t.Errorf("banner title shows the key: %q", ch.title)
			}
		})
	}
}
