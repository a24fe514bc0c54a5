package aibot

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// WeCom errcodes that callers of the reply methods branch on.
const (
	// CodeInvalidReqID (846605, "invalid req_id") means the callback's
	// req_id can no longer be answered: it is unknown, the 5 s window for
	// the first reply passed, an ack timed out, or the connection it came
	// on is gone (every reconnect invalidates the old req_ids).
	CodeInvalidReqID = 846605
	// CodeStreamExpired (846608, "stream message update expired") means
	// the stream is past WeCom's window, about 6 minutes from the user's
	// message. Deliver the rest with SendMarkdown.
	CodeStreamExpired = 846608
)

// Sentinel errors. Errors returned by this package wrap one of these (or one
// of the wecom package's ErrMalformed / ErrTooLarge / ErrInvalidConfig), so
// callers branch with errors.Is. No message carries the secret or message
// content.
var (
	// ErrInvalidReqID matches an *APIError with Code CodeInvalidReqID.
	ErrInvalidReqID = errors.New("aibot: invalid req_id (846605)")
	// ErrStreamExpired matches an *APIError with Code CodeStreamExpired.
	ErrStreamExpired = errors.New("aibot: stream update expired (846608)")
	// ErrAckTimeout means WeCom did not ack a reply frame within the ack
	// timeout (5 s). WeCom treats the req_id as released then: later
	// frames on it usually fail with 846605.
	ErrAckTimeout = errors.New("aibot: reply ack timeout")
	// ErrNotConnected means there is no subscribed connection to send on.
	ErrNotConnected = errors.New("aibot: not connected")
	// ErrConnectionLost means the connection dropped while a reply waited
	// for its ack; whether WeCom applied the frame is unknown.
	ErrConnectionLost = errors.New("aibot: connection lost before the ack")
	// ErrDisplaced means WeCom closed this connection because another one
	// subscribed for the same bot (disconnected_event): a second daemon, or
	// the same bot configured in another tool.
	ErrDisplaced = errors.New("aibot: another connection subscribed for this bot (disconnected_event)")
	// ErrContentTooLarge means a reply's content is over MaxContentBytes.
	// It wraps wecom.ErrTooLarge too. The caller splits; nothing is
	// truncated here.
	ErrContentTooLarge = fmt.Errorf("aibot: content over %d bytes: %w", MaxContentBytes, wecom.ErrTooLarge)
	// ErrClosed means the Client's Run has returned.
	ErrClosed = errors.New("aibot: client stopped")
)

// APIError is a non-zero errcode in WeCom's ack of a frame.
type APIError struct {
	// Cmd is the command of the frame that was refused, e.g.
	// "aibot_respond_msg".
	Cmd string
	// ReqID is the req_id the ack carried.
	ReqID string
	// Code is WeCom's errcode.
	Code int
	// Msg is WeCom's errmsg, unchanged.
	Msg string
}

// Error describes the refusal; it names the req_id but no content.
func (e *APIError) Error() string {
	s := "aibot: " + e.Cmd + " refused: errcode " + strconv.Itoa(e.Code)
	if e.Msg != "" {
		s += " (" + e.Msg + ")"
	}
	if h := e.Hint(); h != "" {
		s += ": " + h
	}
	return s
}

// Is lets errors.Is(err, ErrInvalidReqID) and errors.Is(err,
// ErrStreamExpired) match by code.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrInvalidReqID:
		return e.Code == CodeInvalidReqID
	case ErrStreamExpired:
		return e.Code == CodeStreamExpired
	}
	return false
}

// Hint says what the code means for the caller, or "".
func (e *APIError) Hint() string {
	switch e.Code {
	case CodeInvalidReqID:
		return "the callback can no longer be answered on its req_id (reply window passed or connection replaced); send the rest proactively"
	case CodeStreamExpired:
		return "the stream is past WeCom's window (about 6 minutes from the message); send the rest proactively"
	}
	return ""
}

// AuthError is WeCom refusing aibot_subscribe: almost always a wrong BotID
// or Secret. It is an operator error; the Client keeps retrying slowly.
type AuthError struct {
	// Code and Msg are the ack's errcode and errmsg.
	Code int
	Msg  string
	// Key is the config key of the Secret (bots.<name>.secret) when
	// Config.Name was set.
	Key string
}

// Error names the console settings to check; the caller adds the config
// key (bots.<name>.secret).
func (e *AuthError) Error() string {
	s := "aibot: subscribe refused: errcode " + strconv.Itoa(e.Code)
	if e.Msg != "" {
		s += " (" + e.Msg + ")"
	}
	key := "the bot's BotID and long-connection Secret"
	if e.Key != "" {
		key = e.Key + " and the BotID"
	}
	return s + ": 请检查 " + key + "（管理后台 → 智能机器人 → API 模式：长连接 Secret）/ check " + key
}

func malformed(reason string) error {
	return fmt.Errorf("aibot: %w: %s", wecom.ErrMalformed, reason)
}

func tooLarge(what string, n, limit int) error {
	return fmt.Errorf("aibot: %w: %s is %d bytes, limit %d", wecom.ErrTooLarge, what, n, limit)
}
