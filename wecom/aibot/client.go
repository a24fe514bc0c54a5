package aibot

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// Defaults of Config.
const (
	DefaultURL               = "wss://openws.work.weixin.qq.com"
	DefaultHeartbeatInterval = 30 * time.Second // as Tencent's SDK
	DefaultMaxMissedPings    = 2                // SDK: maxMissedPong
	DefaultAckTimeout        = 5 * time.Second  // SDK: replyAckTimeout
	DefaultDialTimeout       = 10 * time.Second // dial + subscribe ack
	DefaultBackoffMin        = 1 * time.Second
	DefaultBackoffMax        = 30 * time.Second
	DefaultDisplacedDelay    = 5 * time.Minute
	maxDisplacedDelay        = time.Hour
	inboxSize                = 256
)

// Config configures a Client.
type Config struct {
	// Name is the bot's name in the daemon's config ([[bots]] name). It is
	// only used to name the config key in errors and logs
	// (bots.<Name>.secret); optional.
	Name string
	// BotID is the bot's id (智能机器人 → BotID). Required.
	BotID string
	// Secret is the long-connection Secret. Required; never logged.
	Secret string
	// URL is the WebSocket endpoint, DefaultURL when empty. ws:// is
	// allowed for proxies and tests.
	URL string
	// HeartbeatInterval is the time between pings (DefaultHeartbeatInterval).
	HeartbeatInterval time.Duration
	// MaxMissedPings unanswered pings make the connection count as dead
	// (DefaultMaxMissedPings): it is closed and redialled.
	MaxMissedPings int
	// AckTimeout bounds the wait for a reply's ack (DefaultAckTimeout).
	AckTimeout time.Duration
	// DialTimeout bounds the dial plus the subscribe ack (DefaultDialTimeout).
	DialTimeout time.Duration
	// BackoffMin and BackoffMax bound the exponential back-off between
	// connection attempts (1 s, doubling, capped at 30 s by default).
	// Auth failures back off the same way.
	BackoffMin, BackoffMax time.Duration
	// DisplacedDelay is how long the Client stays down after WeCom
	// reported that another connection subscribed for this bot
	// (disconnected_event). It doubles with each consecutive displacement,
	// up to one hour, so two daemons sharing a bot do not fight over it.
	// Zero means DefaultDisplacedDelay; negative means stay down: Run
	// returns an error wrapping ErrDisplaced.
	DisplacedDelay time.Duration
}

// LogValue keeps the Secret out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.Name), slog.String("bot_id", c.BotID),
		slog.String("secret", "<redacted>"), slog.String("url", redactURL(c.URL)))
}

// secretKey names the config key of the Secret.
func (c Config) secretKey() string {
	if c.Name == "" {
		return ""
	}
	return "bots." + c.Name + ".secret"
}

// Deps are a Client's collaborators. Handler is required.
type Deps struct {
	// Log receives connection events; message contents only at debug.
	Log *slog.Logger
	// Handler gets every message and event callback except
	// disconnected_event, one at a time in arrival order, from a goroutine
	// of its own (acks keep flowing while it runs). It should record the
	// callback and return; a Handler that waits for replies delays the next
	// callbacks, and once 256 callbacks queue up, reading (acks included)
	// stalls. Run returns only after the Handler has returned; callbacks
	// read before shutdown are still delivered, with Run's (cancelled) ctx,
	// so the Handler can record them.
	Handler Handler
	// HTTPClient dials the WebSocket; http.DefaultClient when nil.
	HTTPClient *http.Client
	// Jitter spreads a back-off delay; by default ±20 %. Tests pass the
	// identity.
	Jitter func(time.Duration) time.Duration
	// Sleep waits between connection attempts; it returns early with
	// ctx.Err(). Tests replace it to record the delays and skip them.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock for Stats and Callback.Received; time.Now when nil.
	Now func() time.Time
}

// Handler receives callbacks. ctx is Run's context.
type Handler func(ctx context.Context, cb *Callback)

