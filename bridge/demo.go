package bridge

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/llm/demo"
	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

// Defaults for DemoOptions.
const (
	DefaultDemoUser = "demo"
	// DefaultOpenAIModel is the model asked for when OPENAI_MODEL is unset.
	DefaultOpenAIModel = "gpt-4o-mini"

	demoApp     = "demo"
	demoAgentID = 1000002
)

// DemoOptions configures Demo. Only In and Out are required.
type DemoOptions struct {
	// In is what the user types, one question or command a line
	// (usually os.Stdin). EOF ends the demo once the last answer is in.
	In io.Reader
	// Out receives the chat and the banner (usually os.Stdout).
	Out io.Writer
	// Log is the daemon's logger; nil discards. Below warn level its lines
	// interleave with the chat, so the command line passes a warn logger.
	Log *slog.Logger
	// Env looks up OPENAI_* and DIFY_* (see Demo); nil means os.Getenv.
	Env func(string) string
	// User is the WeCom userid the terminal writes as and the history page
	// signs in as; default DefaultDemoUser.
	User string
	// TempDir is where the demo's temporary directory is made; "" means
	// os.TempDir(). Whatever Demo creates there is removed when it returns.
	TempDir string
	// ModelDelay is the built-in model's pause between deltas; 0 means
	// demo.DefaultDelay, negative none.
	ModelDelay time.Duration
	// Started, when set, is called once the daemon serves, before the
	// first line is read: for programs that drive a demo (and its tests).
	Started func(DemoInfo)
}

// DemoInfo describes a running demo.
type DemoInfo struct {
	// BaseURL is the daemon's address, e.g. "http://127.0.0.1:41234".
	BaseURL string
	// HistoryURL and MetricsURL are the pages printed in the banner.
	HistoryURL, MetricsURL string
	// Dir is the temporary directory holding the store; Demo removes it.
	Dir string
	// Emulator is the embedded WeCom: what it delivered, and to whom.
	Emulator *emulator.Server
}

