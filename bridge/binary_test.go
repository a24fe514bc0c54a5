package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"

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

// version prints what the build info knows, with no -ldflags; healthcheck
// exits 0 only when /healthz answers 200, found from -config (a wildcard
// listen address becomes loopback) or given with -url.
func TestBinaryVersionAndHealthcheck(t *testing.T) {
	wc := wecomtest.NewServer(wecomtest.Options{})
	defer wc.Close()
	wc.AddApp(dCorp, "the-app-secret", 1000002)
	dify := llmtest.NewDify()
	defer dify.Close()
	dir := t.TempDir()
	bin := buildDaemonBinary(t, t.TempDir())

	code, out, _ := runBinary(t, bin, nil, "version")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "wecom-bridge ") ||
		!strings.HasPrefix(lines[1], "revision ") || !strings.HasPrefix(lines[2], "built with "+goruntime.Version()+" ") {
		t.Fatalf("version: %d\n%s", code, out)
	}

	d := &daemon{t: t, bin: bin, cfgPath: filepath.Join(dir, "config.toml"), addr: freeLoopbackAddr(t)}
	env := []string{"TEST_APP_SECRET=the-app-secret"}
	if code, _, errs := runBinary(t, bin, env, "healthcheck", "-url", "http://"+d.addr+"/healthz"); code != 1 || !strings.Contains(errs, "connection refused") {
		t.Fatalf("healthcheck with nothing listening: %d %q", code, errs)
	}
	d.writeConfig(wc, dify, filepath.Join(dir, "bridge.db"), "帮助")
	d.start()
	defer func() { _ = d.cmd.Process.Kill(); _ = d.cmd.Wait() }()
	if code, out, errs := runBinary(t, bin, env, "healthcheck", "-config", d.cfgPath); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("healthcheck -config: %d %q %q", code, out, errs)
	}
	_, port, _ := net.SplitHostPort(d.addr)
	if code, _, errs := runBinary(t, bin, nil, "healthcheck", "-url", "http://127.0.0.1:"+port+"/healthz"); code != 0 {
		t.Fatalf("healthcheck -url: %d %q", code, errs)
	}
	unhealthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "database not writable", http.StatusServiceUnavailable)
	}))
	defer unhealthy.Close()
	if code, _, errs := runBinary(t, bin, nil, "healthcheck", "-url", unhealthy.URL+"/healthz"); code != 1 || !strings.Contains(errs, "503") {
		t.Fatalf("healthcheck of an unhealthy daemon: %d %q", code, errs)
	}
}

// `backup` against the running daemon while questions keep coming: the
// copy opens and holds every question acknowledged before the backup
// started. Then against the stopped daemon: the file is copied directly
// and holds every question acknowledged at all.
func TestBinaryBackupUnderLoad(t *testing.T) {
	wc := wecomtest.NewServer(wecomtest.Options{})
	defer wc.Close()
	wc.AddApp(dCorp, "the-app-secret", 1000002)
	dify := llmtest.NewDify()
	defer dify.Close()
	dir := t.TempDir()
	bin := buildDaemonBinary(t, t.TempDir())
	d := &daemon{t: t, bin: bin, cfgPath: filepath.Join(dir, "config.toml"), addr: freeLoopbackAddr(t)}
	d.writeConfig(wc, dify, filepath.Join(dir, "bridge.db"), "帮助")
	d.start()
	defer func() { _ = d.cmd.Process.Kill() }()
	if fi, err := os.Lstat(filepath.Join(dir, "bridge.db.sock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v %v", fi, err)
	}

	var (
		mu    sync.Mutex
		acked []string // question texts WeCom got a 200 for
		stop  = make(chan struct{})
		load  sync.WaitGroup
		next  atomic.Uint64
	)
	for w := 0; w < 4; w++ {
		load.Add(1)
		go func() {
			defer load.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := next.Add(1)
				user, text := fmt.Sprintf("user%d", id%20), fmt.Sprintf("问题 %d", id)
				inner := wecomtest.TextMessageXML(dCorp, user, text, id, 1000002, time.Now())
				cb, err := wecomtest.NewCallback(dToken, dKey, dCorp, 1000002, inner, wecom.FormatXML, nil)
				if err != nil {
					t.Error(err)
					return
				}
				resp, err := http.Post(cb.Target("http://"+d.addr+"/wecom/helpdesk"), "text/xml", bytes.NewReader(cb.Body))
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					acked = append(acked, user+"\x00"+text)
					mu.Unlock()
				}
			}
		}()
	}
	ackedNow := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), acked...)
	}
	waitUntil(t, 20*time.Second, func() bool { return len(ackedNow()) >= 300 })
	before := ackedNow()
	live := filepath.Join(t.TempDir(), "live.db")
	code, out, errs := runBinary(t, bin, []string{"TEST_APP_SECRET=the-app-secret"}, "backup", "-config", d.cfgPath, "-out", live)
	if code != 0 || !strings.Contains(out, "running daemon") {
		t.Fatalf("live backup: %d %q %q", code, out, errs)
	}
	waitUntil(t, 20*time.Second, func() bool { return len(ackedNow()) >= len(before)+100 })
	close(stop)
	load.Wait()
	checkBackupHolds(t, live, before)
	t.Logf("live backup while %d questions came in: %s", len(ackedNow()), strings.TrimSpace(out))

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.logs.String())
	}
	if _, err := os.Lstat(filepath.Join(dir, "bridge.db.sock")); !os.IsNotExist(err) {
		t.Fatalf("admin socket left after a clean stop: %v", err)
	}
	stopped := filepath.Join(t.TempDir(), "stopped.db")
	code, out, errs = runBinary(t, bin, []string{"TEST_APP_SECRET=the-app-secret"}, "backup", "-config", d.cfgPath, "-out", stopped)
	if code != 0 || !strings.Contains(out, "stopped database") {
		t.Fatalf("stopped backup: %d %q %q", code, out, errs)
	}
	checkBackupHolds(t, stopped, ackedNow())
	// -db needs no config and so no secrets (the backup timer's way).
	byPath := filepath.Join(t.TempDir(), "by-path.db")
	if code, out, errs := runBinary(t, bin, nil, "backup", "-db", filepath.Join(dir, "bridge.db"), "-out", byPath); code != 0 || !strings.Contains(out, "stopped database") {
		t.Fatalf("backup -db: %d %q %q", code, out, errs)
	}
	checkBackupHolds(t, byPath, ackedNow())
	if code, _, errs := runBinary(t, bin, []string{"TEST_APP_SECRET=the-app-secret"}, "backup", "-config", d.cfgPath); code != 2 || !strings.Contains(errs, "-out") {
		t.Fatalf("backup without -out: %d %q", code, errs)
	}
}

