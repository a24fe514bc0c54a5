package history

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

const testCorp = "ww0123456789abcdef"

// harness serves the page alone, as the daemon would route it, on a
// loopback port: a real bbolt store in t.TempDir(), WeCom's OAuth from
// wecomtest, and real wecom clients for two apps, "helpdesk" (agent
// 1000002) and "chat" (agent 1000003), handed out by a getter the test can
// swap like the daemon does on reload.
type harness struct {
	t      *testing.T
	wc     *wecomtest.Server
	dbPath string
	cfg    Config
	store  *kv.Store
	h      *Handler
	base   string
	logBuf *syncBuffer

	mu      sync.Mutex
	clients map[string]LoginClient

	srv *fasthttp.Server
	ln  net.Listener
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// newHarness starts WeCom's fake and the page. edit, if not nil, changes
// the default config (public_url https://bot.example.com, login app
// helpdesk) before the start.
func newHarness(t *testing.T, edit func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, dbPath: filepath.Join(t.TempDir(), "bridge.db"), logBuf: &syncBuffer{}, clients: map[string]LoginClient{}}
	h.wc = wecomtest.NewServer(wecomtest.Options{})
	h.wc.AddApp(testCorp, "secret-helpdesk", 1000002)
	h.wc.AddApp(testCorp, "secret-chat", 1000003)
	for _, u := range []string{"zhangsan", "lisi", "wangwu", "bob"} {
		h.wc.AddUser(u, 2)
	}
	h.wc.AddUser("outsider", 9)
	h.clients["helpdesk"] = h.newClient("secret-helpdesk", 1000002)
	h.clients["chat"] = h.newClient("secret-chat", 1000003)
	h.cfg = Config{PublicURL: "https://bot.example.com", LoginApp: "helpdesk"}
	if edit != nil {
		edit(&h.cfg)
	}
	t.Cleanup(func() {
		h.stop()
		h.wc.Close()
		if t.Failed() {
			t.Logf("log:\n%s", h.logBuf.String())
		}
	})
	h.start()
	return h
}

func (h *harness) newClient(secret string, agent int64) *wecom.Client {
	h.t.Helper()
	c, err := wecom.New(wecom.Config{CorpID: testCorp, Secret: secret, AgentID: agent,
		APIBase: h.wc.URL(), OAuthBase: h.wc.URL(), SSOBase: h.wc.URL(),
		HTTPClient: &http.Client{Timeout: 10 * time.Second}})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// loginClient is the getter the daemon would pass: the current client of
// an app, or nil.
func (h *harness) loginClient(app string) LoginClient {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.clients[app]; ok {
		return c
	}
	return nil
}

func (h *harness) logger() *slog.Logger {
	if os.Getenv("BRIDGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(h.logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (h *harness) start() {
	h.t.Helper()
	var err error
	h.store, err = kv.Open(h.dbPath, kv.Options{NoSync: true})
	if err != nil {
		h.t.Fatal(err)
	}
	h.h, err = New(h.cfg, Deps{Log: h.logger(), Store: h.store, LoginClient: h.loginClient})
	if err != nil {
		h.t.Fatal(err)
	}
	page := h.h
	h.srv = &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if page.Handles(ctx.Path()) {
			page.Serve(ctx)
			return
		}
		ctx.Error("not found", fasthttp.StatusNotFound) // the daemon's own 404
	}}
	h.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	go h.srv.Serve(h.ln) //nolint:errcheck // ends with Shutdown
	h.base = "http://" + h.ln.Addr().String()
}

func (h *harness) stop() {
	if h.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = h.srv.ShutdownWithContext(ctx)
	_ = h.store.Close()
	h.srv = nil
}

// restart builds a new store and handler from h.cfg, as a daemon restart
// would.
func (h *harness) restart() {
	h.stop()
	h.start()
}

// reload passes a changed config to the running handler.
func (h *harness) reload(edit func(*Config)) {
	h.t.Helper()
	edit(&h.cfg)
	if err := h.h.Reload(h.cfg); err != nil {
		h.t.Fatal(err)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
