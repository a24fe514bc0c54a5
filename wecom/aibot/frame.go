package aibot

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// Commands (cmd) of the long-connection protocol, as in Tencent's SDK.
const (
	// Bot → WeCom.
	CmdSubscribe      = "aibot_subscribe"           // first frame: {bot_id, secret}
	CmdPing           = "ping"                      // heartbeat
	CmdRespondMsg     = "aibot_respond_msg"         // reply on a callback's req_id
	CmdRespondWelcome = "aibot_respond_welcome_msg" // answer to enter_chat, within 5 s
	CmdRespondUpdate  = "aibot_respond_update_msg"  // template card update, within 5 s
	CmdSendMsg        = "aibot_send_msg"            // proactive message to a chatid

	// WeCom → bot.
	CmdMsgCallback   = "aibot_msg_callback"
	CmdEventCallback = "aibot_event_callback"
)

// Message types (msgtype) of inbound bodies.
const (
	MsgText   = "text"
	MsgImage  = "image"
	MsgMixed  = "mixed"
	MsgVoice  = "voice"
	MsgFile   = "file"
	MsgVideo  = "video"
	MsgEvent  = "event"
	MsgStream = "stream" // webhook mode only: a stream refresh callback
)

// Event types (event.eventtype).
const (
	EventEnterChat         = "enter_chat"
	EventFeedback          = "feedback_event"
	EventTemplateCard      = "template_card_event"
	EventDisconnected      = "disconnected_event"
	ChatSingle             = "single"
	ChatGroup              = "group"
	FeedbackAccurate       = 1 // 👍
	FeedbackInaccurate     = 2 // 👎
	FeedbackCancelled      = 3 // the user withdrew the rating
	maxReqIDBytes          = 256
	maxCmdBytes            = 64
	maxMixedItems          = 64
	maxIDBytes             = 512
	maxFeedbackReasonCount = 32
)

// Limits.
const (
	// MaxFrameSize is the largest frame, in bytes, that ParseFrame accepts
	// and the Client reads. Callbacks are a few KiB; reply frames carry at
	// most 20480 bytes of content.
	MaxFrameSize = 256 << 10
	// MaxContentBytes is WeCom's limit on a stream's (and a markdown
	// message's) content: 20480 bytes of UTF-8.
	MaxContentBytes = 20480
	// MaxFeedbackIDBytes is WeCom's limit on a stream's feedback.id.
	MaxFeedbackIDBytes = 256
)

// Headers are a frame's headers. Only req_id is defined.
type Headers struct {
	ReqID string `json:"req_id"`
}

// Frame is one JSON text message on the long connection: a command
// {cmd, headers, body} or, without cmd, an ack {headers, errcode, errmsg}.
type Frame struct {
	Cmd     string          `json:"cmd,omitempty"`
	Headers Headers         `json:"headers"`
	Body    json.RawMessage `json:"body,omitempty"`
	ErrCode int             `json:"errcode"`
	ErrMsg  string          `json:"errmsg"`
}

// IsAck reports whether f is an ack (a frame without cmd).
func (f *Frame) IsAck() bool { return f.Cmd == "" }

// MarshalJSON writes a command without errcode/errmsg and an ack always
// with them: Tencent's SDK treats an ack whose errcode is missing as a
// failure.
func (f Frame) MarshalJSON() ([]byte, error) {
	if f.Cmd == "" {
		return json.Marshal(struct {
			Headers Headers         `json:"headers"`
			Body    json.RawMessage `json:"body,omitempty"`
			ErrCode int             `json:"errcode"`
			ErrMsg  string          `json:"errmsg"`
		}{f.Headers, f.Body, f.ErrCode, f.ErrMsg})
	}
	return json.Marshal(struct {
		Cmd     string          `json:"cmd"`
		Headers Headers         `json:"headers"`
		Body    json.RawMessage `json:"body,omitempty"`
	}{f.Cmd, f.Headers, f.Body})
}

