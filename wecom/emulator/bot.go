package emulator

// This file is the fake WeCom long-connection endpoint for 智能机器人 (AI
// bots), BotServer. It is product code: `simulate -bot` and the bridge's
// tests run the real aibot.Client against it. Its fidelity is checked by
// running Tencent's own SDK (@wecom/aibot-node-sdk, .ci/aibot-sdk) against
// it in bot_sdk_test.go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
)

// Errcodes the fake bot server answers with. 846605 and 846608 are WeCom's
// (seen in the field); the others are this fake's choice, since WeCom does
// not document them.
const (
	BotCodeInvalidReqID  = aibot.CodeInvalidReqID
	BotCodeStreamExpired = aibot.CodeStreamExpired
	BotCodeInvalidParam  = 40058 // content too long, unknown chat, bad body
	BotCodeAuthFailed    = 40001 // wrong bot_id or secret
	BotCodeUnknownCmd    = 40008
)

// Defaults of BotConfig.
const (
	DefaultBotReplyWindow  = 5 * time.Second // first reply to a callback
	DefaultBotStreamWindow = 6 * time.Minute // stream updates from the message
	DefaultBotMaxInFlight  = 3               // messages per user per bot
	botSubscribeTimeout    = 10 * time.Second
	botReadLimit           = 1 << 20
)

// ErrBotNotConnected means the bot has no subscribed connection to push to.
var ErrBotNotConnected = errors.New("emulator: bot is not connected")

// ErrBotUserBusy means the user already has MaxInFlight messages in flight
// with this bot; WeCom would not deliver another one.
var ErrBotUserBusy = errors.New("emulator: user has too many messages in flight with this bot")

// BotConfig configures a BotServer.
type BotConfig struct {
	// Bots maps each bot_id to its long-connection secret.
	Bots map[string]string
	// AckDelay is how long the server waits before acking each reply
	// frame (real time). Zero acks at once.
	AckDelay time.Duration
	// ReplyWindow is how long after a push the first reply is accepted
	// (DefaultBotReplyWindow); later, the req_id is refused with 846605.
	ReplyWindow time.Duration
	// StreamWindow is how long after the message's create_time a stream
	// accepts updates (DefaultBotStreamWindow); later, 846608.
	StreamWindow time.Duration
	// MaxInFlight is the number of unanswered messages per user and bot
	// (DefaultBotMaxInFlight).
	MaxInFlight int
	// Now is the clock for the windows above; time.Now when nil.
	Now func() time.Time
	// Log gets connection events; nil discards.
	Log *slog.Logger
}

// BotFrame is one frame a bot sent, as recorded by the server.
type BotFrame struct {
	// At is the arrival time (real clock) and Seq the arrival order.
	At  time.Time
	Seq int
	// ConnID identifies the connection (1, 2, … in subscription order;
	// 0 before it subscribed).
	ConnID int
	BotID  string
	Cmd    string
	ReqID  string
	// Body is the frame's body; the secret of a subscribe is replaced by
	// "<redacted>".
	Body json.RawMessage
	// ErrCode and ErrMsg are the server's answer.
	ErrCode int
	ErrMsg  string
}

// BotBubble is what a user sees of one stream reply.
type BotBubble struct {
	StreamID string
	ReqID    string
	BotID    string
	ChatKey  string
	// Text is the content of the last accepted frame.
	Text string
	// Frames counts accepted frames; Finishes those with finish=true (1
	// when the bot behaves).
	Frames, Finishes int
	// FeedbackID is the feedback.id of the first frame, if any.
	FeedbackID string
}

// BotServer is a fake WeCom long-connection endpoint for AI bots: it accepts
// WebSocket connections, checks aibot_subscribe, answers pings, pushes
// callbacks on demand, acks every reply after AckDelay and enforces WeCom's
// rules (846605 for unknown, late or stale req_ids, 846608 past the stream
// window, content ≤ 20480 bytes, MaxInFlight messages per user, one live
// connection per bot with disconnected_event to the old one). It records
// every frame and keeps a view of what users see. It is safe for
// concurrent use.
type BotServer struct {
	cfg BotConfig
	log *slog.Logger

	subMu      sync.Mutex // serialises subscriptions
	mu         sync.Mutex
	ackDelay   time.Duration
	pingAcks   bool
	live       map[string]*botConn
	nextConnID int
	reqs       map[string]*botReq
	frames     []BotFrame
	bubbles    map[string]*BotBubble
	order      []string
	sent       map[string][]string
	welcomes   map[string]string
	violations []string
	subscribes map[string]int
	authFails  map[string]int
	pings      map[string]int
	chats      map[string]bool // botID + "\x00" + chat key
	changed    chan struct{}
	seq        int
	msgSeq     int

	srv *http.Server
	ln  net.Listener
}

