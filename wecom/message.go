package wecom

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// MaxMessageSize is the largest decrypted message, in bytes, that
// ParseMessage accepts.
const MaxMessageSize = 1 << 20

// Message is a decrypted inbound message or event (接收消息与事件) of a
// self-built app. Fields that a message type does not use are zero.
type Message struct {
	// ToUserName is the CorpID.
	ToUserName string
	// FromUserName is the sender's UserID. For users of linked corps
	// (互联企业/上下游) it has the form "CorpID/userid".
	FromUserName string
	// CreateTime is the Unix time in seconds.
	CreateTime int64
	// MsgType is lower-cased: text, image, voice, video, location, link or
	// event.
	MsgType string
	// Content is the text of a text message.
	Content string
	// MsgID is the 64-bit message id; zero for events.
	MsgID uint64
	// AgentID is the app id (应用 AgentId).
	AgentID int64
	// Event is the lower-cased event name when MsgType is "event":
	// subscribe, unsubscribe, enter_agent, click, view, location … Unknown
	// events pass through with their name.
	Event string
	// EventKey is the menu key of a click event, the URL of a view event,
	// and empty for enter_agent.
	EventKey string
	// PicURL is the picture URL of an image or link message.
	PicURL string
	// MediaID is the media id of an image, voice or video message (valid
	// for three days).
	MediaID string
	// Format is the audio format of a voice message (amr, speex …).
	Format string
	// ThumbMediaID is the thumbnail media id of a video message.
	ThumbMediaID string
	// LocationX is the latitude of a location message (Location_X).
	LocationX float64
	// LocationY is the longitude of a location message (Location_Y).
	LocationY float64
	// Scale is the map zoom level of a location message.
	Scale int
	// Label is the place name of a location message.
	Label string
	// Title is the title of a link message.
	Title string
	// Description is the description of a link message.
	Description string
	// URL is the target of a link message.
	URL string
}

// IsEvent reports whether m is an event rather than a user message.
func (m *Message) IsEvent() bool { return m.MsgType == "event" }

// DedupKey returns a key that identifies m across WeCom's callback retries:
// "m:<MsgId>" for messages, and for events (which carry no MsgId)
// "e:<FromUserName>|<CreateTime>|<Event>|<EventKey>". A message without a
// MsgId also gets the event form, so that it never shares the key "m:0"
// with unrelated messages.
func (m *Message) DedupKey() string {
	if !m.IsEvent() && m.MsgID != 0 {
		return "m:" + strconv.FormatUint(m.MsgID, 10)
	}
	return "e:" + m.FromUserName + "|" + strconv.FormatInt(m.CreateTime, 10) + "|" + m.Event + "|" + m.EventKey
}

// ParseMessage parses a decrypted message, XML or JSON (detected from the
// first non-space byte). Element and key names match case-insensitively;
// unknown ones are ignored. In JSON, numeric fields may be numbers or
// strings; 64-bit ids are read exactly. MsgType is required.
func ParseMessage(plain []byte) (*Message, error) {
	if len(plain) > MaxMessageSize {
		return nil, fmt.Errorf("%w: message is %d bytes, limit %d", ErrTooLarge, len(plain), MaxMessageSize)
	}
	m := new(Message)
	switch firstNonSpace(plain) {
	case '<':
		err := walkXML(plain, func(name, text []byte) error {
			return m.set(name, string(text))
		})
		if err != nil {
			return nil, err
		}
	case '{':
		if err := m.parseJSON(plain); err != nil {
			return nil, err
		}
	default:
		return nil, malformed("message is neither XML nor JSON")
	}
	m.MsgType = strings.ToLower(strings.TrimSpace(m.MsgType))
	m.Event = strings.ToLower(strings.TrimSpace(m.Event))
	if m.MsgType == "" {
		return nil, malformed("message has no MsgType")
	}
	return m, nil
}