// Callback is one message or event pushed by WeCom.
type Callback struct {
	// Cmd is CmdMsgCallback or CmdEventCallback.
	Cmd string
	// ReqID is the req_id to answer on (RespondStream, RespondWelcome). It
	// dies with the connection it came on.
	ReqID string
	// Message is the parsed body.
	Message *Message
	// Body is the raw JSON body, for durable storage.
	Body json.RawMessage
	// Received is when the frame was read.
	Received time.Time
}

// State is the connection state, for /healthz and metrics.
type State int32

// States.
const (
	StateIdle State = iota
	StateConnecting
	StateOnline
	StateBackoff
	StateAuthFailed
	StateDisplaced
	StateStopped
)

// String returns a lower-case name.
func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateConnecting:
		return "connecting"
	case StateOnline:
		return "online"
	case StateBackoff:
		return "backoff"
	case StateAuthFailed:
		return "auth_failed"
	case StateDisplaced:
		return "displaced"
	case StateStopped:
		return "stopped"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Stats are a Client's counters since New.
type Stats struct {
	State State
	// Connects counts successful dials; Subscribes accepted subscriptions;
	// Reconnects back-off waits after a drop or a failure.
	Connects, Subscribes, Reconnects int64
	// AuthFailures counts refused subscriptions, Displaced
	// disconnected_events, HeartbeatTimeouts connections closed after
	// missed pings.
	AuthFailures, Displaced, HeartbeatTimeouts int64
	// FramesIn and FramesOut count frames read and written (pings and
	// acks included).
	FramesIn, FramesOut int64
	// Acks counts reply acks with errcode 0, AckErrors those with another
	// errcode, AckTimeouts replies that got no ack in time.
	Acks, AckErrors, AckTimeouts int64
	// Errors counts connection attempts and sessions that ended in an
	// error, and frames that could not be parsed.
	Errors int64
	// LastError is the latest connection error, without secrets; "" after
	// a successful subscribe.
	LastError string
}

// Client is one bot's long connection to WeCom. Create it with New and run
// it with Run; the reply methods are safe for concurrent use.
type Client struct {
	cfg     Config
	log     *slog.Logger
	handler Handler
	httpc   *http.Client
	jitter  func(time.Duration) time.Duration
	sleep   func(context.Context, time.Duration) error
	now     func() time.Time

	running atomic.Bool
	state   atomic.Int32

	mu      sync.Mutex
	sess    *session
	online  chan struct{} // closed while sess != nil
	lanes   map[string]*lane
	lastErr error

	connects, subscribes, reconnects       atomic.Int64
	authFailures, displaced, heartbeatDead atomic.Int64
	framesIn, framesOut                    atomic.Int64
	acks, ackErrors, ackTimeouts, errs     atomic.Int64
}

