package emulator_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

// botRawConn is a hand-driven bot connection, to send what aibot.Client never
// would.
type botRawConn struct {
	t    *testing.T
	ctx  context.Context
	conn *websocket.Conn
}

func dialBotRaw(t *testing.T, ctx context.Context, url string) *botRawConn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return &botRawConn{t: t, ctx: ctx, conn: c}
}

func (b *botRawConn) send(cmd, reqID string, body any) {
	b.t.Helper()
	raw, _ := json.Marshal(body)
	data, _ := json.Marshal(aibot.Frame{Cmd: cmd, Headers: aibot.Headers{ReqID: reqID}, Body: raw})
	if err := b.conn.Write(b.ctx, websocket.MessageText, data); err != nil {
		b.t.Fatal(err)
	}
}

func (b *botRawConn) recv() *aibot.Frame {
	b.t.Helper()
	_, data, err := b.conn.Read(b.ctx)
	if err != nil {
		b.t.Fatalf("read: %v", err)
	}
	f, err := aibot.ParseFrame(data)
	if err != nil {
		b.t.Fatalf("server sent %s: %v", data, err)
	}
	return f
}

func (b *botRawConn) ack(reqID string) int {
	b.t.Helper()
	for {
		f := b.recv()
		if f.IsAck() && f.Headers.ReqID == reqID {
			return f.ErrCode
		}
	}
}

func TestBotServerRules(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := emulator.NewBotServer(emulator.BotConfig{Bots: map[string]string{"b1": "s1", "b2": "s2"}})
	if err != nil {
		t.Fatal(err)
	}
	url, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	// The first frame must be aibot_subscribe.
	bad := dialBotRaw(t, ctx, url)
	bad.send(aibot.CmdPing, "ping_1", nil)
	if _, _, err := bad.conn.Read(ctx); err == nil {
		t.Error("a connection that did not subscribe first stayed open")
	}

	b1 := dialBotRaw(t, ctx, url)
	b1.send(aibot.CmdSubscribe, "aibot_subscribe_1", map[string]string{"bot_id": "b1", "secret": "s1"})
	if code := b1.ack("aibot_subscribe_1"); code != 0 {
		t.Fatalf("subscribe errcode %d", code)
	}
	b2 := dialBotRaw(t, ctx, url)
	b2.send(aibot.CmdSubscribe, "aibot_subscribe_2", map[string]string{"bot_id": "b2", "secret": "s2"})
	if code := b2.ack("aibot_subscribe_2"); code != 0 {
		t.Fatalf("subscribe errcode %d", code)
	}

	b1.send(aibot.CmdPing, "ping_x", nil)
	if code := b1.ack("ping_x"); code != 0 {
		t.Errorf("ping errcode %d", code)
	}
	b1.send("aibot_unknown", "u1", map[string]string{})
	if code := b1.ack("u1"); code != emulator.BotCodeUnknownCmd {
		t.Errorf("unknown cmd errcode %d", code)
	}

	// b1's callback cannot be answered on b2's connection.
	req, err := srv.PushText("b1", "u", "q")
	if err != nil {
		t.Fatal(err)
	}
	if f := b1.recv(); f.Cmd != aibot.CmdMsgCallback || f.Headers.ReqID != req {
		t.Fatalf("pushed frame %+v", f)
	}
	stream := func(content string, finish bool) any {
		return map[string]any{"msgtype": "stream", "stream": map[string]any{"id": "S", "finish": finish, "content": content}}
	}
	b2.send(aibot.CmdRespondMsg, req, stream("x", false))
	if code := b2.ack(req); code != emulator.BotCodeInvalidReqID {
		t.Errorf("reply from another bot's connection: %d", code)
	}
	b1.send(aibot.CmdRespondMsg, req, map[string]any{"msgtype": "stream", "stream": map[string]any{"content": "no id"}})
	if code := b1.ack(req); code != emulator.BotCodeInvalidParam {
		t.Errorf("stream without id: %d", code)
	}
	// Welcome on a message (not enter_chat) is refused.
	b1.send(aibot.CmdRespondWelcome, req, map[string]any{"msgtype": "text", "text": map[string]string{"content": "hi"}})
	if code := b1.ack(req); code != emulator.BotCodeInvalidReqID {
		t.Errorf("welcome on a message: %d", code)
	}
	// Two frames without waiting: both applied, one violation recorded
	// (detection needs an ack delay longer than the client's send gap).
	srv.SetAckDelay(50 * time.Millisecond)
	b1.send(aibot.CmdRespondMsg, req, stream("a", false))
	b1.send(aibot.CmdRespondMsg, req, stream("ab", true))
	b1.ack(req)
	b1.ack(req)
	if v := srv.Violations(); len(v) != 1 {
		t.Errorf("violations %q, want one", v)
	}
	srv.SetAckDelay(0)

	ev, err := srv.Push("b1", aibot.Message{MsgType: aibot.MsgEvent, From: aibot.From{UserID: "u"}, Event: &aibot.Event{EventType: aibot.EventEnterChat}})
	if err != nil {
		t.Fatal(err)
	}
	if f := b1.recv(); f.Cmd != aibot.CmdEventCallback {
		t.Fatalf("event frame %+v", f)
	}
	for i, want := range []int{0, emulator.BotCodeInvalidReqID} {
		b1.send(aibot.CmdRespondWelcome, ev, map[string]any{"msgtype": "text", "text": map[string]string{"content": "欢迎"}})
		if code := b1.ack(ev); code != want {
			t.Errorf("welcome %d: errcode %d, want %d", i, code, want)
		}
	}

	// A second subscription for b1 displaces the first.
	b1b := dialBotRaw(t, ctx, url)
	b1b.send(aibot.CmdSubscribe, "aibot_subscribe_3", map[string]string{"bot_id": "b1", "secret": "s1"})
	if code := b1b.ack("aibot_subscribe_3"); code != 0 {
		t.Fatal(code)
	}
	f := b1.recv()
	m, err := aibot.ParseMessage(f.Body)
	if f.Cmd != aibot.CmdEventCallback || err != nil || m.Event.EventType != aibot.EventDisconnected || m.AIBotID != "b1" {
		t.Fatalf("old connection got %+v (%v)", f, err)
	}
	if _, _, err := b1.conn.Read(ctx); err == nil {
		t.Error("the displaced connection stayed open")
	}
	if !srv.Connected("b1") || !srv.Connected("b2") || srv.Subscribes("b1") != 2 {
		t.Error("connections after displacement")
	}
	if !srv.Drop("b2") || srv.Drop("nobody") {
		t.Error("Drop")
	}
	if err := srv.Wait(ctx, func() bool { return !srv.Connected("b2") }); err != nil {
		t.Fatal(err)
	}
}

func TestNewBotServerNeedsBots(t *testing.T) {
	if _, err := emulator.NewBotServer(emulator.BotConfig{}); err == nil {
		t.Error("no bots accepted")
	}
}
