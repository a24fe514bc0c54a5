package emulator_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

const (
	secret2 = "app-secret-0002"
	agent2  = int64(1000003)
)

type fixture struct {
	t    *testing.T
	s    *emulator.Server
	clk  *clock
	toks map[int64]string
}

func newFixture(t *testing.T, opts emulator.Options) *fixture {
	t.Helper()
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = 48 * time.Hour // tests move the clock by hours
	}
	s, err := emulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.AddApp(corpID, secret, agent)
	s.AddApp(corpID, secret2, agent2)
	s.AddUser("lisi")
	s.AddUser("ZhangSan")
	f := &fixture{t: t, s: s, clk: clk, toks: map[int64]string{}}
	f.toks[agent] = f.token(secret)
	f.toks[agent2] = f.token(secret2)
	return f
}

func (f *fixture) token(sec string) string {
	f.t.Helper()
	resp, err := http.Get(f.s.URL() + "/cgi-bin/gettoken?corpid=" + corpID + "&corpsecret=" + sec)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || a.AccessToken == "" {
		f.t.Fatalf("gettoken: %+v %v", a, err)
	}
	return a.AccessToken
}

// post sends body byte for byte as app agentID and requires errcode 0.
func (f *fixture) post(agentID int64, body string) answer {
	f.t.Helper()
	u := f.s.URL() + "/cgi-bin/message/send?access_token=" + url.QueryEscape(f.toks[agentID])
	resp, err := http.Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		f.t.Fatal(err)
	}
	if a.ErrCode != 0 || a.MsgID == "" {
		f.t.Fatalf("send %s: %+v", body, a)
	}
	return a
}

// text is a message/send body for one member.
func text(to string, agentID int64, content string) string {
	return fmt.Sprintf(`{"touser":%q,"msgtype":"text","agentid":%d,"text":{"content":%q}}`, to, agentID, content)
}

// counts checks how many messages were delivered and dropped so far.
func (f *fixture) counts(what string, sent, dropped int) {
	f.t.Helper()
	if s, d := len(f.s.Sent()), len(f.s.Dropped()); s != sent || d != dropped {
		f.t.Fatalf("%s: sent %d dropped %d, want %d and %d", what, s, d, sent, dropped)
	}
}

func (f *fixture) lastDrop(want emulator.DropReason) {
	f.t.Helper()
	d := f.s.Dropped()
	if len(d) == 0 || d[len(d)-1].Drop != want {
		f.t.Fatalf("last drop %+v, want reason %q", d, want)
	}
}

func TestDuplicateCheckComparesWholeJSON(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	body := `{"touser":"lisi","msgtype":"text","agentid":1000002,"text":{"content":"同一句话"},"enable_duplicate_check":1,"duplicate_check_interval":600}`
	first := f.post(agent, body)
	f.counts("first copy", 1, 0)

	// The identical bytes again: answered like a delivery, not delivered.
	again := f.post(agent, body)
	f.counts("identical bytes", 1, 1)
	f.lastDrop(emulator.DropDuplicate)
	if again.MsgID != first.MsgID {
		t.Errorf("duplicate answered msgid %q, want the first copy's %q", again.MsgID, first.MsgID)
	}
	if d := f.s.Dropped()[0]; d.ToUser != "lisi" || d.Content != "同一句话" || !d.DuplicateCheck {
		t.Errorf("dropped record %+v", d)
	}

	// The same JSON in another key order and spacing is the same request.
	reordered := ` { "duplicate_check_interval" : 600, "enable_duplicate_check":1, "text":{"content":"同一句话"},
		"agentid":1000002, "msgtype":"text", "touser":"lisi" } `
	f.post(agent, reordered)
	f.counts("reordered keys", 1, 2)
	f.lastDrop(emulator.DropDuplicate)

	// Any differing field makes a different request, the interval too.
	for _, other := range []string{
		`{"touser":"lisi","msgtype":"text","agentid":1000002,"text":{"content":"同一句话"},"enable_duplicate_check":1,"duplicate_check_interval":601}`,
		`{"touser":"lisi","msgtype":"text","agentid":1000002,"text":{"content":"同一句话"},"enable_duplicate_check":1,"duplicate_check_interval":600,"safe":0}`,
		`{"touser":"lisi","msgtype":"text","agentid":1000002,"text":{"content":"同一句话"}}`,
		`{"touser":"lisi","msgtype":"markdown","agentid":1000002,"markdown":{"content":"同一句话"},"enable_duplicate_check":1,"duplicate_check_interval":600}`,
		`{"touser":"zhangsan","msgtype":"text","agentid":1000002,"text":{"content":"同一句话"},"enable_duplicate_check":1,"duplicate_check_interval":600}`,
	} {
		f.post(agent, other)
	}
	f.counts("different requests", 6, 2)

	// A request without the check is never dropped, even when repeated.
	plain := text("lisi", agent, "同一句话")
	f.post(agent, plain)
	f.counts("repeat without the check", 7, 2)

	// The same body from another app is another app's request.
	f.post(agent2, strings.Replace(body, "1000002", "1000003", 1))
	f.counts("other app", 8, 2)
}