// New validates cfg and returns a Client. It does not connect.
func New(cfg Config, deps Deps) (*Client, error) {
	var errs []error
	if cfg.BotID == "" {
		errs = append(errs, errors.New("bot_id is required"))
	}
	if cfg.Secret == "" {
		errs = append(errs, errors.New("secret is required"))
	}
	if cfg.URL == "" {
		cfg.URL = DefaultURL
	}
	if u, err := url.Parse(cfg.URL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		errs = append(errs, errors.New("ws_url must be a ws:// or wss:// URL"))
	}
	if deps.Handler == nil {
		errs = append(errs, errors.New("a callback handler is required"))
	}
	for _, d := range []struct {
		p   *time.Duration
		def time.Duration
	}{
		{&cfg.HeartbeatInterval, DefaultHeartbeatInterval},
		{&cfg.AckTimeout, DefaultAckTimeout},
		{&cfg.DialTimeout, DefaultDialTimeout},
		{&cfg.BackoffMin, DefaultBackoffMin},
		{&cfg.BackoffMax, DefaultBackoffMax},
		{&cfg.DisplacedDelay, DefaultDisplacedDelay},
	} {
		if *d.p == 0 {
			*d.p = d.def
		}
	}
	if cfg.HeartbeatInterval < 0 || cfg.AckTimeout < 0 || cfg.DialTimeout < 0 || cfg.BackoffMin < 0 || cfg.BackoffMax < cfg.BackoffMin {
		errs = append(errs, errors.New("durations must be positive and backoff_max >= backoff_min"))
	}
	if cfg.MaxMissedPings <= 0 {
		cfg.MaxMissedPings = DefaultMaxMissedPings
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("aibot: %w: %w", wecom.ErrInvalidConfig, errors.Join(errs...))
	}
	c := &Client{
		cfg:     cfg,
		log:     deps.Log,
		handler: deps.Handler,
		httpc:   deps.HTTPClient,
		jitter:  deps.Jitter,
		sleep:   deps.Sleep,
		now:     deps.Now,
		online:  make(chan struct{}),
		lanes:   make(map[string]*lane),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("bot_id", cfg.BotID)
	if c.jitter == nil {
		c.jitter = func(d time.Duration) time.Duration {
			return d - d/5 + time.Duration(rand.Int64N(int64(2*d/5)+1))
		}
	}
	if c.sleep == nil {
		c.sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// State returns the connection state.
func (c *Client) State() State { return State(c.state.Load()) }

// Stats returns a snapshot of the counters.
func (c *Client) Stats() Stats {
	last := ""
	if err := c.LastError(); err != nil {
		last = err.Error()
	}
	return Stats{
		State:             c.State(),
		Connects:          c.connects.Load(),
		Subscribes:        c.subscribes.Load(),
		Reconnects:        c.reconnects.Load(),
		AuthFailures:      c.authFailures.Load(),
		Displaced:         c.displaced.Load(),
		HeartbeatTimeouts: c.heartbeatDead.Load(),
		FramesIn:          c.framesIn.Load(),
		FramesOut:         c.framesOut.Load(),
		Acks:              c.acks.Load(),
		AckErrors:         c.ackErrors.Load(),
		AckTimeouts:       c.ackTimeouts.Load(),
		Errors:            c.errs.Load(),
		LastError:         last,
	}
}

// LastError is the error that ended the latest connection attempt or
// session (an *AuthError when WeCom refused the Secret, an error wrapping
// ErrDisplaced after a disconnected_event), or nil once subscribed. Use it
// for health checks.
func (c *Client) LastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// WaitOnline blocks until the Client is subscribed or ctx is done.
func (c *Client) WaitOnline(ctx context.Context) error {
	c.mu.Lock()
	ch := c.online
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run connects, subscribes and keeps the connection up until ctx is done,
// then returns nil. After a drop it redials with jittered exponential
// back-off (BackoffMin doubling to BackoffMax); a refused subscribe (an
// *AuthError, logged once per attempt) backs off the same way. After a
// disconnected_event it stays down for DisplacedDelay (doubling per
// consecutive displacement), or returns an error wrapping ErrDisplaced when
// DisplacedDelay is negative. Run may be called again after it returns,
// but not concurrently.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("aibot: Run is already running")
	}
	defer c.running.Store(false)
	defer c.state.Store(int32(StateStopped))

	inbox := make(chan *Callback, inboxSize)
	var wg sync.WaitGroup
	wg.Go(func() {
		for cb := range inbox {
			c.dispatch(ctx, cb)
		}
	})
	defer wg.Wait()
	defer close(inbox)

	var failures, authFailures, displacements int
	for {
		subscribed, err := c.session(ctx, inbox)
		if ctx.Err() != nil {
			return nil
		}
		if subscribed {
			failures, authFailures = 0, 0
		}
		c.setLastError(err)
		var delay time.Duration
		var auth *AuthError
		switch {
		case errors.Is(err, ErrDisplaced):
			displacements++
			c.displaced.Add(1)
			c.state.Store(int32(StateDisplaced))
			if c.cfg.DisplacedDelay < 0 {
				c.log.Warn("aibot: 另一个连接订阅了同一个机器人，本连接已被企业微信断开，不再重连 / another connection subscribed for this bot; staying down",
					"likely_cause", "a second wecom-bridge daemon, or the same bot configured in another tool")
				return fmt.Errorf("aibot: bot %s: %w", c.cfg.BotID, ErrDisplaced)
			}
			delay = c.cfg.DisplacedDelay
			for i := 1; i < displacements && delay < maxDisplacedDelay; i++ {
				delay *= 2
			}
			delay = min(delay, maxDisplacedDelay)
			c.log.Warn("aibot: 另一个连接订阅了同一个机器人，本连接已被企业微信断开 / another connection subscribed for this bot; not fighting over it",
				"likely_cause", "a second wecom-bridge daemon, or the same bot configured in another tool",
				"retry_in", delay.String(), "displacements", displacements)
		case errors.As(err, &auth):
			displacements = 0
			authFailures++
			delay = c.backoff(authFailures)
			c.state.Store(int32(StateAuthFailed))
			c.log.Error("aibot: subscribe refused: 机器人 Secret 或 BotID 错误 / wrong bot secret or BotID",
				"key", auth.Key, "errcode", auth.Code, "errmsg", auth.Msg,
				"attempt", authFailures, "retry_in", delay.String())
		default:
			displacements = 0
			failures++
			delay = c.backoff(failures)
			c.state.Store(int32(StateBackoff))
			c.log.Warn("aibot: connection lost", "err", err, "attempt", failures, "retry_in", delay.String())
		}
		c.reconnects.Add(1)
		if c.sleep(ctx, c.jitter(delay)) != nil {
			return nil
		}
	}
}

func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.BackoffMin
	for i := 1; i < n && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	return min(d, c.cfg.BackoffMax)
}

func (c *Client) setLastError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr = err
}

