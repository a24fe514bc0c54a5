package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

const (
	testCorp   = "ww0123456789abcdef"
	testAESKey = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	testToken  = "QDG6eK"
)

// harness runs the real daemon in-process against wecomtest and llmtest,
// with a real bbolt file.
type harness struct {
	t      testing.TB
	wc     *wecomtest.Server
	dify   *llmtest.Dify
	oai    *llmtest.OpenAI
	dbPath string
	extra  string // extra TOML appended to the config
	edit   func(string) string
	cfg    *Config
	store  *kv.Store
	b      *Bridge
	base   string
	msgID  atomic.Uint64
	logBuf *syncBuffer
	// now, when set before start, is the daemon's clock (Deps.Now).
	now func() time.Time
	// backends, when set before start, replace configured backends
	// (Deps.Backends).
	backends map[string]llm.Backend
	// failWrites, when it holds an error, fails every store commit with it
	// (kv.Options.FailWrites): a full disk.
	failWrites atomic.Pointer[error]
}

type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.buf.String()
}

// newHarness starts fakes and the daemon. extra is TOML appended to a base
// config with two apps: "helpdesk" (agent 1000002, Dify) and "chat" (agent
// 1000003, OpenAI-compatible).
func newHarness(t testing.TB, extra string) *harness {
	t.Helper()
	h := &harness{t: t, extra: extra, dbPath: filepath.Join(t.TempDir(), "bridge.db"), logBuf: newSyncBuffer()}
	h.wc = newWeComAt(nil)
	h.dify = llmtest.NewDify()
	h.oai = llmtest.NewOpenAI()
	t.Cleanup(func() {
		h.stop()
		h.wc.Close()
		h.dify.Close()
		h.oai.Close()
		if t.Failed() {
			t.Logf("daemon log:\n%s", h.logBuf.String())
		}
	})
	h.start()
	return h
}

// newWeComAt is the harness's fake WeCom (two apps, three members and an
// outsider), on the given clock (nil: the real one).
func newWeComAt(now func() time.Time) *wecomtest.Server {
	wc := wecomtest.NewServer(wecomtest.Options{Now: now})
	wc.AddApp(testCorp, "secret-helpdesk", 1000002)
	wc.AddApp(testCorp, "secret-chat", 1000003)
	for _, u := range []string{"zhangsan", "lisi", "wangwu"} {
		wc.AddUser(u, 2)
	}
	wc.AddUser("outsider", 9)
	return wc
}