// set stores one field by its element or key name.
func (m *Message) set(name []byte, v string) error {
	// Lower-case the name into a stack buffer: names are short, and this
	// avoids an allocation per field.
	var lower [32]byte
	if len(name) > len(lower) {
		return nil // no field has a name this long
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	var err error
	switch string(lower[:len(name)]) {
	case "tousername":
		m.ToUserName = v
	case "fromusername":
		m.FromUserName = v
	case "createtime":
		m.CreateTime, err = parseInt(v, "CreateTime")
	case "msgtype":
		m.MsgType = v
	case "content":
		m.Content = v
	case "msgid":
		m.MsgID, err = parseUint(v, "MsgId")
	case "agentid":
		m.AgentID, err = parseInt(v, "AgentID")
	case "event":
		m.Event = v
	case "eventkey":
		m.EventKey = v
	case "picurl":
		m.PicURL = v
	case "mediaid":
		m.MediaID = v
	case "format":
		m.Format = v
	case "thumbmediaid":
		m.ThumbMediaID = v
	case "location_x":
		m.LocationX, err = parseFloat(v, "Location_X")
	case "location_y":
		m.LocationY, err = parseFloat(v, "Location_Y")
	case "scale":
		var n int64
		n, err = parseInt(v, "Scale")
		m.Scale = int(n)
	case "label":
		m.Label = v
	case "title":
		m.Title = v
	case "description":
		m.Description = v
	case "url":
		m.URL = v
	}
	return err
}

// jsonMessage lists the keys of the JSON form. encoding/json matches them
// case-insensitively, and flexValue takes strings and numbers alike without
// going through float64.
type jsonMessage struct {
	ToUserName   flexValue
	FromUserName flexValue
	CreateTime   flexValue
	MsgType      flexValue
	Content      flexValue
	MsgID        flexValue `json:"MsgId"`
	AgentID      flexValue
	Event        flexValue
	EventKey     flexValue
	PicURL       flexValue `json:"PicUrl"`
	MediaID      flexValue `json:"MediaId"`
	Format       flexValue
	ThumbMediaID flexValue `json:"ThumbMediaId"`
	LocationX    flexValue `json:"Location_X"`
	LocationY    flexValue `json:"Location_Y"`
	Scale        flexValue
	Label        flexValue
	Title        flexValue
	Description  flexValue
	URL          flexValue `json:"Url"`
}

// parseJSON decodes the JSON form of a message.
func (m *Message) parseJSON(plain []byte) error {
	var j jsonMessage
	if err := json.Unmarshal(plain, &j); err != nil {
		return malformed("invalid JSON message")
	}
	m.ToUserName = j.ToUserName.text
	m.FromUserName = j.FromUserName.text
	m.MsgType = j.MsgType.text
	m.Content = j.Content.text
	m.Event = j.Event.text
	m.EventKey = j.EventKey.text
	m.PicURL = j.PicURL.text
	m.MediaID = j.MediaID.text
	m.Format = j.Format.text
	m.ThumbMediaID = j.ThumbMediaID.text
	m.Label = j.Label.text
	m.Title = j.Title.text
	m.Description = j.Description.text
	m.URL = j.URL.text
	var err error
	if m.CreateTime, err = parseInt(j.CreateTime.text, "CreateTime"); err != nil {
		return err
	}
	if m.MsgID, err = parseUint(j.MsgID.text, "MsgId"); err != nil {
		return err
	}
	if m.AgentID, err = parseInt(j.AgentID.text, "AgentID"); err != nil {
		return err
	}
	if m.LocationX, err = parseFloat(j.LocationX.text, "Location_X"); err != nil {
		return err
	}
	if m.LocationY, err = parseFloat(j.LocationY.text, "Location_Y"); err != nil {
		return err
	}
	scale, err := parseInt(j.Scale.text, "Scale")
	if err != nil {
		return err
	}
	m.Scale = int(scale)
	return nil
}

// flexValue is a JSON scalar kept as text: strings are unquoted, numbers and
// booleans keep their literal, null is empty. Objects and arrays (nested
// structures such as ScanCodeInfo, which Message does not use) are skipped.
type flexValue struct {
	text string
}

// UnmarshalJSON implements json.Unmarshaler.
func (f *flexValue) UnmarshalJSON(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	switch b[0] {
	case '{', '[':
		return nil
	case 't', 'f':
		f.text = string(b)
		return nil
	}
	var s flexString
	if err := s.UnmarshalJSON(b); err != nil {
		return err
	}
	f.text = string(s)
	return nil
}

func parseInt(v, field string) (int64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, malformed(field + " is not an integer")
	}
	return n, nil
}

func parseUint(v, field string) (uint64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, malformed(field + " is not an unsigned integer")
	}
	return n, nil
}

func parseFloat(v, field string) (float64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, malformed(field + " is not a number")
	}
	return n, nil
}
