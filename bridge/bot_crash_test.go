package bridge

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

// The built daemon is SIGKILLed while a bot answer streams: after the
// restart the req_id is gone, and the rest of the answer arrives once by
// proactive messages, continuing exactly after what the bubble showed.
func TestBotCrashMidAnswerDeliversRestOnce(t *testing.T) {
	dir := t.TempDir()
	bin := buildDaemonBinary(t, dir)
	bs, err := emulator.NewBotServer(emulator.BotConfig{Bots: map[string]string{testBotID: testBotSecret}, AckDelay: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	wsURL, err := bs.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dify := llmtest.NewDify()
	defer dify.Close()
	answer := longMarkdown(12)
	// The same answer for the first ask and the one after the restart.
	dify.Push(llmtest.Script{Answer: answer, Deltas: 24, DeltaDelay: 120 * time.Millisecond},
		llmtest.Script{Answer: answer, Deltas: 6, DeltaDelay: 10 * time.Millisecond})

	d := &crashDaemon{t: t, bin: bin, dir: dir, addr: freeLoopbackAddr(t)}
	cfg := fmt.Sprintf(`
[server]
listen = %q

[storage]
path = %q

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
`, d.addr, filepath.Join(dir, "bridge.db"), testBotID, testBotSecret, wsURL, dify.URL())
	d.config = filepath.Join(dir, "config.toml")
	if err := os.WriteFile(d.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d.start()
	defer d.stop()
	waitUntil(t, 10*time.Second, func() bool { return bs.Connected(testBotID) })
	if _, err := bs.PushText(testBotID, "zhangsan", "长一点的问题"); err != nil {
		t.Fatal(err)
	}
	// Kill once the bubble shows a few paragraphs, a moment after a frame.
	waitUntil(t, 10*time.Second, func() bool {
		for _, b := range bs.Bubbles() {
			if strings.Contains(b.Text, "**第4段**") {
				return true
			}
		}
		return false
	})
	time.Sleep(40 * time.Millisecond)
	d.kill()
	var shown string
	for _, b := range bs.Bubbles() {
		shown = b.Text
	}
	d.start()
	waitUntil(t, 20*time.Second, func() bool {
		got := strings.ReplaceAll(shown+strings.Join(bs.Sent("zhangsan"), ""), "\n", "")
		return len(got) >= len(strings.ReplaceAll(answer, "\n", ""))
	})
	time.Sleep(300 * time.Millisecond) // a late repeat would show now
	rest := bs.Sent("zhangsan")
	got := strings.ReplaceAll(shown+strings.Join(rest, ""), "\n", "")
	if got != strings.ReplaceAll(answer, "\n", "") {
		t.Fatalf("after the crash the user saw the bubble (%d bytes) and %d messages:\n%s\n---\n%s", len(shown), len(rest), shown, strings.Join(rest, "|"))
	}
	if !strings.HasPrefix(answer, shown) {
		t.Fatalf("the bubble %q is not a prefix of the answer", shown)
	}
}