// Demo runs the whole daemon on embedded defaults, with no config file and
// no WeCom account: an embedded WeCom emulator with generated credentials,
// a temporary bbolt store, the real Bridge listening on 127.0.0.1 and the
// built-in demo model. It prints the history page and /metrics URLs, then
// chats in the terminal: each line read from In is sent to the daemon as an
// encrypted WeCom callback, and every message WeCom delivers to the member
// is printed to Out as it arrives. /new and /help are answered by the
// daemon; /quit or EOF ends the chat, as does cancelling ctx. Everything
// Demo created is removed when it returns.
//
// If OPENAI_BASE_URL and OPENAI_API_KEY (and optionally OPENAI_MODEL) are
// set, or DIFY_BASE_URL and DIFY_API_KEY (and optionally DIFY_MODE), that
// real backend answers instead of the demo model.
func Demo(ctx context.Context, o DemoOptions) error {
	if o.In == nil || o.Out == nil {
		return errors.New("demo: DemoOptions.In and Out are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Env == nil {
		o.Env = os.Getenv
	}
	if o.User == "" {
		o.User = DefaultDemoUser
	}
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(o.Out, format, args...)
	}

	choice, err := demoBackend(o.Env)
	if err != nil {
		return err
	}
	for _, n := range choice.notes {
		say("%s\n", n)
	}

	dir, err := os.MkdirTemp(o.TempDir, "wecom-bridge-demo-")
	if err != nil {
		return fmt.Errorf("demo: temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)

	creds := newDemoCredentials()
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		return fmt.Errorf("demo: start the WeCom emulator: %w", err)
	}
	defer emu.Close()
	emu.AddApp(creds.corpID, creds.secret, demoAgentID)
	emu.AddUser(o.User)
	emu.SetLoginUser(o.User)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: listen on 127.0.0.1: %w", err)
	}
	base := "http://" + ln.Addr().String()
	cfg := demoConfig(base, emu.URL(), filepath.Join(dir, "demo.db"), creds, choice.cfg)
	if err := cfg.Validate(); err != nil {
		ln.Close()
		return fmt.Errorf("demo: %w", err)
	}

	store, err := kv.Open(cfg.Storage.Path, kv.Options{NoSync: true, Logger: o.Log.With("component", "kv")})
	if err != nil {
		ln.Close()
		return err
	}
	defer store.Close()
	deps := Deps{Log: o.Log, Store: store}
	if choice.cfg.Type == "" {
		m, err := demo.New(demo.Config{Delay: o.ModelDelay})
		if err != nil {
			ln.Close()
			return err
		}
		deps.Backends = map[string]llm.Backend{cfg.Apps[0].Backend: m}
	}
	b, err := New(cfg, deps)
	if err != nil {
		ln.Close()
		return err
	}
	if err := b.Start(ln); err != nil {
		return err
	}
	defer func() {
		// Answers still running are cut short: the store they would
		// resume from is about to be removed.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = b.Shutdown(sctx)
	}()

	pieces := 0
	emu.OnSend(func(m emulator.SentMessage) {
		outMu.Lock()
		defer outMu.Unlock()
		pieces++
		fmt.Fprintf(o.Out, "\n【%s → %s · 第 %d 条消息 message #%d】%s\n", demoAppTitle, m.ToUser, pieces, pieces, indentReply(m.Content))
	})
	emu.OnDrop(func(m emulator.SentMessage) {
		say("\n【企业微信未送达 not delivered by WeCom: %s】%s\n", m.Drop, indentReply(m.Content))
	})

	say(`
wecom-bridge 演示模式 / demo mode
  真实的守护进程，内置企业微信模拟器和临时数据库；无需企业微信账号和配置文件，退出后全部删除。
  The real daemon with an embedded WeCom emulator and a temporary database; removed on exit.

  模型 Model:          %s
  历史记录页 History:  %s/history    （在浏览器打开，经模拟的企业微信登录为 %q / open in a browser, signs in as %q）
  指标 Metrics:        %s/metrics
  回调 Callback:       %s/wecom/%s
  模拟器 Emulator:     %s

输入问题后回车；/new 开始新对话，/help 查看帮助，/quit 或 Ctrl-D 退出。
Type a question and press Enter; /new starts a new conversation, /help shows help, /quit or Ctrl-D quits.

`, choice.title, base, o.User, o.User, base, base, demoApp, emu.URL())

	if o.Started != nil {
		o.Started(DemoInfo{BaseURL: base, HistoryURL: base + "/history", MetricsURL: base + "/metrics", Dir: dir, Emulator: emu})
	}
	done := make(chan struct{})
	defer close(done)
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(o.In)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-done:
				return
			}
		}
	}()
	target := base + "/wecom/" + demoApp
	hc := &http.Client{Timeout: 10 * time.Second}
	msgID := uint64(time.Now().UnixNano())
	for {
		var line string
		var ok bool
		select {
		case <-ctx.Done():
			say("\n再见。Bye.\n")
			return nil
		case line, ok = <-lines:
		}
		if !ok {
			return waitIdle(ctx, store, 5*time.Minute)
		}
		line = strings.TrimSpace(line)
		switch strings.ToLower(line) {
		case "":
			continue
		case "/quit", "/exit", "/q":
			say("再见。Bye.\n")
			return nil
		}
		msgID++
		inner := emulator.TextMessageXML(creds.corpID, o.User, line, msgID, demoAgentID, time.Now())
		cb, err := emulator.NewCallback(creds.token, creds.aesKey, creds.corpID, demoAgentID, inner, wecom.FormatXML, nil)
		if err != nil {
			return fmt.Errorf("demo: build callback: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, cb.Target(target), bytes.NewReader(cb.Body))
		if err != nil {
			return fmt.Errorf("demo: post callback: %w", err)
		}
		req.Header.Set("Content-Type", "text/xml")
		resp, err := hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("demo: post callback: %w", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			say("（回调被拒绝 callback refused: HTTP %d）\n", resp.StatusCode)
		}
	}
}

// demoAppTitle names the app in the chat, as the WeCom client shows it.
const demoAppTitle = "AI 助手"

// demoCredentials are what an admin would copy from the WeCom console;
// the demo makes them up, fresh each run.
type demoCredentials struct {
	corpID, secret, token, aesKey string
}

func newDemoCredentials() demoCredentials {
	return demoCredentials{
		corpID: "ww" + hex.EncodeToString(randomBytes(8)),
		secret: base64.RawURLEncoding.EncodeToString(randomBytes(32)),
		token:  hex.EncodeToString(randomBytes(16)),
		// 32 random bytes in base64 without its padding: the 43 characters
		// of an EncodingAESKey.
		aesKey: base64.RawStdEncoding.EncodeToString(randomBytes(32)),
	}
}

// demoConfig is the config a demo runs on: one app, its backend, the
// history page and the WeCom API all on loopback, defaults for the rest.
func demoConfig(base, wecomURL, dbPath string, c demoCredentials, backend llm.Config) *Config {
	name := "demo"
	if backend.Type == "" {
		// The built-in model (Deps.Backends) keeps no conversation of its
		// own, like an OpenAI-compatible API: the bridge then keeps the
		// turns and sends them with each question.
		backend = llm.Config{Type: llm.TypeOpenAI, Model: "wecom-bridge-demo"}
	} else {
		name = backend.Type
	}
	cfg := &Config{
		Server:  ServerConfig{Listen: strings.TrimPrefix(base, "http://"), PublicURL: base},
		Storage: StorageConfig{Path: dbPath},
		WeCom:   WeComConfig{CorpID: c.corpID, APIBase: wecomURL, OAuthBase: wecomURL, SSOBase: wecomURL},
		Apps: []AppConfig{{
			Name: demoApp, AgentID: demoAgentID,
			Secret: Secret(c.secret), Token: Secret(c.token), EncodingAESKey: Secret(c.aesKey),
			Backend: name,
		}},
		Backends: map[string]llm.Config{name: backend},
	}
	cfg.applyDefaults()
	return cfg
}

// demoChoice is the backend the environment selects.
type demoChoice struct {
	cfg   llm.Config // zero: the built-in demo model
	title string     // for the banner
	notes []string   // said before the banner
}

// demoBackend reads OPENAI_* and DIFY_* from env. A base URL without its
// key is an error; a key without a base URL (OPENAI_API_KEY is often set for
// other tools) is noted and ignored.
func demoBackend(env func(string) string) (demoChoice, error) {
	get := func(k string) string { return strings.TrimSpace(env(k)) }
	oURL, oKey, oModel := get("OPENAI_BASE_URL"), get("OPENAI_API_KEY"), get("OPENAI_MODEL")
	dURL, dKey, dMode := get("DIFY_BASE_URL"), get("DIFY_API_KEY"), get("DIFY_MODE")
	var ch demoChoice
	var errs []error
	if oURL != "" && oKey == "" {
		errs = append(errs, errors.New("demo: 设置了 OPENAI_BASE_URL 但没有 OPENAI_API_KEY：请一并设置（Ollama 等本地服务可填任意值），或取消 OPENAI_BASE_URL 以使用演示模型。OPENAI_BASE_URL is set but OPENAI_API_KEY is not: set it too (any value for a local server such as Ollama), or unset OPENAI_BASE_URL to use the demo model"))
	}
	if dURL != "" && dKey == "" {
		errs = append(errs, errors.New("demo: 设置了 DIFY_BASE_URL 但没有 DIFY_API_KEY：请设置为 Dify 应用的 API 密钥（app-...），或取消 DIFY_BASE_URL 以使用演示模型。DIFY_BASE_URL is set but DIFY_API_KEY is not: set it to the app's API key (app-...), or unset DIFY_BASE_URL to use the demo model"))
	}
	useOpenAI, useDify := oURL != "" && oKey != "", dURL != "" && dKey != ""
	if useOpenAI && useDify {
		errs = append(errs, errors.New("demo: 同时设置了 OPENAI_BASE_URL 和 DIFY_BASE_URL，请只保留一组。Both OPENAI_BASE_URL and DIFY_BASE_URL are set: unset one of them"))
	}
	if len(errs) > 0 {
		return ch, errors.Join(errs...)
	}
	switch {
	case useOpenAI:
		if oModel == "" {
			oModel = DefaultOpenAIModel
			ch.notes = append(ch.notes, fmt.Sprintf("OPENAI_MODEL 未设置，使用 %s。OPENAI_MODEL is not set; using %s.", oModel, oModel))
		}
		ch.cfg = llm.Config{Type: llm.TypeOpenAI, BaseURL: oURL, APIKey: oKey, Model: oModel}
		ch.title = fmt.Sprintf("OpenAI 兼容接口 OpenAI-compatible API %s（model %s，来自 from OPENAI_*）", oURL, oModel)
	case useDify:
		ch.cfg = llm.Config{Type: llm.TypeDify, BaseURL: dURL, APIKey: dKey, DifyMode: dMode}
		ch.title = fmt.Sprintf("Dify %s（来自 from DIFY_*）", dURL)
	default:
		ch.title = "内置演示模型 built-in demo model（设置 OPENAI_BASE_URL + OPENAI_API_KEY 或 DIFY_BASE_URL + DIFY_API_KEY 可换成真实模型 / set them to use a real one）"
		if oKey != "" || dKey != "" {
			ch.notes = append(ch.notes, "已设置 API key，但没有对应的 OPENAI_BASE_URL / DIFY_BASE_URL，仍使用演示模型。An API key is set without its base URL; using the demo model.")
		}
		return ch, nil
	}
	if err := ch.cfg.Validate(""); err != nil {
		prefix := "OPENAI_"
		if useDify {
			prefix = "DIFY_"
		}
		names := strings.NewReplacer("base_url:", prefix+"BASE_URL:", "api_key:", prefix+"API_KEY:",
			"model:", "OPENAI_MODEL:", "dify_mode:", "DIFY_MODE:")
		return ch, fmt.Errorf("demo: 环境变量有误 bad environment variable: %s", names.Replace(err.Error()))
	}
	return ch, nil
}

// randomBytes returns n bytes from crypto/rand.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return b
}
