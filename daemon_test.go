package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

const (
	dCorp  = "ww0123456789abcdef"
	dToken = "QDG6eK"
	dKey   = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
)

// daemon is the built binary running against in-process fakes.
type daemon struct {
	t       *testing.T
	bin     string
	cfgPath string
	addr    string
	cmd     *exec.Cmd
	logs    *bytes.Buffer
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wecom-bridge")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (d *daemon) writeConfig(wc *wecomtest.Server, dify *llmtest.Dify, db, help string) {
	cfg := fmt.Sprintf(`
[server]
listen = %q
public_url = "https://bot.example.com"
shutdown_grace = "3s"
[log]
level = "debug"
[storage]
path = %q
[wecom]
corp_id = %q
api_base = %q
[[apps]]
name = "helpdesk"
agent_id = 1000002
secret = "env:TEST_APP_SECRET"
token = %q
encoding_aes_key = %q
backend = "kb"
thinking_after = "-1s"
[backends.kb]
type = "dify"
base_url = %q
api_key = "app-llmtest"
[texts]
help = %q
`, d.addr, db, dCorp, wc.URL(), dToken, dKey, dify.URL(), help)
	if err := os.WriteFile(d.cfgPath, []byte(cfg), 0o600); err != nil {
		d.t.Fatal(err)
	}
}

func (d *daemon) start() {
	d.t.Helper()
	d.logs = &bytes.Buffer{}
	d.cmd = exec.Command(d.bin, "-config", d.cfgPath)
	d.cmd.Env = append(os.Environ(), "TEST_APP_SECRET=the-app-secret")
	d.cmd.Stderr = d.logs
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + d.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("daemon did not come up:\n%s", d.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *daemon) ask(user, text string, id uint64) {
	d.t.Helper()
	inner := wecomtest.TextMessageXML(dCorp, user, text, id, 1000002, time.Now())
	cb, err := wecomtest.NewCallback(dToken, dKey, dCorp, 1000002, inner, wecom.FormatXML, nil)
	if err != nil {
		d.t.Fatal(err)
	}
	resp, err := http.Post(cb.Target("http://"+d.addr+"/wecom/helpdesk"), "text/xml", bytes.NewReader(cb.Body))
	if err != nil {
		d.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		d.t.Fatalf("callback status %d", resp.StatusCode)
	}
}

func waitSent(t *testing.T, wc *wecomtest.Server, n int) []wecomtest.SentMessage {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if s := wc.Sent(); len(s) >= n {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited for %d messages, got %d", n, len(wc.Sent()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The built binary reloads its config on SIGHUP without dropping work, and
// on SIGTERM drains within shutdown_grace; an answer still running then is
// left pending and delivered once after the restart.
func TestBinarySignals(t *testing.T) {
	wc := wecomtest.NewServer(wecomtest.Options{})
	defer wc.Close()
	wc.AddApp(dCorp, "the-app-secret", 1000002)
	wc.AddUser("zhangsan")
	dify := llmtest.NewDify()
	defer dify.Close()
	dir := t.TempDir()
	d := &daemon{t: t, bin: buildBinary(t), cfgPath: filepath.Join(dir, "config.toml"), addr: freeAddr(t)}
	db := filepath.Join(dir, "bridge.db")
	d.writeConfig(wc, dify, db, "旧的帮助")
	d.start()
	defer func() { _ = d.cmd.Process.Kill() }()

	d.ask("zhangsan", "/help", 1)
	if s := waitSent(t, wc, 1); s[0].Content != "旧的帮助" {
		t.Fatalf("help = %q", s[0].Content)
	}
	d.writeConfig(wc, dify, db, "新的帮助")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	d.ask("zhangsan", "/help", 2)
	if s := waitSent(t, wc, 2); s[1].Content != "新的帮助" {
		t.Fatalf("help after SIGHUP = %q\n%s", s[1].Content, d.logs.String())
	}

	// An answer that outlives the drain deadline.
	dify.Push(llmtest.Script{Hang: true})
	d.ask("zhangsan", "很难的问题", 3)
	deadline := time.Now().Add(5 * time.Second)
	for len(dify.Requests()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.logs.String())
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Fatalf("shutdown took %v", took)
	}
	if !strings.Contains(d.logs.String(), "stays pending") {
		t.Fatalf("no pending notice in the log:\n%s", d.logs.String())
	}
	if strings.Contains(d.logs.String(), "the-app-secret") {
		t.Fatal("the app secret is in the log")
	}
	d.start()
	s := waitSent(t, wc, 3)
	time.Sleep(200 * time.Millisecond)
	s = wc.Sent()
	if len(s) != 3 || s[2].Content != "You asked: 很难的问题" {
		t.Fatalf("after restart: %d messages, last %q", len(s), s[len(s)-1].Content)
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	_ = d.cmd.Wait()
}