func TestDuplicateWindowExpires(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	body := `{"touser":"lisi","msgtype":"text","agentid":1000002,"text":{"content":"x"},"enable_duplicate_check":1,"duplicate_check_interval":600}`
	f.post(agent, body)
	f.clk.Add(599 * time.Second)
	f.post(agent, body)
	f.counts("599 s later", 1, 1)
	// The window starts at the accepted copy; the dropped one does not
	// extend it.
	f.clk.Add(time.Second)
	f.post(agent, body)
	f.counts("600 s after the first copy", 2, 1)
	// The new copy opens a new window.
	f.clk.Add(599 * time.Second)
	f.post(agent, body)
	f.counts("599 s after the second copy", 2, 2)
}

func TestDuplicateIntervalDefaultAndCap(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	def := `{"touser":"lisi","msgtype":"text","agentid":1000002,"text":{"content":"d"},"enable_duplicate_check":1}`
	long := `{"touser":"lisi","msgtype":"text","agentid":1000002,"text":{"content":"l"},"enable_duplicate_check":1,"duplicate_check_interval":86400}`
	f.post(agent, def)
	f.post(agent, long)
	f.clk.Add(1799 * time.Second)
	f.post(agent, def)
	f.counts("default 1800 s, 1799 s later", 2, 1)
	f.clk.Add(time.Second)
	f.post(agent, def)
	f.counts("default 1800 s, 1800 s later", 3, 1)
	f.clk.Add(4*time.Hour - 1800*time.Second - time.Second)
	f.post(agent, long)
	f.counts("interval cut to 4 h, just before", 3, 2)
	f.clk.Add(time.Second)
	f.post(agent, long)
	f.counts("interval cut to 4 h, at 4 h", 4, 2)
}

func TestMemberBudgetPerMinute(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	for i := range 30 {
		f.post(agent, text("lisi", agent, fmt.Sprint("m", i)))
	}
	f.counts("30 in one instant", 30, 0)
	f.post(agent, text("lisi", agent, "m30"))
	f.counts("the 31st", 30, 1)
	f.lastDrop(emulator.DropMinuteLimit)
	if d := f.s.Dropped()[0]; d.Content != "m30" || d.ToUser != "lisi" {
		t.Errorf("dropped %+v", d)
	}
	// Case does not make another member.
	f.post(agent, text("LiSi", agent, "m31"))
	f.counts("same member in other case", 30, 2)
	// Other members and other apps have budgets of their own.
	f.post(agent, text("zhangsan", agent, "z"))
	f.post(agent2, text("lisi", agent2, "other app"))
	f.counts("other member, other app", 32, 2)

	// Sliding window by arrival time: nothing frees before 60 s.
	f.clk.Add(59*time.Second + 999*time.Millisecond)
	f.post(agent, text("lisi", agent, "early"))
	f.counts("59.999 s later", 32, 3)
	f.clk.Add(time.Millisecond)
	for i := range 30 {
		f.post(agent, text("lisi", agent, fmt.Sprint("n", i)))
	}
	f.counts("60 s later: dropped ones never counted", 62, 3)
	f.post(agent, text("lisi", agent, "n30"))
	f.counts("60 s later, the 31st", 62, 4)
}

