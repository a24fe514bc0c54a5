package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

// check subscribes a websocket bot once: OK with the right secret, FAIL
// naming the key with a wrong one.
func TestCheckBotSubscribes(t *testing.T) {
	bs, err := emulator.NewBotServer(emulator.BotConfig{Bots: map[string]string{testBotID: testBotSecret}})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	url, _ := bs.Listen("127.0.0.1:0")
	dify := llmtest.NewDify()
	defer dify.Close()
	conf := func(secret string) *Config {
		cfg, err := Parse("bot.toml", []byte(fmt.Sprintf(`
[server]
listen = "127.0.0.1:1"
[storage]
path = "/tmp/unused.db"
[[bots]]
name = "kbbot"
bot_id = %q
secret = %q
ws_url = %q
backend = "kb"
[backends.kb]
type = "dify"
base_url = %q
api_key = "app-llmtest"
`, testBotID, secret, url, dify.URL())))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if !Check(ctx, conf(testBotSecret), &out, quiet) || !strings.Contains(out.String(), "long connection") {
		t.Fatalf("check failed on a good bot:\n%s", out.String())
	}
	if bs.Subscribes(testBotID) != 1 {
		t.Fatalf("check subscribed %d times", bs.Subscribes(testBotID))
	}
	out.Reset()
	if Check(ctx, conf("wrong"), &out, quiet) {
		t.Fatalf("check passed with a wrong secret:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "bots.kbbot.secret") {
		t.Fatalf("the report does not name the key:\n%s", out.String())
	}
	if strings.Contains(out.String(), testBotSecret) || strings.Contains(out.String(), "wrong\t") {
		t.Fatalf("a secret leaked into the report:\n%s", out.String())
	}
}

// simulate -bot chats through the real bot pipeline against the emulated
// long connection, with generated WeCom credentials (none in the config).
func TestSimulateBot(t *testing.T) {
	dify := llmtest.NewDify()
	defer dify.Close()
	dify.Push(llmtest.Script{Answer: "机器人的**回答**。", Deltas: 4})
	text := fmt.Sprintf(`
[[bots]]
name = "kbbot"
bot_id = "env:NOT_SET_BOT_ID"
secret = "env:NOT_SET_BOT_SECRET"
backend = "kb"
[backends.kb]
type = "dify"
base_url = %q
api_key = "app-llmtest"
`, dify.URL())
	cfg, choice, err := ParseForSimulate("sim.toml", []byte(text), SimulateChoice{})
	if err != nil {
		t.Fatal(err)
	}
	if choice.Bot != "kbbot" {
		t.Fatalf("simulate picked %+v, want the bot", choice)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = Simulate(ctx, cfg, SimulateOptions{Choice: choice, User: "zhangsan", In: strings.NewReader("报销流程？\n"), Out: &out,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, "机器人的**回答**。") || !strings.Contains(got, "流式") {
		t.Fatalf("simulate printed:\n%s", got)
	}
	if r := dify.Requests(); len(r) != 1 || r[0].Query != "报销流程？" {
		t.Fatalf("Dify saw %+v", r)
	}
}

// simulate with only a backend configured: no WeCom settings at all; a
// generated app talks to it.
func TestSimulateBackendOnly(t *testing.T) {
	dify := llmtest.NewDify()
	defer dify.Close()
	dify.Push(llmtest.Script{Answer: "只配了后端也能试。"})
	text := fmt.Sprintf("[backends.kb]\ntype = \"dify\"\nbase_url = %q\napi_key = \"app-llmtest\"\n", dify.URL())
	cfg, choice, err := ParseForSimulate("sim.toml", []byte(text), SimulateChoice{})
	if err != nil {
		t.Fatal(err)
	}
	if choice.Backend != "kb" || len(cfg.Apps) != 1 {
		t.Fatalf("choice %+v, %d apps", choice, len(cfg.Apps))
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Simulate(ctx, cfg, SimulateOptions{Choice: choice, User: "zhangsan", In: strings.NewReader("试一下\n"), Out: &out,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "只配了后端也能试。") {
		t.Fatalf("simulate printed:\n%s", out.String())
	}
}