type botConn struct {
	id      int
	botID   string
	ws      *websocket.Conn
	ctx     context.Context
	cancel  context.CancelFunc
	acks    chan botAck
	unacked map[string]int // guarded by BotServer.mu
	dead    bool
	// subscribed is closed once the subscribe ack is written: a push
	// waits for it, so that, as with WeCom, no callback reaches a bot
	// ahead of its subscribe ack (the bot would not take it).
	subscribed chan struct{}
}

type botAck struct {
	at    time.Time
	frame aibot.Frame
	done  func()
}

type botReq struct {
	reqID    string
	botID    string
	connID   int
	cmd      string
	msg      aibot.Message
	pushed   time.Time
	created  time.Time
	replied  bool
	finished bool
	expired  bool
	streamID string
	welcomed bool
}

// NewBotServer returns a BotServer for the bots in cfg.
func NewBotServer(cfg BotConfig) (*BotServer, error) {
	if len(cfg.Bots) == 0 {
		return nil, errors.New("emulator: bot server needs at least one bot")
	}
	if cfg.ReplyWindow <= 0 {
		cfg.ReplyWindow = DefaultBotReplyWindow
	}
	if cfg.StreamWindow <= 0 {
		cfg.StreamWindow = DefaultBotStreamWindow
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultBotMaxInFlight
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	bots := make(map[string]string, len(cfg.Bots))
	for k, v := range cfg.Bots {
		bots[k] = v
	}
	cfg.Bots = bots
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &BotServer{
		cfg: cfg, log: log, ackDelay: cfg.AckDelay, pingAcks: true,
		live: map[string]*botConn{}, reqs: map[string]*botReq{}, bubbles: map[string]*BotBubble{},
		sent: map[string][]string{}, welcomes: map[string]string{}, subscribes: map[string]int{},
		authFails: map[string]int{}, pings: map[string]int{}, chats: map[string]bool{},
		changed: make(chan struct{}),
	}, nil
}

// Listen serves the fake on addr (a loopback address such as
// "127.0.0.1:0") and returns its ws:// URL. Close stops it.
func (s *BotServer) Listen(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("emulator: bot server listen: %w", err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.srv, s.ln = srv, ln
	s.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("emulator: bot server stopped", "err", err)
		}
	}()
	return "ws://" + ln.Addr().String(), nil
}

// Close drops every connection and stops the listener started by Listen.
func (s *BotServer) Close() error {
	s.mu.Lock()
	conns := make([]*botConn, 0, len(s.live))
	for _, c := range s.live {
		conns = append(conns, c)
	}
	srv := s.srv
	s.mu.Unlock()
	for _, c := range conns {
		c.cancel()
		c.ws.CloseNow()
	}
	if srv != nil {
		return srv.Close()
	}
	return nil
}

// SetAckDelay changes the delay before each reply ack.
func (s *BotServer) SetAckDelay(d time.Duration) {
	s.mu.Lock()
	s.ackDelay = d
	s.mu.Unlock()
}

// SetPingAcks turns the answers to pings on or off (off makes a client's
// heartbeat fail).
func (s *BotServer) SetPingAcks(on bool) {
	s.mu.Lock()
	s.pingAcks = on
	s.mu.Unlock()
}

// ServeHTTP accepts a bot's WebSocket connection.
func (s *BotServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	ws.SetReadLimit(botReadLimit)
	ctx, cancel := context.WithCancel(context.Background())
	c := &botConn{ws: ws, ctx: ctx, cancel: cancel, acks: make(chan botAck, 4096), unacked: map[string]int{}, subscribed: make(chan struct{})}
	defer func() {
		cancel()
		ws.CloseNow()
		s.mu.Lock()
		c.dead = true
		if s.live[c.botID] == c {
			delete(s.live, c.botID)
		}
		s.notifyLocked()
		s.mu.Unlock()
	}()
	if !s.subscribe(c) {
		return
	}
	go s.ackLoop(c)
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			continue
		}
		f, err := aibot.ParseFrame(data)
		if err != nil || f.IsAck() {
			s.log.Warn("emulator: bot sent an unparsable frame", "err", err)
			continue
		}
		s.handle(c, f)
	}
}