// ParseFrame parses one frame. It accepts unknown fields, strips the
// control characters that Tencent's SDK strips before parsing (U+0000–U+0008
// and U+000B–U+001F), and rejects frames over MaxFrameSize, frames that are
// not a JSON object, and frames without a req_id. Errors wrap
// wecom.ErrMalformed or wecom.ErrTooLarge.
func ParseFrame(data []byte) (*Frame, error) {
	if len(data) > MaxFrameSize {
		return nil, tooLarge("frame", len(data), MaxFrameSize)
	}
	data = stripControl(data)
	var raw struct {
		Cmd     *string `json:"cmd"`
		Headers *struct {
			ReqID *string `json:"req_id"`
		} `json:"headers"`
		Body    json.RawMessage `json:"body"`
		ErrCode *flexInt        `json:"errcode"`
		ErrMsg  *string         `json:"errmsg"`
	}
	if firstByte(data) != '{' {
		return nil, malformed("frame is not a JSON object")
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, malformed("frame is not valid JSON")
	}
	f := &Frame{}
	if raw.Cmd != nil {
		f.Cmd = *raw.Cmd
	}
	if len(f.Cmd) > maxCmdBytes {
		return nil, tooLarge("cmd", len(f.Cmd), maxCmdBytes)
	}
	if raw.Headers == nil || raw.Headers.ReqID == nil || *raw.Headers.ReqID == "" {
		return nil, malformed("frame has no headers.req_id")
	}
	f.Headers.ReqID = *raw.Headers.ReqID
	if len(f.Headers.ReqID) > maxReqIDBytes {
		return nil, tooLarge("req_id", len(f.Headers.ReqID), maxReqIDBytes)
	}
	if len(raw.Body) > 0 && !bytes.Equal(raw.Body, []byte("null")) {
		f.Body = raw.Body
	}
	if f.Cmd == "" && raw.ErrCode == nil {
		// The SDK would treat this as a failure too (errcode !== 0).
		return nil, malformed("ack has no errcode")
	}
	if raw.ErrCode != nil {
		f.ErrCode = int(*raw.ErrCode)
	}
	if raw.ErrMsg != nil {
		f.ErrMsg = *raw.ErrMsg
	}
	return f, nil
}

// stripControl removes the control characters the official SDK removes.
// The common case, no such byte, does not allocate.
func stripControl(b []byte) []byte {
	i := bytes.IndexFunc(b, isStripped)
	if i < 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	out = append(out, b[:i]...)
	for _, c := range b[i:] {
		if !isStripped(rune(c)) {
			out = append(out, c)
		}
	}
	return out
}

func isStripped(r rune) bool { return r <= 0x08 || (r >= 0x0b && r <= 0x1f) }

func firstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c
	}
	return 0
}

// From identifies who triggered a callback.
type From struct {
	UserID string `json:"userid"`
	// CorpID is set only for bots that are not internal to the corp.
	CorpID string `json:"corpid,omitempty"`
}

// Text is a text body; in groups Content starts with the @mention.
type Text struct {
	Content string `json:"content"`
}

// Voice carries WeCom's speech-to-text of a voice message.
type Voice struct {
	Content string `json:"content"`
}

// Media is an image, file or video: an encrypted download URL, valid for
// five minutes, and (long-connection mode) its per-URL key for DecryptMedia.
type Media struct {
	URL    string `json:"url"`
	AESKey string `json:"aeskey,omitempty"`
}

// MixedItem is one part of a mixed (图文混排) message.
type MixedItem struct {
	MsgType string `json:"msgtype"`
	Text    *Text  `json:"text,omitempty"`
	Image   *Media `json:"image,omitempty"`
}

// Mixed is a mixed message.
type Mixed struct {
	Items []MixedItem `json:"msg_item"`
}

// Quote is the message the user quoted.
type Quote struct {
	MsgType string `json:"msgtype"`
	Text    *Text  `json:"text,omitempty"`
	Image   *Media `json:"image,omitempty"`
	Mixed   *Mixed `json:"mixed,omitempty"`
	Voice   *Voice `json:"voice,omitempty"`
	File    *Media `json:"file,omitempty"`
	Video   *Media `json:"video,omitempty"`
}

// StreamRef names a stream in a webhook-mode refresh callback.
type StreamRef struct {
	ID string `json:"id"`
}

// FeedbackEvent is a 👍/👎 on a reply that carried a feedback id.
type FeedbackEvent struct {
	// ID is the feedback.id of the stream's first frame.
	ID string `json:"id"`
	// Type is FeedbackAccurate, FeedbackInaccurate or FeedbackCancelled.
	Type int `json:"type"`
	// Content is the user's comment (dislikes only).
	Content string `json:"content,omitempty"`
	// InaccurateReasons are the reason codes the user ticked (dislikes).
	InaccurateReasons []int `json:"inaccurate_reason_list,omitempty"`
}

// TemplateCardEvent is a click on a template card.
type TemplateCardEvent struct {
	CardType string `json:"card_type,omitempty"`
	EventKey string `json:"event_key,omitempty"`
	TaskID   string `json:"task_id,omitempty"`
}

// Event is the event part of an event callback.
type Event struct {
	EventType    string             `json:"eventtype"`
	Feedback     *FeedbackEvent     `json:"feedback_event,omitempty"`
	TemplateCard *TemplateCardEvent `json:"template_card_event,omitempty"`
}

