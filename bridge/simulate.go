package bridge

import (
	"bufio"
	"bytes"
	"context"
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
	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

// SimulateOptions configures Simulate.
type SimulateOptions struct {
	App  string // default: the first app
	User string // the WeCom userid to write as
	In   io.Reader
	Out  io.Writer
	Log  *slog.Logger
}

// Simulate is a terminal chat through the real pipeline: each line typed is
// encrypted as WeCom would and POSTed to the daemon over loopback; replies
// go out through a built-in fake WeCom API and are printed as a member would
// receive them. The configured LLM backend is real. State goes to a
// temporary database, so a running daemon is not disturbed.
func Simulate(ctx context.Context, cfg *Config, o SimulateOptions) error {
	sim := *cfg
	if o.App == "" {
		o.App = cfg.Apps[0].Name
	}
	if o.User == "" {
		o.User = "simulator"
	}
	var ac *AppConfig
	for i := range cfg.Apps {
		if cfg.Apps[i].Name == o.App {
			ac = &cfg.Apps[i]
		}
	}
	if ac == nil {
		return fmt.Errorf("simulate: no app named %q in the config", o.App)
	}
	fake := wecomtest.NewServer(wecomtest.Options{})
	defer fake.Close()
	for _, a := range cfg.Apps {
		fake.AddApp(cfg.WeCom.CorpID, a.Secret.Value(), a.AgentID)
	}
	fake.AddUser(o.User)
	fake.SetLoginUser(o.User)
	sim.WeCom.APIBase, sim.WeCom.OAuthBase, sim.WeCom.SSOBase = fake.URL(), fake.URL(), fake.URL()
	dir, err := os.MkdirTemp("", "wecom-bridge-simulate-")
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	defer os.RemoveAll(dir)
	store, err := kv.Open(filepath.Join(dir, "simulate.db"), kv.Options{NoSync: true})
	if err != nil {
		return err
	}
	defer store.Close()
	b, err := New(&sim, Deps{Log: o.Log, Store: store})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	if err := b.Start(ln); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Shutdown(sctx)
	}()

	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		fmt.Fprintf(o.Out, format, args...)
		outMu.Unlock()
	}
	fake.OnSend(func(m wecomtest.SentMessage) {
		if m.AgentID != ac.AgentID {
			return
		}
		say("\n【%s → %s】%s\n", ac.Name, m.ToUser, indentReply(m.Content))
	})
	say("wecom-bridge simulate: 应用 %q, 用户 %q, 后端 %q。输入问题后回车；/new 新对话，/help 帮助，Ctrl-D 退出。\n", ac.Name, o.User, ac.Backend)

	target := "http://" + ln.Addr().String() + "/wecom/" + ac.Name
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(o.In)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	hc := &http.Client{Timeout: 10 * time.Second}
	msgID := uint64(time.Now().UnixNano())
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				return waitIdle(ctx, store, 5*time.Minute)
			}
			if strings.TrimSpace(line) == "" {
				continue
			}
			msgID++
			inner := wecomtest.TextMessageXML(cfg.WeCom.CorpID, o.User, line, msgID, ac.AgentID, time.Now())
			cb, err := wecomtest.NewCallback(ac.Token.Value(), ac.EncodingAESKey.Value(), cfg.WeCom.CorpID, ac.AgentID, inner, wecom.FormatXML, nil)
			if err != nil {
				return fmt.Errorf("simulate: build callback: %w", err)
			}
			resp, err := hc.Post(cb.Target(target), "text/xml", bytes.NewReader(cb.Body))
			if err != nil {
				return fmt.Errorf("simulate: post callback: %w", err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				say("（回调被拒绝：HTTP %d）\n", resp.StatusCode)
			}
		}
	}
}

// waitIdle waits until no job is pending, so the last answer is printed.
func waitIdle(ctx context.Context, store *kv.Store, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		st, err := store.Stats()
		if err != nil {
			return err
		}
		if st.PendingJobs == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func indentReply(s string) string {
	if !strings.Contains(s, "\n") {
		return s
	}
	return "\n  " + strings.ReplaceAll(s, "\n", "\n  ")
}