// subscribe reads and checks the first frame.
func (s *BotServer) subscribe(c *botConn) bool {
	rctx, cancel := context.WithTimeout(c.ctx, botSubscribeTimeout)
	defer cancel()
	typ, data, err := c.ws.Read(rctx)
	if err != nil || typ != websocket.MessageText {
		return false
	}
	f, err := aibot.ParseFrame(data)
	if err != nil || f.Cmd != aibot.CmdSubscribe {
		s.log.Warn("emulator: first frame is not aibot_subscribe")
		c.ws.Close(websocket.StatusPolicyViolation, "first frame must be aibot_subscribe")
		return false
	}
	var body struct {
		BotID  string `json:"bot_id"`
		Secret string `json:"secret"`
	}
	_ = json.Unmarshal(f.Body, &body)
	redacted, _ := json.Marshal(map[string]string{"bot_id": body.BotID, "secret": "<redacted>"})

	// One subscription at a time: register, ack, then displace the old
	// connection. So a bot is registered before it sees its ack (it can be
	// pushed to as soon as it is online), and no connection is displaced
	// before it has seen its own ack.
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.mu.Lock()
	secret, known := s.cfg.Bots[body.BotID]
	ok := known && body.Secret == secret && secret != ""
	rec := BotFrame{At: time.Now(), BotID: body.BotID, Cmd: f.Cmd, ReqID: f.Headers.ReqID, Body: redacted}
	var old *botConn
	if ok {
		s.nextConnID++
		c.id, c.botID = s.nextConnID, body.BotID
		rec.ConnID = c.id
		s.subscribes[body.BotID]++
		old = s.live[body.BotID]
		s.live[body.BotID] = c
	} else {
		s.authFails[body.BotID]++
		rec.ErrCode, rec.ErrMsg = BotCodeAuthFailed, "invalid bot_id or secret"
	}
	s.recordLocked(rec)
	s.mu.Unlock()

	ack := aibot.Frame{Headers: aibot.Headers{ReqID: f.Headers.ReqID}, ErrCode: rec.ErrCode, ErrMsg: "ok"}
	if !ok {
		ack.ErrMsg = rec.ErrMsg
	}
	werr := s.writeFrame(c, ack)
	if ok {
		close(c.subscribed)
	}
	if old != nil {
		s.displace(old)
	}
	if werr != nil {
		return false
	}
	if !ok {
		c.ws.Close(websocket.StatusPolicyViolation, "authentication failed")
		return false
	}
	s.log.Info("emulator: bot subscribed", "bot_id", body.BotID, "conn", c.id)
	return true
}

// displace tells an old connection that another one subscribed, then
// closes it, as WeCom does.
func (s *BotServer) displace(old *botConn) {
	s.mu.Lock()
	s.msgSeq++
	n := s.msgSeq
	now := s.cfg.Now()
	old.dead = true // frames it still sends are ignored, as by a closed socket
	s.mu.Unlock()
	body, _ := json.Marshal(aibot.Message{
		MsgID: "emu_disc_" + strconv.Itoa(n), AIBotID: old.botID, CreateTime: now.Unix(),
		MsgType: aibot.MsgEvent, Event: &aibot.Event{EventType: aibot.EventDisconnected},
	})
	_ = s.writeFrame(old, aibot.Frame{Cmd: aibot.CmdEventCallback, Headers: aibot.Headers{ReqID: "emu_req_disc_" + strconv.Itoa(n)}, Body: body})
	// The close handshake runs on its own so that a bot slow to answer it
	// does not hold up the new subscription.
	go func() {
		old.ws.Close(websocket.StatusNormalClosure, "new connection established")
		old.cancel()
	}()
}

func (s *BotServer) writeFrame(c *botConn, f aibot.Frame) error {
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	return c.ws.Write(wctx, websocket.MessageText, data)
}

func (s *BotServer) ackLoop(c *botConn) {
	for {
		select {
		case <-c.ctx.Done():
			return
		case a := <-c.acks:
			if d := time.Until(a.at); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-c.ctx.Done():
					t.Stop()
					return
				}
			}
			if a.done != nil {
				a.done()
			}
			if err := s.writeFrame(c, a.frame); err != nil {
				return
			}
		}
	}
}

