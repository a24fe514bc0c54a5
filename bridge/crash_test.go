package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

// Kill points of the crash test.
const (
	killRandom     = "random moment"            // mostly while answers stream
	killIntake     = "during intake"            // a callback is in flight
	killSendWindow = "between send and its ack" // WeCom has the piece, the daemon not its ack
	killAfterPiece = "between pieces"           // right after a piece was acknowledged
)

// The built daemon is SIGKILLed again and again while questions arrive and
// answers stream, and restarted each time. WeCom's retries are played by
// re-sending each callback until it is acknowledged. At the end every
// question has its full answer, delivered exactly once: each paragraph of
// each answer is found once among the messages WeCom received, in order,
// and each user's answers come in the order the questions were asked.
//
// What covers the send/ack window: a piece is recorded in the job before it
// is sent and marked sent after WeCom acknowledges it. A crash in between
// sends that piece again after the restart, with the same content and
// enable_duplicate_check, and WeCom (the fake honours it) drops the copy —
// as long as the restart comes within duplicate_check_interval. The test
// counts those drops: they are the sends the proxy saw beyond the messages
// WeCom delivered.
func TestCrashKillRestartExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the daemon binary")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not found")
	}
	const (
		questions = 120
		users     = 30
		paras     = 6
		kills     = 24
	)
	dir := t.TempDir()
	bin := buildDaemonBinary(t, dir)

	wc := wecomtest.NewServer(wecomtest.Options{})
	defer wc.Close()
	wc.AddApp(testCorp, "secret-helpdesk", 1000002)
	for u := range users {
		wc.AddUser(fmt.Sprintf("user%02d", u), 2)
	}
	dify := llmtest.NewDify()
	defer dify.Close()
	// The fake echoes each question; streamed in 12 deltas 15 ms apart,
	// an answer takes about 180 ms, so random kills land mid-stream.
	for range questions * 8 {
		dify.Push(llmtest.Script{Deltas: 12, DeltaDelay: 15 * time.Millisecond})
	}

	d := &crashDaemon{t: t, bin: bin, dir: dir}
	proxy := newKillProxy(wc.URL(), d)
	defer proxy.Close()
	d.addr = freeLoopbackAddr(t)
	cfg := fmt.Sprintf(`
[server]
listen = %q
public_url = "https://bot.example.com"

[log]
level = "debug"

[storage]
path = %q

[wecom]
corp_id = %q
api_base = %q
oauth_base = %q
sso_base = %q
send_retry_for = "30s"

[[apps]]
name = "helpdesk"
agent_id = 1000002
secret = "secret-helpdesk"
token = %q
encoding_aes_key = %q
backend = "kb"
thinking_after = "-1s"

[backends.kb]
type = "dify"
base_url = %q
api_key = "app-llmtest"
retry_base = "5ms"
`, d.addr, filepath.Join(dir, "bridge.db"), testCorp, proxy.URL, proxy.URL, proxy.URL, testToken, testAESKey, dify.URL())
	d.config = filepath.Join(dir, "config.toml")
	if err := os.WriteFile(d.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d.start()
	defer d.stop()

	// Questions: paras paragraphs, each tagged Q<i>p<j>, so every piece
	// of every answer can be told apart. The fake answers "You asked: "
	// and the question.
	filler := "报销需要提交发票、行程单和部门负责人的审批单，然后在系统里提交申请等待财务审核。"
	text := make([]string, questions)
	for i := range text {
		var ps []string
		for j := range paras {
			ps = append(ps, fmt.Sprintf("Q%03dp%d：%s", i, j, filler))
		}
		text[i] = strings.Join(ps, "\n\n")
	}
	user := func(i int) string { return fmt.Sprintf("user%02d", i%users) }

	// The sender plays WeCom: each callback is re-sent (same MsgId) until
	// it is acknowledged, up to a deadline.
	var sendCtr atomic.Int64
	sendDone := make(chan struct{})
	var firstTry atomic.Int64
	go func() {
		defer close(sendDone)
		for i := range questions {
			inner := wecomtest.TextMessageXML(testCorp, user(i), text[i], uint64(7000+i), 1000002, time.Now())
			cb, err := wecomtest.NewCallback(testToken, testAESKey, testCorp, 1000002, inner, wecom.FormatXML, nil)
			if err != nil {
				t.Error(err)
				return
			}
			deadline := time.Now().Add(30 * time.Second)
			for try := 0; ; try++ {
				sendCtr.Add(1)
				if d.post(cb) == http.StatusOK {
					if try == 0 {
						firstTry.Add(1)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("question %d never acknowledged", i)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(time.Duration(5+rand.IntN(25)) * time.Millisecond)
		}
	}()

	// The killer: a kill of each kind in turn, each followed by a restart.
	modes := []string{killRandom, killIntake, killSendWindow, killAfterPiece}
	killed := map[string]int{}
	for k := range kills {
		mode := modes[k%len(modes)]
		switch mode {
		case killRandom:
			time.Sleep(time.Duration(50+rand.IntN(300)) * time.Millisecond)
			d.kill()
		case killIntake:
			// Kill a moment after a callback left, while the daemon
			// verifies, stores or acknowledges it.
			n := sendCtr.Load()
			waitUntil(t, 5*time.Second, func() bool { return sendCtr.Load() > n || isClosed(sendDone) })
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
			d.kill()
		case killSendWindow, killAfterPiece:
			proxy.arm(mode)
			if !proxy.waitKill(5 * time.Second) {
				proxy.arm("")
				d.kill() // no send in time (answers all done): kill anyway
			}
		}
		killed[mode]++
		d.start()
	}
	select {
	case <-sendDone:
	case <-time.After(40 * time.Second):
		t.Fatal("the sender did not finish")
	}

	// Let the last daemon finish every answer.
	want := map[string]bool{}
	for i := range questions {
		for j := range paras {
			want[fmt.Sprintf("Q%03dp%d：", i, j)] = true
		}
	}
	waitUntil(t, 30*time.Second, func() bool {
		seen := 0
		for _, m := range wc.Sent() {
			for tag := range want {
				if strings.Contains(m.Content, tag) {
					seen++
				}
			}
		}
		return seen >= len(want)
	})
	time.Sleep(300 * time.Millisecond) // a late duplicate would show now
	d.stop()

	// Every paragraph exactly once; each question's paragraphs in order;
	// each user's answers in question order; nothing but answers.
	sent := wc.Sent()
	count := map[string]int{}
	pos := map[string]int{} // tag -> index of the message carrying it
	for k, m := range sent {
		if m.Content == DefaultTexts().Resend || strings.Contains(m.Content, "参考编号") {
			t.Errorf("unexpected notice to %s: %q", m.ToUser, m.Content)
		}
		found := false
		for tag := range want {
			if c := strings.Count(m.Content, tag); c > 0 {
				count[tag] += c
				pos[tag] = k
				found = true
			}
		}
		if !found {
			t.Errorf("message %d to %s is not part of an answer: %q", k, m.ToUser, m.Content)
		}
	}
	for tag := range want {
		if count[tag] != 1 {
			t.Errorf("paragraph %s delivered %d times", tag, count[tag])
		}
	}
	for i := range questions {
		var all strings.Builder
		for k, m := range sent {
			if m.ToUser == user(i) && strings.Contains(m.Content, fmt.Sprintf("Q%03dp", i)) {
				all.WriteString(m.Content)
				if i >= users && pos[fmt.Sprintf("Q%03dp0：", i-users)] > k {
					t.Errorf("%s got the answer to question %d before the one to %d", user(i), i, i-users)
				}
			}
		}
		got := strings.Join(strings.Fields(all.String()), "")
		exp := strings.Join(strings.Fields("You asked: "+text[i]), "")
		if got != exp {
			t.Errorf("question %d: delivered\n%q\nwant\n%q", i, got, exp)
		}
	}
	if t.Failed() {
		t.Logf("last daemon log:\n%s", d.logTail(60))
	}
	t.Logf("%d questions from %d users, %d callbacks sent (%d acknowledged at the first try); %d kills %v; "+
		"%d messages delivered, %d message/send calls: %d copies dropped by WeCom's duplicate check",
		questions, users, sendCtr.Load(), firstTry.Load(), kills, killed, len(sent), proxy.sends.Load(),
		proxy.sends.Load()-int64(len(sent))-proxy.failed.Load())
}

// buildDaemonBinary builds the module's main package into dir.
func buildDaemonBinary(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "wecom-bridge")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/wecom-bridge/wecom-bridge").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// crashDaemon is the daemon binary as a child process.
type crashDaemon struct {
	t      *testing.T
	bin    string
	dir    string
	config string
	addr   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	n    int
}

func (d *crashDaemon) logPath(n int) string {
	return filepath.Join(d.dir, fmt.Sprintf("daemon-%02d.log", n))
}

// start runs the daemon and waits until it serves /healthz.
func (d *crashDaemon) start() {
	d.t.Helper()
	d.mu.Lock()
	d.n++
	logf, err := os.Create(d.logPath(d.n))
	if err != nil {
		d.mu.Unlock()
		d.t.Fatal(err)
	}
	cmd := exec.Command(d.bin, "-config", d.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		d.mu.Unlock()
		d.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + d.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			d.t.Fatalf("daemon exited at start-up:\n%s", d.logTail(30))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("daemon not ready in 10s:\n%s", d.logTail(30))
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone. It is safe to
// call from any goroutine and when the daemon is already dead.
func (d *crashDaemon) kill() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// stop ends the daemon gracefully (SIGTERM), or kills it after 10 s.
func (d *crashDaemon) stop() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		d.t.Error("daemon ignored SIGTERM for 10s")
		d.kill()
	}
}

// post sends one callback and returns the status, or 0 if the daemon is
// not reachable.
func (d *crashDaemon) post(cb *wecomtest.Callback) int {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Post(cb.Target("http://"+d.addr+"/wecom/helpdesk"), "text/xml", bytes.NewReader(cb.Body))
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (d *crashDaemon) logTail(n int) string {
	d.mu.Lock()
	path := d.logPath(d.n)
	d.mu.Unlock()
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// killProxy stands between the daemon and the fake WeCom. It counts
// message/send calls and, when armed, kills the daemon around one.
type killProxy struct {
	*httptest.Server
	target string
	d      *crashDaemon
	sends  atomic.Int64
	failed atomic.Int64 // sends the fake refused (none expected)

	mu     sync.Mutex
	mode   string
	killed chan struct{}
}

func newKillProxy(target string, d *crashDaemon) *killProxy {
	p := &killProxy{target: target, d: d}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	return p
}

func (p *killProxy) arm(mode string) {
	p.mu.Lock()
	p.mode = mode
	p.killed = make(chan struct{})
	p.mu.Unlock()
}

func (p *killProxy) waitKill(d time.Duration) bool {
	p.mu.Lock()
	ch := p.killed
	p.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// take returns the armed mode if this send should trigger it, disarming.
func (p *killProxy) take() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.mode
	p.mode = ""
	return m
}

func (p *killProxy) fired() {
	p.mu.Lock()
	close(p.killed)
	p.mu.Unlock()
}

func (p *killProxy) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	isSend := r.URL.Path == "/cgi-bin/message/send"
	mode := ""
	if isSend {
		p.sends.Add(1)
		if !bytes.Contains(out, []byte(`"errcode":0`)) {
			p.failed.Add(1)
		}
		mode = p.take()
	}
	if mode == killSendWindow {
		// WeCom has delivered the piece; the daemon dies before it
		// learns so.
		p.d.kill()
		p.fired()
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out)
	if mode == killAfterPiece {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		p.d.kill()
		p.fired()
	}
}