// checkBackupHolds opens a backup and checks that every "user\x00question"
// in want is in its history.
func checkBackupHolds(t *testing.T, path string, want []string) {
	t.Helper()
	s, err := kv.Open(path, kv.Options{})
	if err != nil {
		t.Fatalf("open the backup: %v", err)
	}
	defer s.Close()
	have := map[string]bool{}
	for u := 0; u < 20; u++ {
		user := fmt.Sprintf("user%d", u)
		var before uint64
		for {
			page, next, err := s.History(kv.HistoryQuery{User: user, Before: before, Limit: 500})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page {
				have[user+"\x00"+e.Question] = true
			}
			if next == 0 {
				break
			}
			before = next
		}
	}
	for _, w := range want {
		if !have[w] {
			t.Fatalf("acknowledged question %q is not in the backup (%d of %d there)", w, len(have), len(want))
		}
	}
}

// When the server stops on its own (here: accept fails for good once the
// process is out of file descriptors), main still drains the answers in
// flight, then exits 1 instead of dropping them.
func TestBinaryServerStopsOnItsOwn(t *testing.T) {
	wc := wecomtest.NewServer(wecomtest.Options{})
	defer wc.Close()
	wc.AddApp(dCorp, "the-app-secret", 1000002)
	wc.AddUser("zhangsan")
	dify := llmtest.NewDify()
	defer dify.Close()
	dir := t.TempDir()
	d := &daemon{t: t, bin: buildDaemonBinary(t, t.TempDir()), cfgPath: filepath.Join(dir, "config.toml"), addr: freeLoopbackAddr(t)}
	d.writeConfig(wc, dify, filepath.Join(dir, "bridge.db"), "帮助")
	// Go raises the soft limit to the hard one, so lower both.
	d.cmd = exec.Command("/bin/sh", "-c", `ulimit -n 64 && exec "$0" -config "$1"`, d.bin, d.cfgPath)
	d.cmd.Env = append(os.Environ(), "TEST_APP_SECRET=the-app-secret")
	logs := newSyncBuffer() // read while the daemon writes
	d.cmd.Stderr = logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.cmd.Process.Kill() }()
	waitUntil(t, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", d.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	dify.Push(llmtest.Script{Answer: "慢慢写完的回答", Deltas: 4, DeltaDelay: 500 * time.Millisecond})
	d.ask("zhangsan", "问题", 1)
	waitUntil(t, 5*time.Second, func() bool { return len(dify.Requests()) == 1 })

	// Use up the daemon's descriptors with idle connections.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 80; i++ {
		c, err := net.Dial("tcp", d.addr)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "server stopped on its own") {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not stop with %d connections open:\n%s", len(conns), logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	err := d.cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit after the server stopped: %v (want exit status 1)\n%s", err, logs.String())
	}
	sent := wc.Sent()
	if len(sent) != 1 || sent[0].Content != "慢慢写完的回答" {
		t.Fatalf("the answer in flight was not delivered before the exit: %+v\n%s", sent, logs.String())
	}
}

// A SIGTERM that arrives while the daemon is still starting (here: waiting
// for the database lock) is not fatal: the daemon finishes starting, then
// shuts down cleanly with exit 0, instead of dying mid-start by the signal.
func TestBinarySignalDuringStart(t *testing.T) {
	wc := wecomtest.NewServer(wecomtest.Options{})
	defer wc.Close()
	wc.AddApp(dCorp, "the-app-secret", 1000002)
	dify := llmtest.NewDify()
	defer dify.Close()
	dir := t.TempDir()
	d := &daemon{t: t, bin: buildDaemonBinary(t, t.TempDir()), cfgPath: filepath.Join(dir, "config.toml"), addr: freeLoopbackAddr(t)}
	db := filepath.Join(dir, "bridge.db")
	d.writeConfig(wc, dify, db, "帮助")
	holder, err := kv.Open(db, kv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	d.cmd = exec.Command(d.bin, "-config", d.cfgPath)
	d.cmd.Env = append(os.Environ(), "TEST_APP_SECRET=the-app-secret")
	logs := newSyncBuffer()
	d.cmd.Stderr = logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.cmd.Process.Kill() }()
	// The daemon waits up to 1 s for the lock; signal it in that wait,
	// then let it have the file.
	time.Sleep(600 * time.Millisecond)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := holder.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("SIGTERM while starting: %v (want a clean exit 0)\n%s", err, logs.String())
	}
	if l := logs.String(); !strings.Contains(l, "wecom-bridge started") || !strings.Contains(l, "shutting down") {
		t.Fatalf("want a start and a clean shutdown in the log:\n%s", l)
	}
}