// handle applies WeCom's rules to one frame and queues its ack.
func (s *BotServer) handle(c *botConn, f *aibot.Frame) {
	s.mu.Lock()
	if c.dead {
		s.mu.Unlock()
		return
	}
	rec := BotFrame{At: time.Now(), ConnID: c.id, BotID: c.botID, Cmd: f.Cmd, ReqID: f.Headers.ReqID, Body: f.Body}
	if f.Cmd == aibot.CmdPing {
		s.pings[c.botID]++
		on := s.pingAcks
		s.recordLocked(rec)
		s.mu.Unlock()
		if on {
			_ = s.writeFrame(c, aibot.Frame{Headers: f.Headers, ErrMsg: "ok"})
		}
		return
	}
	if c.unacked[f.Headers.ReqID] > 0 {
		s.violations = append(s.violations, fmt.Sprintf("conn %d: %s on req_id %s sent before the previous frame was acked", c.id, f.Cmd, f.Headers.ReqID))
	}
	c.unacked[f.Headers.ReqID]++
	rec.ErrCode, rec.ErrMsg = s.applyLocked(c, f)
	s.recordLocked(rec)
	delay := s.ackDelay
	s.mu.Unlock()

	reqID := f.Headers.ReqID
	msg := rec.ErrMsg
	if rec.ErrCode == 0 {
		msg = "ok"
	}
	a := botAck{at: time.Now().Add(delay), frame: aibot.Frame{Headers: aibot.Headers{ReqID: reqID}, ErrCode: rec.ErrCode, ErrMsg: msg},
		done: func() {
			s.mu.Lock()
			if c.unacked[reqID]--; c.unacked[reqID] <= 0 {
				delete(c.unacked, reqID)
			}
			s.mu.Unlock()
		}}
	select {
	case c.acks <- a:
	case <-c.ctx.Done():
	}
}

func (s *BotServer) applyLocked(c *botConn, f *aibot.Frame) (int, string) {
	now := s.cfg.Now()
	switch f.Cmd {
	case aibot.CmdRespondMsg:
		r := s.reqs[f.Headers.ReqID]
		if code, msg := s.checkReqLocked(c, r, now); code != 0 {
			return code, msg
		}
		var b botStreamReply // the same body as a webhook-mode passive reply
		if err := json.Unmarshal(f.Body, &b); err != nil || b.MsgType == "" {
			return BotCodeInvalidParam, "invalid body"
		}
		if b.MsgType != aibot.MsgStream && b.MsgType != "stream_with_template_card" {
			if r.replied {
				return BotCodeInvalidReqID, "invalid req_id: already answered"
			}
			r.replied, r.finished = true, true
			return 0, ""
		}
		st := b.Stream
		if st == nil || st.ID == "" {
			return BotCodeInvalidParam, "stream.id is required"
		}
		if len(st.Content) > aibot.MaxContentBytes {
			return BotCodeInvalidParam, "content exceeds 20480 bytes"
		}
		if r.finished {
			return BotCodeInvalidReqID, "invalid req_id: stream already finished"
		}
		if now.Sub(r.created) > s.cfg.StreamWindow {
			r.expired = true
			return BotCodeStreamExpired, "stream message update expired"
		}
		if r.streamID == "" {
			r.streamID = st.ID
		}
		bb := s.bubbles[st.ID]
		if bb == nil {
			bb = &BotBubble{StreamID: st.ID, ReqID: r.reqID, BotID: r.botID, ChatKey: r.msg.ChatKey()}
			if st.Feedback != nil {
				bb.FeedbackID = st.Feedback.ID
			}
			s.bubbles[st.ID] = bb
			s.order = append(s.order, st.ID)
		}
		bb.Text = st.Content
		bb.Frames++
		r.replied = true
		if st.Finish {
			bb.Finishes++
			r.finished = true
		}
		return 0, ""
	case aibot.CmdRespondWelcome:
		r := s.reqs[f.Headers.ReqID]
		if code, msg := s.checkReqLocked(c, r, now); code != 0 {
			return code, msg
		}
		if r.msg.Event == nil || r.msg.Event.EventType != aibot.EventEnterChat || r.welcomed {
			return BotCodeInvalidReqID, "invalid req_id: not an unanswered enter_chat"
		}
		var b struct {
			Text *aibot.Text `json:"text"`
		}
		_ = json.Unmarshal(f.Body, &b)
		if b.Text != nil && len(b.Text.Content) > aibot.MaxContentBytes {
			return BotCodeInvalidParam, "content exceeds 20480 bytes"
		}
		r.welcomed, r.replied, r.finished = true, true, true
		if b.Text != nil {
			s.welcomes[r.reqID] = b.Text.Content
		} else {
			s.welcomes[r.reqID] = ""
		}
		return 0, ""
	case aibot.CmdRespondUpdate:
		r := s.reqs[f.Headers.ReqID]
		if code, msg := s.checkReqLocked(c, r, now); code != 0 {
			return code, msg
		}
		r.replied = true
		return 0, ""
	case aibot.CmdSendMsg:
		var b struct {
			ChatID   string      `json:"chatid"`
			MsgType  string      `json:"msgtype"`
			Markdown *aibot.Text `json:"markdown"`
		}
		if err := json.Unmarshal(f.Body, &b); err != nil || b.ChatID == "" {
			return BotCodeInvalidParam, "chatid is required"
		}
		if !s.chats[c.botID+"\x00"+b.ChatID] {
			return BotCodeInvalidParam, "chatid has not talked to this bot"
		}
		if b.MsgType == "markdown" {
			if b.Markdown == nil {
				return BotCodeInvalidParam, "markdown is required"
			}
			if len(b.Markdown.Content) > aibot.MaxContentBytes {
				return BotCodeInvalidParam, "content exceeds 20480 bytes"
			}
			s.sent[b.ChatID] = append(s.sent[b.ChatID], b.Markdown.Content)
		}
		return 0, ""
	}
	return BotCodeUnknownCmd, "unknown cmd"
}

