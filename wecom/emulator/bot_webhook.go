package emulator

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
)

// Defaults of BotWebhookConfig.
const (
	DefaultBotRefreshInterval = time.Second
	botWebhookMaxResponse     = 64 << 10
)

// BotWebhookConfig configures a BotWebhook.
type BotWebhookConfig struct {
	// URL is the bot's callback URL on the daemon ({public_url}/wecom/NAME).
	URL string
	// Token and EncodingAESKey are the bot's webhook settings.
	Token, EncodingAESKey string
	// BotID fills aibotid in the callbacks.
	BotID string
	// HTTPClient posts the callbacks; a client with a 5 s timeout when nil
	// (WeCom gives up on a callback after about 5 s).
	HTTPClient *http.Client
	// RefreshInterval is the pause between stream refresh callbacks
	// (DefaultBotRefreshInterval).
	RefreshInterval time.Duration
	// StreamWindow is how long refreshes go on without finish=true
	// (DefaultBotStreamWindow), measured on Now.
	StreamWindow time.Duration
	// Now is the clock for StreamWindow and create_time; time.Now when nil.
	Now func() time.Time
}

// BotWebhook plays WeCom's side of a bot in webhook mode (API 模式：URL
// 回调): it sends the GET verification, posts encrypted message and event
// callbacks, opens the encrypted passive replies and, while a stream is
// unfinished, keeps posting stream refresh callbacks (msgtype "stream")
// and shows the latest content, as WeCom does. It is safe for concurrent
// use.
type BotWebhook struct {
	cfg BotWebhookConfig
	wh  *aibot.Webhook
	hc  *http.Client

	mu      sync.Mutex
	seq     int
	bubbles map[string]*BotBubble
	order   []string
}

// ErrBotStreamUnfinished means a webhook stream did not finish within the
// stream window.
var ErrBotStreamUnfinished = errors.New("emulator: stream did not finish within the window")

// NewBotWebhook validates cfg and returns a BotWebhook.
func NewBotWebhook(cfg BotWebhookConfig) (*BotWebhook, error) {
	if u, err := url.Parse(cfg.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, errors.New("emulator: bot webhook URL must be http(s)")
	}
	wh, err := aibot.NewWebhook(cfg.Token, cfg.EncodingAESKey)
	if err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = DefaultBotRefreshInterval
	}
	if cfg.StreamWindow <= 0 {
		cfg.StreamWindow = DefaultBotStreamWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	return &BotWebhook{cfg: cfg, wh: wh, hc: hc, bubbles: map[string]*BotBubble{}}, nil
}

func botNonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Verify makes the GET verification WeCom makes when the URL is saved and
// checks that the body is exactly the decrypted echostr.
func (w *BotWebhook) Verify(ctx context.Context) error {
	want := strconv.FormatInt(w.cfg.Now().UnixNano(), 10)
	ts, nonce := strconv.FormatInt(w.cfg.Now().Unix(), 10), botNonce()
	body, sig, err := w.wh.Seal([]byte(want), ts, nonce)
	if err != nil {
		return err
	}
	enc, err := aibot.ParseEnvelope(body)
	if err != nil {
		return err
	}
	q := url.Values{"msg_signature": {sig}, "timestamp": {ts}, "nonce": {nonce}, "echostr": {enc}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.cfg.URL+"?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("emulator: verify: %w", err)
	}
	resp, err := w.hc.Do(req)
	if err != nil {
		return fmt.Errorf("emulator: verify: %w", err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(io.LimitReader(resp.Body, botWebhookMaxResponse))
	if resp.StatusCode != http.StatusOK || string(got) != want {
		return fmt.Errorf("emulator: verify: status %d, body %q, want %q (回调地址请求不通过)", resp.StatusCode, got, want)
	}
	return nil
}

// post sends one callback and returns the decrypted passive reply, or nil
// for an empty reply.
func (w *BotWebhook) post(ctx context.Context, m *aibot.Message) (json.RawMessage, error) {
	plain, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	ts, nonce := strconv.FormatInt(w.cfg.Now().Unix(), 10), botNonce()
	body, sig, err := w.wh.Seal(plain, ts, nonce)
	if err != nil {
		return nil, err
	}
	q := url.Values{"msg_signature": {sig}, "timestamp": {ts}, "nonce": {nonce}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("emulator: callback: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("emulator: callback: %w", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, botWebhookMaxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("emulator: callback response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("emulator: callback answered HTTP %d", resp.StatusCode)
	}
	if len(bytes.TrimSpace(out)) == 0 {
		return nil, nil
	}
	reply, err := w.wh.OpenReply(out)
	if err != nil {
		return nil, fmt.Errorf("emulator: passive reply: %w", err)
	}
	return reply, nil
}

type botStreamReply struct {
	MsgType string `json:"msgtype"`
	Stream  *struct {
		ID       string `json:"id"`
		Finish   bool   `json:"finish"`
		Content  string `json:"content"`
		Feedback *struct {
			ID string `json:"id"`
		} `json:"feedback"`
	} `json:"stream"`
}

// Send posts a message callback (filling msgid, aibotid, chattype and
// create_time when empty) and, if the daemon answers with an unfinished
// stream, keeps refreshing until finish=true or the stream window ends.
// It returns what the user sees; a callback answered with an empty body
// returns a zero BotBubble. Contents over 20480 bytes are an error.
func (w *BotWebhook) Send(ctx context.Context, m aibot.Message) (BotBubble, error) {
	w.mu.Lock()
	w.seq++
	n := w.seq
	w.mu.Unlock()
	if m.MsgID == "" {
		m.MsgID = "emu_wh_" + strconv.Itoa(n)
	}
	if m.AIBotID == "" {
		m.AIBotID = w.cfg.BotID
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
	start := w.cfg.Now()
	if m.CreateTime == 0 {
		m.CreateTime = start.Unix()
	}
	raw, err := w.post(ctx, &m)
	if err != nil || raw == nil {
		return BotBubble{}, err
	}
	var bb *BotBubble
	for refresh := 0; ; refresh++ {
		var r botStreamReply
		if err := json.Unmarshal(raw, &r); err != nil {
			return BotBubble{}, fmt.Errorf("emulator: passive reply is not JSON: %w", err)
		}
		if r.MsgType != aibot.MsgStream || r.Stream == nil || r.Stream.ID == "" {
			return BotBubble{}, nil // template cards etc. are not modelled
		}
		if len(r.Stream.Content) > aibot.MaxContentBytes {
			return BotBubble{}, fmt.Errorf("emulator: stream content is %d bytes, over %d", len(r.Stream.Content), aibot.MaxContentBytes)
		}
		w.mu.Lock()
		if bb == nil {
			bb = w.bubbles[r.Stream.ID]
			if bb == nil {
				bb = &BotBubble{StreamID: r.Stream.ID, BotID: m.AIBotID, ChatKey: m.ChatKey()}
				if r.Stream.Feedback != nil {
					bb.FeedbackID = r.Stream.Feedback.ID
				}
				w.bubbles[r.Stream.ID] = bb
				w.order = append(w.order, r.Stream.ID)
			}
		}
		bb.Text = r.Stream.Content
		bb.Frames++
		if r.Stream.Finish {
			bb.Finishes++
		}
		out := *bb
		w.mu.Unlock()
		if r.Stream.Finish {
			return out, nil
		}
		if w.cfg.Now().Sub(time.Unix(m.CreateTime, 0)) > w.cfg.StreamWindow {
			return out, ErrBotStreamUnfinished
		}
		t := time.NewTimer(w.cfg.RefreshInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return out, ctx.Err()
		}
		w.mu.Lock()
		w.seq++
		n = w.seq
		w.mu.Unlock()
		refreshMsg := aibot.Message{MsgID: "emu_wh_" + strconv.Itoa(n), AIBotID: m.AIBotID, ChatID: m.ChatID, ChatType: m.ChatType,
			From: m.From, CreateTime: w.cfg.Now().Unix(), MsgType: aibot.MsgStream, Stream: &aibot.StreamRef{ID: r.Stream.ID}}
		raw, err = w.post(ctx, &refreshMsg)
		if err != nil {
			return out, err
		}
		if raw == nil {
			return out, fmt.Errorf("emulator: stream refresh %d for %s got an empty reply", refresh+1, r.Stream.ID)
		}
	}
}

// Bubbles returns every stream seen, in the order they appeared.
func (w *BotWebhook) Bubbles() []BotBubble {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]BotBubble, 0, len(w.order))
	for _, id := range w.order {
		out = append(out, *w.bubbles[id])
	}
	return out
}