// Message is the body of a callback: a message (aibot_msg_callback) or an
// event (aibot_event_callback, MsgType "event"). The webhook mode delivers
// the same JSON. Fields a type does not use are nil or zero; unknown fields
// are ignored, and unknown msgtype or eventtype values pass through.
type Message struct {
	// MsgID is unique per callback: the deduplication key.
	MsgID string `json:"msgid"`
	// AIBotID is the bot's id (BotID).
	AIBotID string `json:"aibotid"`
	// ChatID is the group's id; empty in single chats.
	ChatID string `json:"chatid,omitempty"`
	// ChatType is ChatSingle or ChatGroup (events may omit it).
	ChatType string `json:"chattype,omitempty"`
	From     From   `json:"from"`
	// CreateTime is a Unix time in seconds, 0 when absent.
	CreateTime int64 `json:"create_time,omitempty"`
	// ResponseURL is a temporary URL for proactive replies (webhook mode).
	ResponseURL string     `json:"response_url,omitempty"`
	MsgType     string     `json:"msgtype"`
	Text        *Text      `json:"text,omitempty"`
	Image       *Media     `json:"image,omitempty"`
	Mixed       *Mixed     `json:"mixed,omitempty"`
	Voice       *Voice     `json:"voice,omitempty"`
	File        *Media     `json:"file,omitempty"`
	Video       *Media     `json:"video,omitempty"`
	Quote       *Quote     `json:"quote,omitempty"`
	Stream      *StreamRef `json:"stream,omitempty"`
	Event       *Event     `json:"event,omitempty"`
}

// ChatKey is where a proactive reply to this message goes (aibot_send_msg
// chatid): the group's chatid in a group, the sender's userid otherwise.
func (m *Message) ChatKey() string {
	if m.ChatType == ChatGroup && m.ChatID != "" {
		return m.ChatID
	}
	return m.From.UserID
}

// Question returns the text a user asked: text.content, voice.content (already
// transcribed by WeCom) or the text items of a mixed message joined by
// newlines. It is "" for other types. The @mention in groups is kept.
func (m *Message) Question() string {
	switch m.MsgType {
	case MsgText:
		if m.Text != nil {
			return m.Text.Content
		}
	case MsgVoice:
		if m.Voice != nil {
			return m.Voice.Content
		}
	case MsgMixed:
		if m.Mixed != nil {
			var parts []string
			for _, it := range m.Mixed.Items {
				if it.MsgType == MsgText && it.Text != nil && it.Text.Content != "" {
					parts = append(parts, it.Text.Content)
				}
			}
			return strings.Join(parts, "\n")
		}
	}
	return ""
}

// ParseMessage parses a callback body. It needs msgid and msgtype, bounds
// the sizes of ids and lists, and accepts create_time as a number or a
// numeric string. Errors wrap wecom.ErrMalformed or wecom.ErrTooLarge.
func ParseMessage(body []byte) (*Message, error) {
	if len(body) > MaxFrameSize {
		return nil, tooLarge("message", len(body), MaxFrameSize)
	}
	if firstByte(body) != '{' {
		return nil, malformed("message body is not a JSON object")
	}
	var w struct {
		Message
		CreateTime flexInt `json:"create_time"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, malformed("message body is not valid JSON of the expected shape")
	}
	m := w.Message
	m.CreateTime = int64(w.CreateTime)
	if m.MsgID == "" {
		return nil, malformed("message has no msgid")
	}
	if m.MsgType == "" {
		return nil, malformed("message has no msgtype")
	}
	for name, v := range map[string]string{"msgid": m.MsgID, "aibotid": m.AIBotID, "chatid": m.ChatID, "from.userid": m.From.UserID, "msgtype": m.MsgType, "chattype": m.ChatType} {
		if len(v) > maxIDBytes {
			return nil, tooLarge(name, len(v), maxIDBytes)
		}
	}
	if m.Mixed != nil && len(m.Mixed.Items) > maxMixedItems {
		return nil, malformed("mixed message has " + strconv.Itoa(len(m.Mixed.Items)) + " items")
	}
	if m.MsgType == MsgEvent && (m.Event == nil || m.Event.EventType == "") {
		return nil, malformed("event callback has no event.eventtype")
	}
	if m.Event != nil && m.Event.Feedback != nil && len(m.Event.Feedback.InaccurateReasons) > maxFeedbackReasonCount {
		return nil, malformed("feedback event lists too many reasons")
	}
	return &m, nil
}

// flexInt decodes a JSON number or a string holding one.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		return nil
	}
	if len(s) >= 2 && s[0] == '"' {
		var err error
		if s, err = strconv.Unquote(s); err != nil {
			return err
		}
		if s == "" {
			*f = 0
			return nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		fl, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return err
		}
		n = int64(fl)
	}
	*f = flexInt(n)
	return nil
}