// checkReqLocked applies the req_id rules common to every reply.
func (s *BotServer) checkReqLocked(c *botConn, r *botReq, now time.Time) (int, string) {
	switch {
	case r == nil:
		return BotCodeInvalidReqID, "invalid req_id"
	case r.connID != c.id:
		return BotCodeInvalidReqID, "invalid req_id: it belongs to another connection"
	case !r.replied && now.Sub(r.pushed) > s.cfg.ReplyWindow:
		r.expired = true
		return BotCodeInvalidReqID, "invalid req_id: no reply within the reply window"
	}
	return 0, ""
}

func (s *BotServer) recordLocked(f BotFrame) {
	s.seq++
	f.Seq = s.seq
	s.frames = append(s.frames, f)
	s.notifyLocked()
}

func (s *BotServer) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Push delivers a callback to the bot's live connection and returns its
// req_id. m.MsgType "event" goes out as aibot_event_callback, anything else
// as aibot_msg_callback. Empty MsgID, AIBotID, ChatType and CreateTime are
// filled in. A message (not an event) from a user who already has
// MaxInFlight messages in flight fails with ErrBotUserBusy.
func (s *BotServer) Push(botID string, m aibot.Message) (string, error) {
	s.mu.Lock()
	c := s.live[botID]
	if c == nil {
		s.mu.Unlock()
		return "", fmt.Errorf("%w: %s", ErrBotNotConnected, botID)
	}
	now := s.cfg.Now()
	s.msgSeq++
	n := s.msgSeq
	if m.MsgID == "" {
		m.MsgID = "emu_msg_" + strconv.Itoa(n)
	}
	if m.AIBotID == "" {
		m.AIBotID = botID
	}
	if m.MsgType == "" {
		m.MsgType = aibot.MsgText
	}
	if m.ChatType == "" {
		m.ChatType = aibot.ChatSingle
		if m.ChatID != "" {
			m.ChatType = aibot.ChatGroup
		}
	}
	if m.CreateTime == 0 {
		m.CreateTime = now.Unix()
	}
	cmd := aibot.CmdMsgCallback
	if m.MsgType == aibot.MsgEvent {
		cmd = aibot.CmdEventCallback
	} else if s.inFlightLocked(botID, m.From.UserID, now) >= s.cfg.MaxInFlight {
		s.mu.Unlock()
		return "", fmt.Errorf("%w: %s has %d", ErrBotUserBusy, m.From.UserID, s.cfg.MaxInFlight)
	}
	reqID := "emu_req_" + strconv.Itoa(n)
	s.reqs[reqID] = &botReq{reqID: reqID, botID: botID, connID: c.id, cmd: cmd, msg: m, pushed: now, created: time.Unix(m.CreateTime, 0)}
	s.chats[botID+"\x00"+m.ChatKey()] = true
	s.mu.Unlock()

	body, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("emulator: encode callback: %w", err)
	}
	select { // after its subscribe ack, never before
	case <-c.subscribed:
	case <-c.ctx.Done():
		return "", ErrBotNotConnected
	}
	if err := s.writeFrame(c, aibot.Frame{Cmd: cmd, Headers: aibot.Headers{ReqID: reqID}, Body: body}); err != nil {
		return "", fmt.Errorf("%w: push: %w", ErrBotNotConnected, err)
	}
	return reqID, nil
}