func (h *harness) configText() string {
	return fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
public_url = "https://bot.example.com"

[storage]
path = %q

[wecom]
corp_id = %q
api_base = %q
oauth_base = %q
sso_base = %q

[[apps]]
name = "helpdesk"
agent_id = 1000002
secret = "secret-helpdesk"
token = %q
encoding_aes_key = %q
backend = "kb"
thinking_after = "-1s"

[[apps]]
name = "chat"
agent_id = 1000003
secret = "secret-chat"
token = %q
encoding_aes_key = %q
backend = "chat"
thinking_after = "-1s"

[backends.kb]
type = "dify"
base_url = %q
api_key = "app-llmtest"
retry_base = "5ms"

[backends.chat]
type = "openai"
base_url = %q
api_key = "sk-llmtest"
model = "gpt-4o-mini"
system_prompt = "你是公司的内部助手。"
retry_base = "5ms"
%s`, h.dbPath, testCorp, h.wc.URL(), h.wc.URL(), h.wc.URL(), testToken, testAESKey, testToken, testAESKey,
		h.dify.URL(), h.oai.URL(), h.extra)
}

func (h *harness) start() {
	h.t.Helper()
	text := h.configText()
	if h.edit != nil {
		text = h.edit(text)
	}
	cfg, err := Parse("test.toml", []byte(text))
	if err != nil {
		h.t.Fatal(err)
	}
	h.cfg = cfg
	h.store, err = kv.Open(h.dbPath, kv.Options{NoSync: true, FailWrites: func() error {
		if e := h.failWrites.Load(); e != nil {
			return *e
		}
		return nil
	}})
	if err != nil {
		h.t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(h.logBuf), &slog.HandlerOptions{Level: slog.LevelDebug}))
	if os.Getenv("BRIDGE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	h.b, err = New(cfg, Deps{Log: log, Store: h.store, Now: h.now, Backends: h.backends})
	if err != nil {
		h.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.b.Start(ln); err != nil {
		h.t.Fatal(err)
	}
	h.base = "http://" + ln.Addr().String()
}

// stop shuts the daemon down (graceful, with a short deadline).
func (h *harness) stop() {
	if h.b == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = h.b.Shutdown(ctx)
	_ = h.store.Close()
	h.b = nil
}

func (h *harness) restart() {
	h.stop()
	h.start()
}

func appAgent(app string) int64 {
	if app == "chat" {
		return 1000003
	}
	return 1000002
}

// callback builds an encrypted text callback from user to app.
func (h *harness) callback(app, user, text string) *wecomtest.Callback {
	h.t.Helper()
	id := 4561255354251345929 + h.msgID.Add(1)
	inner := wecomtest.TextMessageXML(testCorp, user, text, id, appAgent(app), time.Now())
	cb, err := wecomtest.NewCallback(testToken, testAESKey, testCorp, appAgent(app), inner, wecom.FormatXML, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return cb
}

func (h *harness) postCallback(app string, cb *wecomtest.Callback) int {
	h.t.Helper()
	resp, err := http.Post(cb.Target(h.base+"/wecom/"+app), "text/xml", bytes.NewReader(cb.Body))
	if err != nil {
		h.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK && len(body) != 0 {
		h.t.Errorf("ack body = %q, want empty", body)
	}
	return resp.StatusCode
}

// ask posts a text question and requires a 200 ack.
func (h *harness) ask(app, user, text string) {
	h.t.Helper()
	if st := h.postCallback(app, h.callback(app, user, text)); st != http.StatusOK {
		h.t.Fatalf("callback status %d", st)
	}
}

// waitSent waits until at least n messages went to user.
func (h *harness) waitSent(user string, n int) []wecomtest.SentMessage {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := h.sentTo(user)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("waited for %d messages to %s, got %d: %q", n, user, len(got), contents(got))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) sentTo(user string) []wecomtest.SentMessage {
	var out []wecomtest.SentMessage
	for _, m := range h.wc.Sent() {
		if m.ToUser == user {
			out = append(out, m)
		}
	}
	return out
}

// waitIdle waits until no job is pending.
func (h *harness) waitIdle() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := h.store.Stats()
		if err != nil {
			h.t.Fatal(err)
		}
		if st.PendingJobs == 0 && h.b.pool.active.Load() == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("still %d pending jobs", st.PendingJobs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func contents(ms []wecomtest.SentMessage) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Content
	}
	return out
}

func joined(ms []wecomtest.SentMessage) string {
	return strings.Join(contents(ms), "\n\n")
}

type wecomCallback = wecomtest.Callback

func mustCallback(t *testing.T, inner []byte, agent int64) *wecomtest.Callback {
	return mustCallbackCorp(t, inner, agent, testCorp)
}

func mustCallbackCorp(t *testing.T, inner []byte, agent int64, corp string) *wecomtest.Callback {
	t.Helper()
	cb, err := wecomtest.NewCallback(testToken, testAESKey, corp, agent, inner, wecom.FormatXML, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cb
}

func wecomtestText(corp, user, text string) []byte {
	return wecomtest.TextMessageXML(corp, user, text, 12345, 1000002, time.Now())
}

func wecomtestVerify(echo string) (url.Values, error) {
	return wecomtest.VerifyURLQuery(testToken, testAESKey, testCorp, echo)
}

func cloneQuery(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = append([]string(nil), v...)
	}
	return out
}

func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