func (c *Client) dispatch(ctx context.Context, cb *Callback) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("aibot: callback handler panicked", "panic", fmt.Sprint(r), "req_id", cb.ReqID)
		}
	}()
	c.handler(ctx, cb)
}

// session is one subscribed connection.
type session struct {
	conn    *websocket.Conn
	ctx     context.Context
	cancel  context.CancelCauseFunc
	missed  atomic.Int32
	mu      sync.Mutex
	pending map[string]chan *Frame
}

var errHeartbeat = errors.New("aibot: no heartbeat ack, connection considered dead")

// session dials, subscribes and serves one connection until it ends.
func (c *Client) session(ctx context.Context, inbox chan<- *Callback) (subscribed bool, err error) {
	c.state.Store(int32(StateConnecting))
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	conn, resp, err := websocket.Dial(dctx, c.cfg.URL, &websocket.DialOptions{HTTPClient: c.httpc})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		c.errs.Add(1)
		return false, fmt.Errorf("aibot: dial %s: %w", redactURL(c.cfg.URL), err)
	}
	defer conn.CloseNow()
	c.connects.Add(1)
	conn.SetReadLimit(MaxFrameSize)

	reqID := newReqID(CmdSubscribe)
	body, _ := json.Marshal(struct {
		BotID  string `json:"bot_id"`
		Secret string `json:"secret"`
	}{c.cfg.BotID, c.cfg.Secret})
	if err := c.write(dctx, conn, &Frame{Cmd: CmdSubscribe, Headers: Headers{ReqID: reqID}, Body: body}); err != nil {
		c.errs.Add(1)
		return false, fmt.Errorf("aibot: send subscribe: %w", err)
	}
	for {
		f, err := c.read(dctx, conn)
		if err != nil {
			c.errs.Add(1)
			return false, fmt.Errorf("aibot: wait for subscribe ack: %w", err)
		}
		if f != nil && f.Cmd == CmdEventCallback {
			if m, err := ParseMessage(f.Body); err == nil && m.Event.EventType == EventDisconnected {
				return false, ErrDisplaced
			}
		}
		if f == nil || !f.IsAck() || f.Headers.ReqID != reqID {
			continue
		}
		if f.ErrCode != 0 {
			c.authFailures.Add(1)
			c.errs.Add(1)
			conn.CloseNow()
			return false, &AuthError{Code: f.ErrCode, Msg: f.ErrMsg, Key: c.cfg.secretKey()}
		}
		break
	}
	cancel()
	c.subscribes.Add(1)

	sctx, scancel := context.WithCancelCause(ctx)
	defer scancel(nil)
	s := &session{conn: conn, ctx: sctx, cancel: scancel, pending: make(map[string]chan *Frame)}
	c.mu.Lock()
	c.sess = s
	c.lastErr = nil
	c.state.Store(int32(StateOnline))
	close(c.online)
	c.mu.Unlock()
	c.log.Info("aibot: subscribed")
	defer func() {
		c.mu.Lock()
		c.sess = nil
		c.online = make(chan struct{})
		c.mu.Unlock()
	}()

	var wg sync.WaitGroup
	defer wg.Wait()
	defer scancel(nil)
	wg.Go(func() { c.heartbeat(s) })

	err = c.readLoop(s, inbox)
	if cause := context.Cause(sctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	if !errors.Is(err, ErrDisplaced) && ctx.Err() == nil {
		c.errs.Add(1)
	}
	return true, err
}

