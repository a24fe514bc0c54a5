package aibot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

const (
	testBot    = "aibTESTBOT"
	testSecret = "s3cret-value-never-logged"
	testUser   = "lisi"
)

// fakeClock is the fake server's injectable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// sleeps records back-off delays and skips them (or blocks, when block is
// set, until ctx is done).
type sleeps struct {
	mu    sync.Mutex
	ds    []time.Duration
	block bool
	hook  func(n int)
}

func (s *sleeps) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.ds = append(s.ds, d)
	n, block, hook := len(s.ds), s.block, s.hook
	s.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return ctx.Err()
}

func (s *sleeps) Delays() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.ds...)
}

type rig struct {
	t      *testing.T
	ctx    context.Context
	srv    *emulator.BotServer
	url    string
	clock  *fakeClock
	client *aibot.Client
	sleeps *sleeps
	logs   *logBuf
	cbs    chan *aibot.Callback
	runErr chan error
	stop   context.CancelFunc
}

type rigOpts struct {
	server func(*emulator.BotConfig)
	client func(*aibot.Config)
	url    string
	block  bool
}

func newRig(t *testing.T, o rigOpts) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	r := &rig{t: t, ctx: ctx, clock: &fakeClock{t: time.Unix(1_750_000_000, 0)}, sleeps: &sleeps{block: o.block}, logs: &logBuf{}, cbs: make(chan *aibot.Callback, 64)}
	sc := emulator.BotConfig{Bots: map[string]string{testBot: testSecret}, Now: r.clock.Now}
	if o.server != nil {
		o.server(&sc)
	}
	srv, err := emulator.NewBotServer(sc)
	if err != nil {
		t.Fatal(err)
	}
	r.srv = srv
	if r.url, err = srv.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	cc := aibot.Config{BotID: testBot, Secret: testSecret, URL: r.url}
	if o.url != "" {
		cc.URL = o.url
	}
	if o.client != nil {
		o.client(&cc)
	}
	r.client, err = aibot.New(cc, aibot.Deps{
		Log:     slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Handler: func(_ context.Context, cb *aibot.Callback) { r.cbs <- cb },
		Jitter:  func(d time.Duration) time.Duration { return d },
		Sleep:   r.sleeps.Sleep,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) run() {
	ctx, stop := context.WithCancel(r.ctx)
	r.stop = stop
	r.runErr = make(chan error, 1)
	go func() { r.runErr <- r.client.Run(ctx) }()
	r.t.Cleanup(func() { r.halt() })
}

func (r *rig) halt() error {
	if r.stop == nil {
		return nil
	}
	r.stop()
	r.stop = nil
	select {
	case err := <-r.runErr:
		return err
	case <-time.After(10 * time.Second):
		r.t.Fatal("Run did not return after cancel")
	}
	return nil
}

func (r *rig) online() {
	r.t.Helper()
	if err := r.client.WaitOnline(r.ctx); err != nil {
		r.t.Fatalf("client never came online: %v\nlogs:\n%s", err, r.logs)
	}
}

func (r *rig) wait(what string, cond func() bool) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	if err := r.srv.Wait(ctx, cond); err != nil {
		r.t.Fatalf("waiting for %s: %v\nlogs:\n%s", what, err, r.logs)
	}
}

func (r *rig) callback() *aibot.Callback {
	r.t.Helper()
	select {
	case cb := <-r.cbs:
		return cb
	case <-time.After(10 * time.Second):
		r.t.Fatal("no callback delivered")
	}
	return nil
}

func (r *rig) pushText(text string) *aibot.Callback {
	r.t.Helper()
	reqID, err := r.srv.PushText(testBot, testUser, text)
	if err != nil {
		r.t.Fatal(err)
	}
	cb := r.callback()
	if cb.ReqID != reqID {
		r.t.Fatalf("callback req_id %s, pushed %s", cb.ReqID, reqID)
	}
	return cb
}