// PushGroupText delivers a group message from userID in chatID; text
// usually starts with the @mention, as WeCom sends it.
func (s *BotServer) PushGroupText(botID, chatID, userID, text string) (string, error) {
	return s.Push(botID, aibot.Message{MsgType: aibot.MsgText, ChatType: aibot.ChatGroup, ChatID: chatID,
		From: aibot.From{UserID: userID}, Text: &aibot.Text{Content: text}})
}

// PushText delivers a single-chat text message from userID.
func (s *BotServer) PushText(botID, userID, text string) (string, error) {
	return s.Push(botID, aibot.Message{MsgType: aibot.MsgText, From: aibot.From{UserID: userID}, Text: &aibot.Text{Content: text}})
}

// inFlightLocked counts the user's messages that still await an answer on
// a live connection within their windows. Requests on a dropped connection
// no longer count (they cannot be answered).
func (s *BotServer) inFlightLocked(botID, userID string, now time.Time) int {
	n := 0
	for _, r := range s.reqs {
		if r.botID != botID || r.cmd != aibot.CmdMsgCallback || r.msg.From.UserID != userID || r.finished || r.expired {
			continue
		}
		if c := s.live[botID]; c == nil || c.id != r.connID {
			continue
		}
		if !r.replied && now.Sub(r.pushed) > s.cfg.ReplyWindow {
			continue
		}
		if now.Sub(r.created) > s.cfg.StreamWindow {
			continue
		}
		n++
	}
	return n
}

// Drop closes the bot's live connection abruptly, as a network failure
// would. It reports whether there was one.
func (s *BotServer) Drop(botID string) bool {
	s.mu.Lock()
	c := s.live[botID]
	s.mu.Unlock()
	if c == nil {
		return false
	}
	c.cancel()
	c.ws.CloseNow()
	return true
}

// Connected reports whether the bot has a subscribed connection.
func (s *BotServer) Connected(botID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live[botID] != nil
}

// Wait blocks until cond returns true or ctx is done. cond is re-evaluated
// after every change the server sees (frames, connections); it may call
// the server's methods.
func (s *BotServer) Wait(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Subscribes is the number of accepted subscriptions of the bot.
func (s *BotServer) Subscribes(botID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subscribes[botID]
}

// AuthFailures is the number of refused subscriptions naming the bot.
func (s *BotServer) AuthFailures(botID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authFails[botID]
}

// Pings is the number of pings the bot sent.
func (s *BotServer) Pings(botID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pings[botID]
}

// Frames returns every frame bots sent, in arrival order, pings and
// subscribes included.
func (s *BotServer) Frames() []BotFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]BotFrame(nil), s.frames...)
}

// Replies returns the reply frames (everything but subscribe and ping) in
// arrival order.
func (s *BotServer) Replies() []BotFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []BotFrame
	for _, f := range s.frames {
		if f.Cmd != aibot.CmdSubscribe && f.Cmd != aibot.CmdPing {
			out = append(out, f)
		}
	}
	return out
}

// Bubble returns what the user sees of a stream.
func (s *BotServer) Bubble(streamID string) (BotBubble, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.bubbles[streamID]
	if b == nil {
		return BotBubble{}, false
	}
	return *b, true
}

// Bubbles returns every stream bubble in the order they appeared.
func (s *BotServer) Bubbles() []BotBubble {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]BotBubble, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, *s.bubbles[id])
	}
	return out
}

// Sent returns the proactive markdown messages (aibot_send_msg) accepted
// for a chat (a userid or a group chatid), in order.
func (s *BotServer) Sent(chatID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sent[chatID]...)
}

// Welcome returns the welcome text accepted for an enter_chat req_id.
func (s *BotServer) Welcome(reqID string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.welcomes[reqID]
	return w, ok
}

// Violations lists protocol violations seen, such as a frame sent on a
// req_id before the previous one was acked. A correct bot has none. A
// violation is only visible while the previous ack is still held back, so
// tests of ordering set AckDelay to more than the bot's gap between frames.
func (s *BotServer) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}