func (c *Client) readLoop(s *session, inbox chan<- *Callback) error {
	for {
		f, err := c.read(s.ctx, s.conn)
		if err != nil {
			return fmt.Errorf("aibot: read: %w", err)
		}
		if f == nil {
			continue
		}
		if f.IsAck() {
			c.onAck(s, f)
			continue
		}
		switch f.Cmd {
		case CmdMsgCallback, CmdEventCallback:
		default:
			c.log.Debug("aibot: ignoring frame with unknown cmd", "cmd", f.Cmd)
			continue
		}
		m, err := ParseMessage(f.Body)
		if err != nil {
			c.errs.Add(1)
			c.log.Warn("aibot: dropping unparsable callback", "req_id", f.Headers.ReqID, "err", err)
			continue
		}
		if m.MsgType == MsgEvent && m.Event.EventType == EventDisconnected {
			s.cancel(ErrDisplaced)
			s.conn.CloseNow()
			return ErrDisplaced
		}
		c.log.Debug("aibot: callback", "req_id", f.Headers.ReqID, "msgid", m.MsgID, "msgtype", m.MsgType)
		cb := &Callback{Cmd: f.Cmd, ReqID: f.Headers.ReqID, Message: m, Body: f.Body, Received: c.now()}
		select {
		case inbox <- cb:
		case <-s.ctx.Done():
			return context.Cause(s.ctx)
		}
	}
}

func (c *Client) onAck(s *session, f *Frame) {
	id := f.Headers.ReqID
	s.mu.Lock()
	ch, ok := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	switch {
	case ok:
		if f.ErrCode == 0 {
			c.acks.Add(1)
		} else {
			c.ackErrors.Add(1)
		}
		ch <- f
	case strings.HasPrefix(id, CmdPing):
		if f.ErrCode != 0 {
			c.log.Warn("aibot: heartbeat ack error", "errcode", f.ErrCode, "errmsg", f.ErrMsg)
			return
		}
		s.missed.Store(0)
	default:
		c.log.Debug("aibot: ack for no pending frame", "req_id", id, "errcode", f.ErrCode)
	}
}

func (c *Client) heartbeat(s *session) {
	t := time.NewTicker(c.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if n := int(s.missed.Load()); n >= c.cfg.MaxMissedPings {
			c.heartbeatDead.Add(1)
			s.cancel(fmt.Errorf("%w (%d pings unanswered)", errHeartbeat, n))
			s.conn.CloseNow()
			return
		}
		s.missed.Add(1)
		wctx, cancel := context.WithTimeout(s.ctx, c.cfg.AckTimeout)
		err := c.write(wctx, s.conn, &Frame{Cmd: CmdPing, Headers: Headers{ReqID: newReqID(CmdPing)}})
		cancel()
		if err != nil {
			s.cancel(fmt.Errorf("aibot: send ping: %w", err))
			return
		}
	}
}

// read returns the next frame, or nil for a frame it could not parse.
func (c *Client) read(ctx context.Context, conn *websocket.Conn) (*Frame, error) {
	typ, data, err := conn.Read(ctx)
	if err != nil {
		return nil, err
	}
	c.framesIn.Add(1)
	if typ != websocket.MessageText {
		return nil, nil
	}
	f, err := ParseFrame(data)
	if err != nil {
		c.errs.Add(1)
		c.log.Warn("aibot: ignoring unparsable frame", "err", err)
		return nil, nil
	}
	return f, nil
}

