package emulator

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// Callback is an encrypted POST callback as WeCom sends it: the query
// (msg_signature, timestamp, nonce) and the envelope body.
type Callback struct {
	Query url.Values
	Body  []byte
}

// Target returns callbackURL with the callback's query appended.
func (c *Callback) Target(callbackURL string) string {
	sep := "?"
	if strings.Contains(callbackURL, "?") {
		sep = "&"
	}
	return callbackURL + sep + c.Query.Encode()
}

// NewCallback encrypts inner (a message built with MessageXML,
// MessageJSON or the helpers below) for an app and wraps it the way WeCom
// does: an XML or JSON envelope with ToUserName, Encrypt and AgentID, and a
// query carrying msg_signature, the current timestamp and a random nonce.
// rnd supplies the nonce and the ciphertext's random prefix; nil means
// crypto/rand.
func NewCallback(token, encodingAESKey, corpID string, agentID int64, inner []byte, format wecom.Format, rnd io.Reader) (*Callback, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	c, err := wecom.NewCrypto(token, encodingAESKey, corpID, wecom.WithRand(rnd))
	if err != nil {
		return nil, fmt.Errorf("emulator: callback: %w", err)
	}
	nonce, err := randomNonce(rnd)
	if err != nil {
		return nil, err
	}
	enc, err := c.Encrypt(inner)
	if err != nil {
		return nil, fmt.Errorf("emulator: callback: %w", err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	env := wecom.Envelope{ToUserName: corpID, Encrypt: enc, AgentID: strconv.FormatInt(agentID, 10)}
	body, err := env.Marshal(format)
	if err != nil {
		return nil, fmt.Errorf("emulator: callback: %w", err)
	}
	return &Callback{
		Query: url.Values{
			"msg_signature": {wecom.Signature(token, ts, nonce, enc)},
			"timestamp":     {ts},
			"nonce":         {nonce},
		},
		Body: body,
	}, nil
}

// VerifyURLQuery returns the query of the GET handshake WeCom makes when
// the callback URL is saved: msg_signature, timestamp, nonce and the
// encrypted echostr, whose plain text is echo.
func VerifyURLQuery(token, encodingAESKey, corpID, echo string) (url.Values, error) {
	c, err := wecom.NewCrypto(token, encodingAESKey, corpID)
	if err != nil {
		return nil, fmt.Errorf("emulator: verify url: %w", err)
	}
	nonce, err := randomNonce(rand.Reader)
	if err != nil {
		return nil, err
	}
	enc, err := c.Encrypt([]byte(echo))
	if err != nil {
		return nil, fmt.Errorf("emulator: verify url: %w", err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	return url.Values{
		"msg_signature": {wecom.Signature(token, ts, nonce, enc)},
		"timestamp":     {ts},
		"nonce":         {nonce},
		"echostr":       {enc},
	}, nil
}

// randomNonce returns ten decimal digits, like WeCom's nonces.
func randomNonce(r io.Reader) (string, error) {
	var b [10]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("emulator: read random bytes: %w", err)
	}
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	if b[0] == '0' {
		b[0] = '1'
	}
	return string(b[:]), nil
}

// TextMessageXML returns a decrypted text message as WeCom sends it.
func TextMessageXML(corpID, fromUser, content string, msgID uint64, agentID int64, created time.Time) []byte {
	return MessageXML(textMessage(corpID, fromUser, content, msgID, agentID, created))
}

// TextMessageJSON is TextMessageXML for apps that receive JSON.
func TextMessageJSON(corpID, fromUser, content string, msgID uint64, agentID int64, created time.Time) []byte {
	return MessageJSON(textMessage(corpID, fromUser, content, msgID, agentID, created))
}

func textMessage(corpID, fromUser, content string, msgID uint64, agentID int64, created time.Time) *wecom.Message {
	return &wecom.Message{
		ToUserName: corpID, FromUserName: fromUser, CreateTime: created.Unix(),
		MsgType: "text", Content: content, MsgID: msgID, AgentID: agentID,
	}
}

// ImageMessageXML returns a decrypted image message.
func ImageMessageXML(corpID, fromUser, picURL, mediaID string, msgID uint64, agentID int64, created time.Time) []byte {
	return MessageXML(&wecom.Message{
		ToUserName: corpID, FromUserName: fromUser, CreateTime: created.Unix(),
		MsgType: "image", PicURL: picURL, MediaID: mediaID, MsgID: msgID, AgentID: agentID,
	})
}

// EventXML returns a decrypted event: subscribe, unsubscribe, enter_agent
// (empty eventKey), click (menu key), view (URL) or any other name.
func EventXML(corpID, fromUser, event, eventKey string, agentID int64, created time.Time) []byte {
	return MessageXML(eventMessage(corpID, fromUser, event, eventKey, agentID, created))
}

// EventJSON is EventXML for apps that receive JSON.
func EventJSON(corpID, fromUser, event, eventKey string, agentID int64, created time.Time) []byte {
	return MessageJSON(eventMessage(corpID, fromUser, event, eventKey, agentID, created))
}

func eventMessage(corpID, fromUser, event, eventKey string, agentID int64, created time.Time) *wecom.Message {
	return &wecom.Message{
		ToUserName: corpID, FromUserName: fromUser, CreateTime: created.Unix(),
		MsgType: "event", Event: event, EventKey: eventKey, AgentID: agentID,
	}
}

// field is one element of a rendered message. num marks numbers, which
// are written bare (no CDATA, no JSON quotes).
type field struct {
	name, value string
	num         bool
}

// messageFields lists m's fields in WeCom's element order and spelling,
// leaving out those its type does not use.
func messageFields(m *wecom.Message) []field {
	str := func(name, v string) field { return field{name: name, value: v} }
	num := func(name, v string) field { return field{name: name, value: v, num: true} }
	fs := []field{
		str("ToUserName", m.ToUserName),
		str("FromUserName", m.FromUserName),
		num("CreateTime", strconv.FormatInt(m.CreateTime, 10)),
		str("MsgType", m.MsgType),
	}
	switch m.MsgType {
	case "text":
		fs = append(fs, str("Content", m.Content))
	case "image":
		fs = append(fs, str("PicUrl", m.PicURL), str("MediaId", m.MediaID))
	case "voice":
		fs = append(fs, str("MediaId", m.MediaID), str("Format", m.Format))
	case "video":
		fs = append(fs, str("MediaId", m.MediaID), str("ThumbMediaId", m.ThumbMediaID))
	case "location":
		fs = append(fs,
			num("Location_X", strconv.FormatFloat(m.LocationX, 'f', -1, 64)),
			num("Location_Y", strconv.FormatFloat(m.LocationY, 'f', -1, 64)),
			num("Scale", strconv.Itoa(m.Scale)),
			str("Label", m.Label),
			str("AppType", "wxwork"))
	case "link":
		fs = append(fs, str("Title", m.Title), str("Description", m.Description), str("Url", m.URL), str("PicUrl", m.PicURL))
	case "event":
		fs = append(fs, str("Event", m.Event), str("EventKey", m.EventKey))
	}
	if m.MsgType != "event" {
		fs = append(fs, num("MsgId", strconv.FormatUint(m.MsgID, 10)))
	}
	return append(fs, num("AgentID", strconv.FormatInt(m.AgentID, 10)))
}

// MessageXML renders m as the decrypted XML WeCom sends for its type:
// strings in CDATA, numbers bare, element names as documented.
func MessageXML(m *wecom.Message) []byte {
	var b bytes.Buffer
	b.WriteString("<xml>")
	for _, f := range messageFields(m) {
		b.WriteString("<" + f.name + ">")
		if f.num {
			b.WriteString(f.value)
		} else {
			b.WriteString("<![CDATA[" + strings.ReplaceAll(f.value, "]]>", "]]]]><![CDATA[>") + "]]>")
		}
		b.WriteString("</" + f.name + ">")
	}
	b.WriteString("</xml>")
	return b.Bytes()
}

// MessageJSON renders m as the decrypted JSON sent to apps that chose the
// JSON format: the XML element names as keys, numbers as JSON numbers
// (MsgId exactly, never through float64).
func MessageJSON(m *wecom.Message) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range messageFields(m) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(f.name))
		b.WriteByte(':')
		if f.num {
			b.WriteString(f.value)
			continue
		}
		v, _ := json.Marshal(f.value) // a string always marshals
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes()
}
