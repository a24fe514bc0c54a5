package wecomtest

import (
	"io"
	"net/url"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

// Defaults for Options, as in package emulator.
const (
	DefaultTokenTTL       = emulator.DefaultTokenTTL
	DefaultCodeTTL        = emulator.DefaultCodeTTL
	DefaultPerMinuteLimit = emulator.DefaultPerMinuteLimit
	DefaultPerHourLimit   = emulator.DefaultPerHourLimit
	DefaultTruncateBytes  = emulator.DefaultTruncateBytes
)

// Server is the emulator's server; see emulator.Server.
type Server = emulator.Server

// Options tunes a Server; see emulator.Options.
type Options = emulator.Options

// SentMessage is one delivered or dropped message; see
// emulator.SentMessage.
type SentMessage = emulator.SentMessage

// DropReason says why a message was dropped; see emulator.DropReason.
type DropReason = emulator.DropReason

// Reasons for a silent drop.
const (
	DropDuplicate   = emulator.DropDuplicate
	DropMinuteLimit = emulator.DropMinuteLimit
	DropHourLimit   = emulator.DropHourLimit
)

// Callback is an encrypted POST callback; see emulator.Callback.
type Callback = emulator.Callback

// NewServer starts a Server on a free loopback port, like
// httptest.NewServer, and panics if it cannot listen. Close it when done.
func NewServer(opts Options) *Server {
	s, err := emulator.New(opts)
	if err != nil {
		panic("wecomtest: " + err.Error())
	}
	return s
}

// OpenID returns the openid reported for a non-member; see
// emulator.OpenID.
func OpenID(corpID, userID string) string { return emulator.OpenID(corpID, userID) }

// NewCallback encrypts inner for an app the way WeCom does; see
// emulator.NewCallback.
func NewCallback(token, encodingAESKey, corpID string, agentID int64, inner []byte, format wecom.Format, rnd io.Reader) (*Callback, error) {
	return emulator.NewCallback(token, encodingAESKey, corpID, agentID, inner, format, rnd)
}

// VerifyURLQuery returns the query of WeCom's GET URL verification; see
// emulator.VerifyURLQuery.
func VerifyURLQuery(token, encodingAESKey, corpID, echo string) (url.Values, error) {
	return emulator.VerifyURLQuery(token, encodingAESKey, corpID, echo)
}

// TextMessageXML returns a decrypted text message as WeCom sends it.
func TextMessageXML(corpID, fromUser, content string, msgID uint64, agentID int64, created time.Time) []byte {
	return emulator.TextMessageXML(corpID, fromUser, content, msgID, agentID, created)
}

// TextMessageJSON is TextMessageXML for apps that receive JSON.
func TextMessageJSON(corpID, fromUser, content string, msgID uint64, agentID int64, created time.Time) []byte {
	return emulator.TextMessageJSON(corpID, fromUser, content, msgID, agentID, created)
}

// ImageMessageXML returns a decrypted image message.
func ImageMessageXML(corpID, fromUser, picURL, mediaID string, msgID uint64, agentID int64, created time.Time) []byte {
	return emulator.ImageMessageXML(corpID, fromUser, picURL, mediaID, msgID, agentID, created)
}

// EventXML returns a decrypted event; see emulator.EventXML.
func EventXML(corpID, fromUser, event, eventKey string, agentID int64, created time.Time) []byte {
	return emulator.EventXML(corpID, fromUser, event, eventKey, agentID, created)
}

// EventJSON is EventXML for apps that receive JSON.
func EventJSON(corpID, fromUser, event, eventKey string, agentID int64, created time.Time) []byte {
	return emulator.EventJSON(corpID, fromUser, event, eventKey, agentID, created)
}

// MessageXML renders m as the decrypted XML WeCom sends for its type.
func MessageXML(m *wecom.Message) []byte { return emulator.MessageXML(m) }

// MessageJSON renders m as the decrypted JSON sent to JSON apps.
func MessageJSON(m *wecom.Message) []byte { return emulator.MessageJSON(m) }
