package bridge

import (
	"bytes"
	"fmt"
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

func waitBinarySent(t *testing.T, wc *wecomtest.Server, n int) []wecomtest.SentMessage {
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
	d := &daemon{t: t, bin: buildDaemonBinary(t, t.TempDir()), cfgPath: filepath.Join(dir, "config.toml"), addr: freeLoopbackAddr(t)}
	db := filepath.Join(dir, "bridge.db")
	d.writeConfig(wc, dify, db, "旧的帮助")
	d.start()
	defer func() { _ = d.cmd.Process.Kill() }()

	d.ask("zhangsan", "/help", 1)
	if s := waitBinarySent(t, wc, 1); s[0].Content != "旧的帮助" {
		t.Fatalf("help = %q", s[0].Content)
	}
	d.writeConfig(wc, dify, db, "新的帮助")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	d.ask("zhangsan", "/help", 2)
	if s := waitBinarySent(t, wc, 2); s[1].Content != "新的帮助" {
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
	s := waitBinarySent(t, wc, 3)
	time.Sleep(200 * time.Millisecond)
	s = wc.Sent()
	if len(s) != 3 || s[2].Content != "You asked: 很难的问题" {
		t.Fatalf("after restart: %d messages, last %q", len(s), s[len(s)-1].Content)
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	_ = d.cmd.Wait()
}

// runBinary runs the built binary with args and returns its exit code,
// stdout and stderr.
func runBinary(t *testing.T, bin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// The command line: version, unknown commands, config errors with file,
// line and key (exit 1), and check-config on the shipped example.
func TestBinaryCommandLine(t *testing.T) {
	bin := buildDaemonBinary(t, t.TempDir())
	for _, args := range [][]string{{"version"}, {"-version"}} {
		code, out, _ := runBinary(t, bin, nil, args...)
		if code != 0 || !strings.HasPrefix(out, "wecom-bridge ") {
			t.Fatalf("%v: %d %q", args, code, out)
		}
	}
	if code, _, errs := runBinary(t, bin, nil, "frobnicate"); code != 2 || !strings.Contains(errs, "unknown command") {
		t.Fatalf("unknown command: %d %q", code, errs)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("[server]\nlisten = \"127.0.0.1:8080\"\nlisen = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runBinary(t, bin, nil, "check-config", "-config", path)
	if code != 1 || !strings.Contains(errs, "config.toml:3: server.lisen: 未知的配置项") || !strings.Contains(errs, "wecom.corp_id") {
		t.Fatalf("bad config: %d %q", code, errs)
	}
	if code, _, errs := runBinary(t, bin, nil, "-config", filepath.Join(t.TempDir(), "missing.toml")); code != 1 || !strings.Contains(errs, "missing.toml") {
		t.Fatalf("missing config: %d %q", code, errs)
	}
	env := []string{"HELPDESK_AES_KEY=" + dKey, "CHAT_AES_KEY=" + dKey}
	for _, v := range []string{"HELPDESK_SECRET", "HELPDESK_TOKEN", "CHAT_SECRET", "CHAT_TOKEN", "DIFY_KB_KEY", "DEEPSEEK_KEY"} {
		env = append(env, v+"=x-"+v)
	}
	code, out, errs := runBinary(t, bin, env, "check-config", "-config", "../config.example.toml")
	if code != 0 || !strings.Contains(out, "config OK") {
		t.Fatalf("example: %d %q %q", code, out, errs)
	}
}