// TestMemberBudgetUnderConcurrentBurst: however the requests interleave,
// one member receives exactly the budget and the rest is dropped.
func TestMemberBudgetUnderConcurrentBurst(t *testing.T) {
	f := newFixture(t, emulator.Options{Now: time.Now})
	u := f.s.URL() + "/cgi-bin/message/send?access_token=" + url.QueryEscape(f.toks[agent])
	errs := make(chan error, 100)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			resp, err := http.Post(u, "application/json", strings.NewReader(text("lisi", agent, fmt.Sprint("burst ", i))))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var a answer
			if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || a.ErrCode != 0 {
				errs <- fmt.Errorf("answer %+v, %v", a, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	f.counts("100 at once", 30, 70)
	for _, d := range f.s.Dropped() {
		if d.Drop != emulator.DropMinuteLimit {
			t.Fatalf("dropped for %q", d.Drop)
		}
	}
}

func TestMemberBudgetSlides(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	for i := range 15 {
		f.post(agent, text("lisi", agent, fmt.Sprint("a", i)))
	}
	f.clk.Add(30 * time.Second)
	for i := range 15 {
		f.post(agent, text("lisi", agent, fmt.Sprint("b", i)))
	}
	f.clk.Add(29 * time.Second) // 59 s after the first burst
	f.post(agent, text("lisi", agent, "c"))
	f.counts("a fixed minute would have reset", 30, 1)
	f.clk.Add(time.Second) // the first burst leaves the window
	for i := range 15 {
		f.post(agent, text("lisi", agent, fmt.Sprint("d", i)))
	}
	f.counts("15 slots freed", 45, 1)
	f.post(agent, text("lisi", agent, "e"))
	f.counts("only 15", 45, 2)
	f.lastDrop(emulator.DropMinuteLimit)
}

func TestMemberBudgetPerHour(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	// One message every 2 s stays within 30 a minute.
	for i := range 1000 {
		f.post(agent, text("lisi", agent, fmt.Sprint("h", i)))
		f.clk.Add(2 * time.Second)
	}
	f.counts("1000 in 2000 s", 1000, 0)
	f.post(agent, text("lisi", agent, "h1000"))
	f.counts("the 1001st within the hour", 1000, 1)
	f.lastDrop(emulator.DropHourLimit)
	f.post(agent, text("zhangsan", agent, "z"))
	f.counts("another member", 1001, 1)
	// The first delivery was at t0; now is t0+2000 s. At t0+3600 s it
	// leaves the window and frees one slot.
	f.clk.Add(1599 * time.Second)
	f.post(agent, text("lisi", agent, "early"))
	f.counts("3599 s after the first", 1001, 2)
	f.clk.Add(time.Second)
	f.post(agent, text("lisi", agent, "freed"))
	f.post(agent, text("lisi", agent, "one too many"))
	f.counts("3600 s after the first", 1002, 3)
	f.lastDrop(emulator.DropHourLimit)
}

// TestBudgetDropStillOpensDuplicateWindow: the duplicate check accepts a
// request before the budget drops it, so resending the same JSON later
// does not help; only a different request reaches the member.
func TestBudgetDropStillOpensDuplicateWindow(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	var mu sync.Mutex
	var hooked []emulator.DropReason
	f.s.OnDrop(func(m emulator.SentMessage) {
		mu.Lock()
		hooked = append(hooked, m.Drop)
		mu.Unlock()
	})
	for i := range 30 {
		f.post(agent, text("lisi", agent, fmt.Sprint("m", i)))
	}
	body := `{"touser":"lisi","msgtype":"text","agentid":1000002,"text":{"content":"late"},"enable_duplicate_check":1,"duplicate_check_interval":600}`
	f.post(agent, body)
	f.lastDrop(emulator.DropMinuteLimit)
	f.clk.Add(time.Minute)
	f.post(agent, body)
	f.lastDrop(emulator.DropDuplicate)
	f.post(agent, strings.Replace(body, "600", "601", 1))
	f.counts("after a minute", 31, 2)
	mu.Lock()
	defer mu.Unlock()
	if len(hooked) != 2 || hooked[0] != emulator.DropMinuteLimit || hooked[1] != emulator.DropDuplicate {
		t.Errorf("OnDrop saw %v", hooked)
	}
}

func TestListenerOption(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := emulator.New(emulator.Options{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.URL() != "http://"+ln.Addr().String() {
		t.Fatalf("URL %q on listener %s", s.URL(), ln.Addr())
	}
	resp, err := http.Get(s.URL() + "/cgi-bin/gettoken")
	if err != nil {
		t.Fatal(err)
	}
	var a answer
	_ = json.NewDecoder(resp.Body).Decode(&a)
	resp.Body.Close()
	if a.ErrCode != 41002 {
		t.Errorf("gettoken without corpid: %+v", a)
	}
}

// TestNoTestCodeLinked keeps the package fit for the daemon binary.
func TestNoTestCodeLinked(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		thirdParty := strings.Contains(strings.SplitN(dep, "/", 2)[0], ".")
		if dep == "testing" || strings.HasPrefix(dep, "testing/") || strings.HasSuffix(dep, "/httptest") ||
			(thirdParty && strings.HasSuffix(dep, "test")) {
			t.Errorf("emulator depends on %s", dep)
		}
	}
}
