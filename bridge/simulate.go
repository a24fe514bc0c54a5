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
	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

// SimulateOptions configures Simulate.
type SimulateOptions struct {
	// Choice is what LoadForSimulate resolved: the app or bot to chat with.
	Choice SimulateChoice
	User   string // the WeCom userid to write as
	In     io.Reader
	Out    io.Writer
	Log    *slog.Logger
}

// Simulate is a terminal chat through the real pipeline against an
// emulated WeCom (wecom/emulator): for an app, each line typed is encrypted
// as WeCom would and POSTed to the daemon over loopback, and replies go out
// through the emulated message/send API; for a bot, the daemon holds a long
// connection to the emulated bot server, which pushes each line and shows
// the streamed bubble. Replies are printed as a member would see them. The
// configured LLM backend is real; WeCom's credentials are generated
// (cfg comes from LoadForSimulate). State goes to a temporary database, so
// a running daemon is not disturbed.
func Simulate(ctx context.Context, cfg *Config, o SimulateOptions) error {
	if o.User == "" {
		o.User = "simulator"
	}
	sim := *cfg
	fake, err := emulator.New(emulator.Options{})
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	defer fake.Close()
	for _, a := range sim.Apps {
		fake.AddApp(sim.WeCom.CorpID, a.Secret.Value(), a.AgentID)
	}
	fake.AddUser(o.User)
	fake.SetLoginUser(o.User)
	sim.WeCom.APIBase, sim.WeCom.OAuthBase, sim.WeCom.SSOBase = fake.URL(), fake.URL(), fake.URL()

	var bots *emulator.BotServer
	if o.Choice.Bot != "" {
		secrets := map[string]string{}
		sim.Bots = append([]BotConfig(nil), sim.Bots...)
		for _, bc := range sim.Bots {
			secrets[bc.BotID] = bc.Secret.Value()
		}
		if bots, err = emulator.NewBotServer(emulator.BotConfig{Bots: secrets}); err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
		defer bots.Close()
		wsURL, err := bots.Listen("127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
		for i := range sim.Bots {
			sim.Bots[i].Mode, sim.Bots[i].WSURL = BotModeWebSocket, wsURL
		}
	}

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
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(o.In)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var send func(line string) error
	var watch *botWatch
	pushed := 0 // bot messages pushed; each ends in one finished bubble
	if bots != nil {
		bc := sim.Bots[0]
		say("wecom-bridge simulate: 智能机器人 %q, 用户 %q, 后端 %q（企业微信为模拟）。输入问题后回车；/new 新对话，/help 帮助，Ctrl-D 退出。\n", bc.Name, o.User, bc.Backend)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := bots.Wait(wctx, func() bool { return bots.Connected(bc.BotID) })
		cancel()
		if err != nil {
			return fmt.Errorf("simulate: the bot did not connect to the emulated WeCom: %w", err)
		}
		send = func(line string) error {
			if _, err := bots.PushText(bc.BotID, o.User, line); err != nil {
				return fmt.Errorf("simulate: push: %w", err)
			}
			pushed++
			return nil
		}
		watch = &botWatch{bots: bots, name: bc.Name, user: o.User, say: say, printed: map[string]bool{}}
		go watch.run(ctx)
	} else {
		ac := sim.Apps[0]
		fake.OnSend(func(m emulator.SentMessage) {
			if m.AgentID != ac.AgentID {
				return
			}
			say("\n【%s → %s】%s\n", ac.Name, m.ToUser, indentReply(m.Content))
		})
		say("wecom-bridge simulate: 应用 %q, 用户 %q, 后端 %q（企业微信为模拟）。输入问题后回车；/new 新对话，/help 帮助，Ctrl-D 退出。\n", ac.Name, o.User, ac.Backend)
		target := "http://" + ln.Addr().String() + "/wecom/" + ac.Name
		hc := &http.Client{Timeout: 10 * time.Second}
		msgID := uint64(time.Now().UnixNano())
		send = func(line string) error {
			msgID++
			inner := emulator.TextMessageXML(sim.WeCom.CorpID, o.User, line, msgID, ac.AgentID, time.Now())
			cb, err := emulator.NewCallback(ac.Token.Value(), ac.EncodingAESKey.Value(), sim.WeCom.CorpID, ac.AgentID, inner, wecom.FormatXML, nil)
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
			return nil
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				if watch != nil {
					// A pushed message reaches the store only once the
					// daemon has read it: wait for its bubble first.
					wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
					_ = bots.Wait(wctx, func() bool {
						n := 0
						for _, bb := range bots.Bubbles() {
							if bb.Finishes > 0 {
								n++
							}
						}
						return n >= pushed
					})
					cancel()
				}
				err := waitIdle(ctx, store, 5*time.Minute)
				if watch != nil {
					watch.scan()
				}
				return err
			}
			if strings.TrimSpace(line) == "" {
				continue
			}
			if err := send(line); err != nil {
				return err
			}
		}
	}
}

// botWatch prints each finished bubble and each proactive message of the
// emulated bot server as the member sees them.
type botWatch struct {
	bots      *emulator.BotServer
	name      string
	user      string
	say       func(string, ...any)
	mu        sync.Mutex
	printed   map[string]bool
	sentCount int
}

// scan prints what is new.
func (w *botWatch) scan() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, bb := range w.bots.Bubbles() {
		if bb.Finishes > 0 && !w.printed[bb.StreamID] {
			w.printed[bb.StreamID] = true
			w.say("\n【%s → %s｜流式 %d 帧】%s\n", w.name, w.user, bb.Frames, indentReply(bb.Text))
		}
	}
	msgs := w.bots.Sent(w.user)
	for ; w.sentCount < len(msgs); w.sentCount++ {
		w.say("\n【%s → %s｜主动消息】%s\n", w.name, w.user, indentReply(msgs[w.sentCount]))
	}
}

// run scans until ctx ends.
func (w *botWatch) run(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.scan()
		}
	}
}

var _ = aibot.MaxContentBytes

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
