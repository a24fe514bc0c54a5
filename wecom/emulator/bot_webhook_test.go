package emulator_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

const (
	botWHToken = "QDG6eK"
	botWHKey   = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
)

// botWebhookDaemon answers like a bridge in webhook mode: a placeholder
// first, then longer text on each refresh, finish on the finishAt-th one.
type botWebhookDaemon struct {
	t        *testing.T
	wh       *aibot.Webhook
	finishAt int
	garble   bool

	mu        sync.Mutex
	refreshes map[string]int
	seen      []*aibot.Message
}

func (d *botWebhookDaemon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.Method == http.MethodGet {
		plain, err := d.wh.VerifyURL(q)
		if err != nil {
			http.Error(w, "bad", http.StatusForbidden)
			return
		}
		_, _ = w.Write(plain)
		return
	}
	body, _ := io.ReadAll(r.Body)
	m, err := d.wh.Open(q, body)
	if err != nil {
		d.t.Errorf("daemon could not open the emulator's callback: %v", err)
		http.Error(w, "bad", http.StatusBadRequest)
		return
	}
	d.mu.Lock()
	d.seen = append(d.seen, m)
	var id, text, fb string
	finish := false
	switch m.MsgType {
	case aibot.MsgText:
		id, text, fb = "st-"+m.MsgID, "正在思考…", "fb-"+m.MsgID
	case aibot.MsgStream:
		id = m.Stream.ID
		d.refreshes[id]++
		n := d.refreshes[id]
		text = "答案第" + string(rune('0'+n)) + "段"
		finish = n >= d.finishAt
	}
	d.mu.Unlock()
	if id == "" {
		return // empty 200
	}
	out, err := d.wh.StreamReply(id, text, finish, fb, q.Get("timestamp"), q.Get("nonce"))
	if err != nil {
		d.t.Error(err)
	}
	if d.garble {
		out = []byte(`{"encrypt":"AAAA","msgsignature":"0","timestamp":"1","nonce":"n"}`)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(out)
}

func newBotWebhookPair(t *testing.T, finishAt int, now func() time.Time) (*botWebhookDaemon, *emulator.BotWebhook) {
	t.Helper()
	wh, err := aibot.NewWebhook(botWHToken, botWHKey)
	if err != nil {
		t.Fatal(err)
	}
	d := &botWebhookDaemon{t: t, wh: wh, finishAt: finishAt, refreshes: map[string]int{}}
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	e, err := emulator.NewBotWebhook(emulator.BotWebhookConfig{URL: srv.URL + "/wecom/kbbot", Token: botWHToken, EncodingAESKey: botWHKey,
		BotID: "aibWH", RefreshInterval: 2 * time.Millisecond, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return d, e
}

func TestBotWebhookVerifiesAndFollowsRefreshes(t *testing.T) {
	d, e := newBotWebhookPair(t, 3, nil)
	ctx := context.Background()
	if err := e.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := e.Send(ctx, aibot.Message{ChatID: "wrG", From: aibot.From{UserID: "U1"}, Text: &aibot.Text{Content: "@bot 年假"}})
	if err != nil {
		t.Fatal(err)
	}
	if b.Text != "答案第3段" || b.Frames != 4 || b.Finishes != 1 || b.ChatKey != "wrG" || b.FeedbackID == "" {
		t.Errorf("bubble %+v", b)
	}
	d.mu.Lock()
	seen := append([]*aibot.Message(nil), d.seen...)
	d.mu.Unlock()
	if len(seen) != 4 || seen[0].MsgType != aibot.MsgText || seen[0].ChatType != aibot.ChatGroup {
		t.Fatalf("daemon saw %d callbacks", len(seen))
	}
	for _, m := range seen[1:] {
		if m.MsgType != aibot.MsgStream || m.Stream.ID != b.StreamID || m.From.UserID != "U1" || m.ChatID != "wrG" || m.MsgID == seen[0].MsgID {
			t.Errorf("refresh callback %+v", m)
		}
	}
	// An event answered with an empty body shows nothing.
	nb, err := e.Send(ctx, aibot.Message{MsgType: aibot.MsgEvent, From: aibot.From{UserID: "U1"}, Event: &aibot.Event{EventType: aibot.EventEnterChat}})
	if err != nil || nb.StreamID != "" {
		t.Errorf("event: %+v %v", nb, err)
	}
	if len(e.Bubbles()) != 1 {
		t.Errorf("bubbles %+v", e.Bubbles())
	}
}

func TestBotWebhookStopsAtTheStreamWindow(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_750_000_000, 0)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(10 * time.Second) // each look at the clock is 10 s later
		return now
	}
	_, e := newBotWebhookPair(t, 1<<30, clock)
	b, err := e.Send(context.Background(), aibot.Message{From: aibot.From{UserID: "U1"}, Text: &aibot.Text{Content: "慢"}})
	if !errors.Is(err, emulator.ErrBotStreamUnfinished) || b.Finishes != 0 || b.Frames < 10 {
		t.Fatalf("%+v %v", b, err)
	}
}

func TestBotWebhookRejectsForgedReply(t *testing.T) {
	d, e := newBotWebhookPair(t, 1, nil)
	d.garble = true
	if _, err := e.Send(context.Background(), aibot.Message{From: aibot.From{UserID: "U1"}, Text: &aibot.Text{Content: "x"}}); err == nil {
		t.Fatal("a reply with a bad signature was accepted")
	}
}