// poll waits for a client-side condition the fake server cannot signal.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestClientSubscribesAndStreams(t *testing.T) {
	r := newRig(t, rigOpts{server: func(c *emulator.BotConfig) { c.AckDelay = 5 * time.Millisecond }})
	r.run()
	r.online()
	if s := r.client.State(); s != aibot.StateOnline {
		t.Fatalf("state %v", s)
	}
	cb := r.pushText("@知识库助手 年假怎么算？")
	if cb.Cmd != aibot.CmdMsgCallback || cb.Message.MsgType != aibot.MsgText || cb.Message.From.UserID != testUser || cb.Message.Question() != "@知识库助手 年假怎么算？" || cb.Message.AIBotID != testBot {
		t.Fatalf("callback %+v / %+v", cb, cb.Message)
	}
	ctx := r.ctx
	if err := r.client.RespondStream(ctx, cb.ReqID, "s1", "正在思考…", false, "fb-1"); err != nil {
		t.Fatal(err)
	}
	if err := r.client.RespondStream(ctx, cb.ReqID, "s1", "年假按工龄计算。", false, ""); err != nil {
		t.Fatal(err)
	}
	if err := r.client.RespondStream(ctx, cb.ReqID, "s1", "年假按工龄计算。\n\n- 满1年：5天", true, ""); err != nil {
		t.Fatal(err)
	}
	if err := r.client.SendMarkdown(ctx, cb.Message.ChatKey(), "补充：详见员工手册"); err != nil {
		t.Fatal(err)
	}
	b, _ := r.srv.Bubble("s1")
	if b.Text != "年假按工龄计算。\n\n- 满1年：5天" || b.Frames != 3 || b.Finishes != 1 || b.FeedbackID != "fb-1" {
		t.Errorf("bubble %+v", b)
	}
	if got := r.srv.Sent(testUser); len(got) != 1 || got[0] != "补充：详见员工手册" {
		t.Errorf("sent %q", got)
	}
	// Finished: a further frame is refused.
	err := r.client.RespondStream(ctx, cb.ReqID, "s1", "again", true, "")
	if !errors.Is(err, aibot.ErrInvalidReqID) {
		t.Errorf("frame after finish: %v", err)
	}
	st := r.client.Stats()
	if st.Connects != 1 || st.Subscribes != 1 || st.Acks != 4 || st.AckErrors != 1 || st.FramesOut < 6 || st.FramesIn < 7 {
		t.Errorf("stats %+v", st)
	}
	if strings.Contains(r.logs.String(), testSecret) {
		t.Error("the secret reached the log")
	}
	if err := r.halt(); err != nil {
		t.Errorf("Run returned %v after cancel", err)
	}
	if s := r.client.State(); s != aibot.StateStopped {
		t.Errorf("state after Run %v", s)
	}
	if err := r.client.RespondStream(context.Background(), cb.ReqID, "s1", "x", false, ""); !errors.Is(err, aibot.ErrClosed) {
		t.Errorf("reply after Run: %v", err)
	}
}

func TestClientWrongSecretBacksOffAndLogsOncePerStep(t *testing.T) {
	const attempts = 7
	r := newRig(t, rigOpts{client: func(c *aibot.Config) { c.Secret = "wrong"; c.Name = "kbbot" }})
	done := make(chan struct{})
	var st aibot.Stats
	var last error
	r.sleeps.hook = func(n int) {
		if n == attempts {
			st, last = r.client.Stats(), r.client.LastError()
			close(done)
		}
	}
	r.run()
	<-done
	r.halt()
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	got := r.sleeps.Delays()[:attempts]
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("back-off delays %v, want 1s 2s 4s 8s 16s 30s 30s", got)
		}
	}
	if st.State != aibot.StateAuthFailed || st.AuthFailures < attempts || st.Subscribes != 0 {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(st.LastError, "Secret") || strings.Contains(st.LastError, "wrong") {
		t.Errorf("last error %q should name the Secret setting and not carry the value", st.LastError)
	}
	var auth *aibot.AuthError
	if !errors.As(last, &auth) || auth.Key != "bots.kbbot.secret" || auth.Code != emulator.BotCodeAuthFailed {
		t.Errorf("LastError %v, want an *AuthError naming bots.kbbot.secret", last)
	}
	logs := r.logs.String()
	if n := strings.Count(logs, "key=bots.kbbot.secret"); n < attempts || n > attempts+1 {
		t.Errorf("%d log lines name bots.kbbot.secret for %d attempts", n, attempts)
	}
	if n := strings.Count(logs, "subscribe refused"); n < attempts || n > attempts+1 {
		t.Errorf("%d 'subscribe refused' log lines for %d attempts:\n%s", n, attempts, logs)
	}
	if strings.Contains(logs, "secret=wrong") || strings.Contains(logs, `"wrong"`) {
		t.Error("the secret reached the log")
	}
	if n := r.srv.AuthFailures(testBot); n < attempts {
		t.Errorf("fake saw %d auth failures", n)
	}
}

func TestClientBackoffGrowsWhileServerIsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "ws://" + ln.Addr().String()
	ln.Close()
	r := newRig(t, rigOpts{url: dead})
	done := make(chan struct{})
	r.sleeps.hook = func(n int) {
		if n == 8 {
			close(done)
		}
	}
	r.run()
	<-done
	r.halt()
	got := r.sleeps.Delays()[:8]
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("delays %v", got)
		}
	}
	if st := r.client.Stats(); st.Connects != 0 || st.Errors < 8 || st.Reconnects < 8 {
		t.Errorf("stats %+v", st)
	}
}

func TestClientJitterDefaultStaysNearDelay(t *testing.T) {
	var mu sync.Mutex
	var ds []time.Duration
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "ws://" + ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := aibot.New(aibot.Config{BotID: testBot, Secret: testSecret, URL: dead}, aibot.Deps{
		Handler: func(context.Context, *aibot.Callback) {},
		Sleep: func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			ds = append(ds, d)
			if len(ds) == 6 {
				cancel()
			}
			return ctx.Err()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Run(ctx)
	base := []time.Duration{1, 2, 4, 8, 16, 30}
	for i, d := range ds[:6] {
		b := base[i] * time.Second
		if d < b*8/10 || d > b*12/10 {
			t.Errorf("delay %d = %v, want %v ±20%%", i, d, b)
		}
	}
}

func TestClientReconnectsAfterDropAnd846605(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.run()
	r.online()
	cb := r.pushText("第一个问题")
	if err := r.client.RespondStream(r.ctx, cb.ReqID, "s-drop", "第一帧", false, ""); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !r.srv.Drop(testBot) {
		t.Fatal("nothing to drop")
	}
	r.wait("resubscribe", func() bool { return r.srv.Subscribes(testBot) == 2 && r.srv.Connected(testBot) })
	r.online()
	t.Logf("reconnect after drop (back-off skipped): %v", time.Since(start))
	if d := r.sleeps.Delays(); len(d) != 1 || d[0] != time.Second {
		t.Errorf("delays after one drop %v, want [1s]", d)
	}
	err := r.client.RespondStream(r.ctx, cb.ReqID, "s-drop", "第一帧，第二帧", true, "")
	var apiErr *aibot.APIError
	if !errors.Is(err, aibot.ErrInvalidReqID) || !errors.As(err, &apiErr) || apiErr.Code != 846605 || apiErr.Cmd != aibot.CmdRespondMsg {
		t.Fatalf("old req_id after reconnect: %v", err)
	}
	// The rest goes out proactively.
	if err := r.client.SendMarkdown(r.ctx, cb.Message.ChatKey(), "第二帧"); err != nil {
		t.Fatal(err)
	}
	if b, _ := r.srv.Bubble("s-drop"); b.Text != "第一帧" || b.Finishes != 0 {
		t.Errorf("bubble %+v", b)
	}
	st := r.client.Stats()
	if st.Subscribes != 2 || st.Reconnects != 1 || st.State != aibot.StateOnline || st.LastError != "" {
		t.Errorf("stats %+v", st)
	}
}

func TestClientHeartbeatAndMissedPings(t *testing.T) {
	r := newRig(t, rigOpts{client: func(c *aibot.Config) { c.HeartbeatInterval = 40 * time.Millisecond; c.MaxMissedPings = 4 }})
	r.run()
	r.online()
	r.wait("pings", func() bool { return r.srv.Pings(testBot) >= 5 })
	if n := r.srv.Subscribes(testBot); n != 1 {
		t.Fatalf("acked pings must keep the connection: %d subscribes", n)
	}
	r.srv.SetPingAcks(false)
	r.wait("reconnect after missed pings", func() bool { return r.srv.Subscribes(testBot) >= 2 })
	r.srv.SetPingAcks(true)
	if st := r.client.Stats(); st.HeartbeatTimeouts < 1 {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(r.logs.String(), "heartbeat") {
		t.Errorf("the drop's log does not say why:\n%s", r.logs)
	}
}

func TestClientNeverSendsBeforeAck(t *testing.T) {
	r := newRig(t, rigOpts{server: func(c *emulator.BotConfig) { c.AckDelay = 20 * time.Millisecond }})
	r.run()
	r.online()
	cb := r.pushText("并发")
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Go(func() {
			errs <- r.client.RespondStream(r.ctx, cb.ReqID, "s-par", fmt.Sprintf("frame %d", i), false, "")
		})
	}
	// A caller that gives up early must not free the req_id before the ack.
	short, cancel := context.WithTimeout(r.ctx, 2*time.Millisecond)
	err := r.client.RespondStream(short, cb.ReqID, "s-par", "impatient", false, "")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("impatient caller: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if err := r.client.RespondStream(r.ctx, cb.ReqID, "s-par", "final", true, ""); err != nil {
		t.Fatal(err)
	}
	if v := r.srv.Violations(); len(v) > 0 {
		t.Fatalf("frame sent before the previous ack: %v", v)
	}
	if b, _ := r.srv.Bubble("s-par"); b.Frames < 9 || b.Finishes != 1 || b.Text != "final" {
		t.Errorf("bubble %+v", b)
	}
}

func TestStreamCoalescesAndFinishesOnce(t *testing.T) {
	r := newRig(t, rigOpts{server: func(c *emulator.BotConfig) { c.AckDelay = 10 * time.Millisecond }})
	r.run()
	r.online()
	cb := r.pushText("长回答")
	s := r.client.NewStream(r.ctx, cb.ReqID, "s-co", "fb-co")
	var text string
	for i := range 200 {
		text += fmt.Sprintf("词%d ", i)
		if err := s.Update(text); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			time.Sleep(3 * time.Millisecond)
		}
	}
	if err := s.Finish(r.ctx, text+"完"); err != nil {
		t.Fatal(err)
	}
	b, _ := r.srv.Bubble("s-co")
	if b.Text != text+"完" || b.Finishes != 1 || b.FeedbackID != "fb-co" || b.Frames < 2 || b.Frames > 60 || b.Frames != s.Frames() {
		t.Errorf("bubble frames=%d finishes=%d fb=%q stream frames=%d", b.Frames, b.Finishes, b.FeedbackID, s.Frames())
	}
	if s.Shown() != text+"完" {
		t.Error("Shown is not the final text")
	}
	if err := s.Update("more"); err == nil {
		t.Error("Update after Finish succeeded")
	}
	if v := r.srv.Violations(); len(v) > 0 {
		t.Fatal(v)
	}
	if err := s.Update(strings.Repeat("x", aibot.MaxContentBytes+1)); !errors.Is(err, aibot.ErrContentTooLarge) {
		t.Errorf("oversized update: %v", err)
	}
}

func TestStreamStopsAtExpiryAndReportsShown(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.run()
	r.online()
	cb := r.pushText("慢")
	s := r.client.NewStream(r.ctx, cb.ReqID, "s-exp", "")
	if err := s.Update("前半"); err != nil {
		t.Fatal(err)
	}
	r.wait("first frame", func() bool { b, _ := r.srv.Bubble("s-exp"); return b.Frames == 1 })
	poll(t, "first ack", func() bool { return s.Shown() == "前半" })
	r.clock.Advance(6*time.Minute + time.Second)
	err := s.Finish(r.ctx, "前半后半")
	if !errors.Is(err, aibot.ErrStreamExpired) {
		t.Fatalf("finish past the window: %v", err)
	}
	if s.Shown() != "前半" {
		t.Errorf("shown %q", s.Shown())
	}
}

func TestClientWindowsAndLimits(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.run()
	r.online()
	ctx := r.ctx

	late := r.pushText("迟到的回复")
	r.clock.Advance(5*time.Second + time.Millisecond)
	if err := r.client.RespondStream(ctx, late.ReqID, "s-late", "x", false, ""); !errors.Is(err, aibot.ErrInvalidReqID) {
		t.Errorf("first reply after 5 s: %v", err)
	}

	cb := r.pushText("超长")
	big := strings.Repeat("字", aibot.MaxContentBytes/3+1)
	frames := len(r.srv.Replies())
	if err := r.client.RespondStream(ctx, cb.ReqID, "s-big", big, false, ""); !errors.Is(err, aibot.ErrContentTooLarge) {
		t.Errorf("oversized stream: %v", err)
	}
	if err := r.client.SendMarkdown(ctx, testUser, big); !errors.Is(err, aibot.ErrContentTooLarge) {
		t.Errorf("oversized markdown: %v", err)
	}
	if n := len(r.srv.Replies()); n != frames {
		t.Errorf("oversized content reached the wire")
	}
	if err := r.client.RespondStream(ctx, cb.ReqID, "s-big", big[:aibot.MaxContentBytes-2], true, ""); err != nil {
		t.Errorf("content at the limit: %v", err)
	}
	if err := r.client.RespondStream(ctx, "no-such-req", "s-x", "x", false, ""); !errors.Is(err, aibot.ErrInvalidReqID) {
		t.Errorf("unknown req_id: %v", err)
	}
	if err := r.client.SendMarkdown(ctx, "stranger", "hi"); err == nil {
		t.Error("proactive message to a chat that never talked to the bot was accepted")
	}

	ev, err := r.srv.Push(testBot, aibot.Message{MsgType: aibot.MsgEvent, From: aibot.From{UserID: testUser}, Event: &aibot.Event{EventType: aibot.EventEnterChat}})
	if err != nil {
		t.Fatal(err)
	}
	wcb := r.callback()
	if wcb.ReqID != ev || wcb.Cmd != aibot.CmdEventCallback || wcb.Message.Event.EventType != aibot.EventEnterChat {
		t.Fatalf("event callback %+v", wcb)
	}
	if err := r.client.RespondWelcome(ctx, ev, "你好"); err != nil {
		t.Fatal(err)
	}
	if w, _ := r.srv.Welcome(ev); w != "你好" {
		t.Errorf("welcome %q", w)
	}
}

func TestClientAckTimeout(t *testing.T) {
	r := newRig(t, rigOpts{
		server: func(c *emulator.BotConfig) { c.AckDelay = 300 * time.Millisecond },
		client: func(c *aibot.Config) { c.AckTimeout = 40 * time.Millisecond },
	})
	r.run()
	r.online()
	cb := r.pushText("慢服务器")
	if err := r.client.RespondStream(r.ctx, cb.ReqID, "s-to", "a", false, ""); !errors.Is(err, aibot.ErrAckTimeout) {
		t.Fatalf("want ack timeout, got %v", err)
	}
	if st := r.client.Stats(); st.AckTimeouts != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestServerLimitsMessagesInFlightPerUser(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.run()
	r.online()
	var cbs []*aibot.Callback
	for i := range 3 {
		cbs = append(cbs, r.pushText(fmt.Sprint("问题", i)))
	}
	if _, err := r.srv.PushText(testBot, testUser, "第四个"); !errors.Is(err, emulator.ErrBotUserBusy) {
		t.Fatalf("4th message in flight: %v", err)
	}
	if _, err := r.srv.PushText(testBot, "wangwu", "别人"); err != nil {
		t.Fatalf("another user is not limited: %v", err)
	}
	r.callback()
	if err := r.client.RespondStream(r.ctx, cbs[0].ReqID, "s-f", "答", true, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := r.srv.PushText(testBot, testUser, "第四个"); err != nil {
		t.Fatalf("after one finished: %v", err)
	}
}

func TestClientDisplacedDoesNotFight(t *testing.T) {
	r := newRig(t, rigOpts{block: true})
	r.run()
	r.online()
	// Another process subscribes for the same bot.
	other, err := aibot.New(aibot.Config{BotID: testBot, Secret: testSecret, URL: r.url}, aibot.Deps{Handler: func(context.Context, *aibot.Callback) {}})
	if err != nil {
		t.Fatal(err)
	}
	octx, ostop := context.WithCancel(r.ctx)
	odone := make(chan error, 1)
	go func() { odone <- other.Run(octx) }()
	defer func() { ostop(); <-odone }()
	if err := other.WaitOnline(r.ctx); err != nil {
		t.Fatal(err)
	}
	poll(t, "displaced state", func() bool { return r.client.State() == aibot.StateDisplaced })
	if s := r.client.State(); s != aibot.StateDisplaced {
		t.Fatalf("displaced client state %v", s)
	}
	time.Sleep(100 * time.Millisecond)
	if n := r.srv.Subscribes(testBot); n != 2 {
		t.Fatalf("%d subscriptions: the displaced client fought back", n)
	}
	if d := r.sleeps.Delays(); len(d) != 1 || d[0] != aibot.DefaultDisplacedDelay {
		t.Errorf("displaced delay %v, want [%v]", d, aibot.DefaultDisplacedDelay)
	}
	if err := r.client.LastError(); !errors.Is(err, aibot.ErrDisplaced) {
		t.Errorf("LastError %v, want ErrDisplaced", err)
	}
	if st := r.client.Stats(); st.Displaced != 1 || st.Errors != 0 {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(r.logs.String(), "another connection subscribed") {
		t.Errorf("no clear warning:\n%s", r.logs)
	}
	if other.State() != aibot.StateOnline {
		t.Errorf("the new connection is %v", other.State())
	}
}

func TestClientDisplacedStaysDownWhenConfigured(t *testing.T) {
	r := newRig(t, rigOpts{client: func(c *aibot.Config) { c.DisplacedDelay = -1 }})
	r.run()
	r.online()
	other, _ := aibot.New(aibot.Config{BotID: testBot, Secret: testSecret, URL: r.url}, aibot.Deps{Handler: func(context.Context, *aibot.Callback) {}})
	octx, ostop := context.WithCancel(r.ctx)
	defer ostop()
	go other.Run(octx)
	select {
	case err := <-r.runErr:
		r.stop = nil
		if !errors.Is(err, aibot.ErrDisplaced) {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after displacement")
	}
}

func TestConfigLogValueRedactsSecret(t *testing.T) {
	var b bytes.Buffer
	slog.New(slog.NewTextHandler(&b, nil)).Info("cfg", "bot", aibot.Config{Name: "kb", BotID: "aib1", Secret: testSecret, URL: "wss://u:p@h/x?k=v"})
	if strings.Contains(b.String(), testSecret) || strings.Contains(b.String(), "k=v") || strings.Contains(b.String(), "u:p") || !strings.Contains(b.String(), "aib1") {
		t.Errorf("log %s", b.String())
	}
}

func TestNewValidates(t *testing.T) {
	_, err := aibot.New(aibot.Config{URL: "http://x"}, aibot.Deps{})
	if err == nil {
		t.Fatal("empty config accepted")
	}
	for _, want := range []string{"bot_id", "secret", "ws_url", "handler"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestClientGroupMessage(t *testing.T) {
	r := newRig(t, rigOpts{})
	if _, err := r.srv.PushText(testBot, testUser, "nobody listens"); !errors.Is(err, emulator.ErrBotNotConnected) {
		t.Fatalf("push without a connection: %v", err)
	}
	r.run()
	r.online()
	reqID, err := r.srv.PushGroupText(testBot, "wrGROUP1", testUser, "@知识库助手 报销流程？")
	if err != nil {
		t.Fatal(err)
	}
	cb := r.callback()
	m := cb.Message
	if cb.ReqID != reqID || m.ChatType != aibot.ChatGroup || m.ChatID != "wrGROUP1" || m.ChatKey() != "wrGROUP1" || m.From.UserID != testUser {
		t.Fatalf("%+v", m)
	}
	if err := r.client.RespondStream(r.ctx, cb.ReqID, "s-g", "见财务制度", true, ""); err != nil {
		t.Fatal(err)
	}
	if err := r.client.SendMarkdown(r.ctx, m.ChatKey(), "补充"); err != nil {
		t.Fatal(err)
	}
	if b, _ := r.srv.Bubble("s-g"); b.ChatKey != "wrGROUP1" || b.Text != "见财务制度" {
		t.Errorf("bubble %+v", b)
	}
	if s := r.srv.Sent("wrGROUP1"); len(s) != 1 {
		t.Errorf("sent %q", s)
	}
}

func TestClientDisplacedDelayDoubles(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.run()
	for round := 1; round <= 5; round++ {
		r.wait("client online", func() bool { return r.srv.Subscribes(testBot) == 2*round-1 && r.srv.Connected(testBot) })
		// Another process takes the bot over.
		other, err := aibot.New(aibot.Config{BotID: testBot, Secret: testSecret, URL: r.url}, aibot.Deps{
			Handler: func(context.Context, *aibot.Callback) {},
			Sleep: func(ctx context.Context, _ time.Duration) error {
				<-ctx.Done()
				return ctx.Err()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		octx, ostop := context.WithCancel(r.ctx)
		odone := make(chan struct{})
		go func() { _ = other.Run(octx); close(odone) }()
		poll(t, "displacement", func() bool { return len(r.sleeps.Delays()) == round })
		ostop()
		<-odone
	}
	want := []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute, time.Hour}
	got := r.sleeps.Delays()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("displaced delays %v, want %v\n%s", got, want, r.logs)
		}
	}
}