func (c *Client) write(ctx context.Context, conn *websocket.Conn, f *Frame) error {
	data, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("aibot: encode frame: %w", err)
	}
	if err := conn.Write(ctx, websocket.MessageText, data); err != nil {
		return err
	}
	c.framesOut.Add(1)
	return nil
}

// lane serialises the frames of one req_id.
type lane struct {
	ch   chan struct{}
	refs int
}

func (c *Client) acquire(ctx context.Context, reqID string) (func(), error) {
	c.mu.Lock()
	l := c.lanes[reqID]
	if l == nil {
		l = &lane{ch: make(chan struct{}, 1)}
		c.lanes[reqID] = l
	}
	l.refs++
	c.mu.Unlock()
	drop := func() {
		c.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(c.lanes, reqID)
		}
		c.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; drop() }, nil
	case <-ctx.Done():
		drop()
		return nil, ctx.Err()
	}
}

// Respond sends one frame with the given cmd, req_id and body and waits for
// its ack. Frames for one req_id go strictly one at a time: the next is
// written only after the previous one's ack or its AckTimeout, even when
// the caller of the previous one gave up (ctx done). A non-zero errcode is
// an *APIError; no ack in time is ErrAckTimeout.
func (c *Client) Respond(ctx context.Context, cmd, reqID string, body any) (*Frame, error) {
	if reqID == "" || len(reqID) > maxReqIDBytes {
		return nil, fmt.Errorf("aibot: %w: req_id must be 1..%d bytes", wecom.ErrInvalidConfig, maxReqIDBytes)
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("aibot: encode %s body: %w", cmd, err)
	}
	if len(raw) > MaxFrameSize {
		return nil, tooLarge(cmd+" body", len(raw), MaxFrameSize)
	}
	release, err := c.acquire(ctx, reqID)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		release()
		if !c.running.Load() {
			return nil, ErrClosed
		}
		return nil, ErrNotConnected
	}
	ch := make(chan *Frame, 1)
	s.mu.Lock()
	s.pending[reqID] = ch
	s.mu.Unlock()
	unregister := func() {
		s.mu.Lock()
		if s.pending[reqID] == ch {
			delete(s.pending, reqID)
		}
		s.mu.Unlock()
	}
	// The write must not use ctx: cancelling a write closes the connection.
	wctx, cancel := context.WithTimeout(s.ctx, c.cfg.AckTimeout)
	err = c.write(wctx, s.conn, &Frame{Cmd: cmd, Headers: Headers{ReqID: reqID}, Body: raw})
	cancel()
	if err != nil {
		unregister()
		release()
		return nil, fmt.Errorf("%w: write %s: %w", ErrConnectionLost, cmd, err)
	}
	type result struct {
		f   *Frame
		err error
	}
	res := make(chan result, 1)
	go func() {
		defer release()
		t := time.NewTimer(c.cfg.AckTimeout)
		defer t.Stop()
		select {
		case f := <-ch:
			if f.ErrCode != 0 {
				res <- result{f, &APIError{Cmd: cmd, ReqID: reqID, Code: f.ErrCode, Msg: f.ErrMsg}}
				return
			}
			res <- result{f, nil}
		case <-t.C:
			unregister()
			c.ackTimeouts.Add(1)
			res <- result{nil, fmt.Errorf("%w: %s after %v", ErrAckTimeout, cmd, c.cfg.AckTimeout)}
		case <-s.ctx.Done():
			unregister()
			res <- result{nil, ErrConnectionLost}
		}
	}()
	select {
	case r := <-res:
		return r.f, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// StreamBody is the body of a stream reply (msgtype "stream").
type StreamBody struct {
	MsgType string       `json:"msgtype"`
	Stream  StreamFields `json:"stream"`
}

// StreamFields are the stream part of a StreamBody.
type StreamFields struct {
	ID       string          `json:"id"`
	Finish   bool            `json:"finish"`
	Content  string          `json:"content"`
	MsgItem  json.RawMessage `json:"msg_item,omitempty"`
	Feedback *FeedbackRef    `json:"feedback,omitempty"`
}

// FeedbackRef is the feedback id on a stream's first frame.
type FeedbackRef struct {
	ID string `json:"id"`
}

// NewStreamBody builds a stream reply body and checks WeCom's limits:
// content ≤ MaxContentBytes (ErrContentTooLarge), feedback id ≤
// MaxFeedbackIDBytes, a non-empty stream id.
func NewStreamBody(streamID, content string, finish bool, feedbackID string) (*StreamBody, error) {
	if streamID == "" || len(streamID) > maxIDBytes {
		return nil, fmt.Errorf("aibot: %w: stream id must be 1..%d bytes", wecom.ErrInvalidConfig, maxIDBytes)
	}
	if len(content) > MaxContentBytes {
		return nil, fmt.Errorf("%w (stream content is %d bytes)", ErrContentTooLarge, len(content))
	}
	if len(feedbackID) > MaxFeedbackIDBytes {
		return nil, tooLarge("feedback id", len(feedbackID), MaxFeedbackIDBytes)
	}
	b := &StreamBody{MsgType: MsgStream, Stream: StreamFields{ID: streamID, Finish: finish, Content: content}}
	if feedbackID != "" {
		b.Stream.Feedback = &FeedbackRef{ID: feedbackID}
	}
	return b, nil
}

// RespondStream sends one stream frame on a callback's req_id
// (aibot_respond_msg) and waits for its ack. content is the whole text so
// far (Markdown), not a delta; feedbackID, if any, belongs on the first
// frame only. Content over MaxContentBytes is an error, not truncated.
// Errors: *APIError (errors.Is ErrInvalidReqID / ErrStreamExpired),
// ErrAckTimeout, ErrNotConnected, ErrConnectionLost, ErrContentTooLarge.
func (c *Client) RespondStream(ctx context.Context, reqID, streamID, content string, finish bool, feedbackID string) error {
	b, err := NewStreamBody(streamID, content, finish, feedbackID)
	if err != nil {
		return err
	}
	_, err = c.Respond(ctx, CmdRespondMsg, reqID, b)
	return err
}

// RespondWelcome answers an enter_chat event with a text welcome
// (aibot_respond_welcome_msg). WeCom accepts it only within 5 s of the
// event.
func (c *Client) RespondWelcome(ctx context.Context, reqID, content string) error {
	if len(content) > MaxContentBytes {
		return fmt.Errorf("%w (welcome is %d bytes)", ErrContentTooLarge, len(content))
	}
	_, err := c.Respond(ctx, CmdRespondWelcome, reqID, struct {
		MsgType string `json:"msgtype"`
		Text    Text   `json:"text"`
	}{MsgText, Text{Content: content}})
	return err
}

// SendBody is the body of a proactive markdown message (aibot_send_msg).
type SendBody struct {
	ChatID   string `json:"chatid"`
	MsgType  string `json:"msgtype"`
	Markdown Text   `json:"markdown"`
}

// SendMarkdown sends a proactive markdown message (aibot_send_msg) to a
// chat: the user's userid for a single chat, the group's chatid for a group
// (Message.ChatKey). It needs no callback, so it is how an answer continues
// after its req_id is gone. Content over MaxContentBytes is an error.
func (c *Client) SendMarkdown(ctx context.Context, chatID, content string) error {
	if chatID == "" || len(chatID) > maxIDBytes {
		return fmt.Errorf("aibot: %w: chatid must be 1..%d bytes", wecom.ErrInvalidConfig, maxIDBytes)
	}
	if len(content) > MaxContentBytes {
		return fmt.Errorf("%w (markdown is %d bytes)", ErrContentTooLarge, len(content))
	}
	_, err := c.Respond(ctx, CmdSendMsg, newReqID(CmdSendMsg), SendBody{ChatID: chatID, MsgType: "markdown", Markdown: Text{Content: content}})
	return err
}

// newReqID returns "{prefix}_{unix ms}_{8 hex}", the SDK's format.
func newReqID(prefix string) string {
	var b [4]byte
	v := rand.Uint32()
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	return prefix + "_" + strconv.FormatInt(time.Now().UnixMilli(), 10) + "_" + hex.EncodeToString(b[:])
}

// redactURL drops any query and userinfo from a URL before it is logged.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
