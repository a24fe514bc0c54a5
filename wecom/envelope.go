package wecom

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
)

// maxXMLDepth bounds element nesting in any XML this package parses. Real
// payloads nest three or four levels deep.
const maxXMLDepth = 16

// Envelope is the outer, unencrypted part of a POST callback.
type Envelope struct {
	// ToUserName is the receive id (CorpID for a self-built app). It is
	// informational; Decrypt checks the receive id inside the ciphertext.
	ToUserName string
	// AgentID is the app id as sent: a string in XML, a string or a number
	// in JSON. It is empty for suite callbacks.
	AgentID string
	// Encrypt is the base64 ciphertext (msg_encrypt).
	Encrypt string
}

// envelope is the parsed form used internally; it keeps the ciphertext as
// bytes to avoid a copy.
type envelope struct {
	toUserName string
	agentID    string
	encrypt    []byte
}

// ParseEnvelope parses a callback body in either format, detected from its
// first non-space byte. It does not verify or decrypt anything; it is useful
// to route a callback to an app by AgentID before opening it.
func ParseEnvelope(body []byte) (*Envelope, error) {
	if len(body) > DefaultMaxBodySize {
		return nil, fmt.Errorf("%w: body is %d bytes, limit %d", ErrTooLarge, len(body), DefaultMaxBodySize)
	}
	e, err := parseEnvelope(body)
	if err != nil {
		return nil, err
	}
	return &Envelope{ToUserName: e.toUserName, AgentID: e.agentID, Encrypt: string(e.encrypt)}, nil
}

func parseEnvelope(body []byte) (envelope, error) {
	var e envelope
	switch firstNonSpace(body) {
	case '<':
		seen := false
		err := walkXML(body, func(name, text []byte) error {
			switch {
			case bytes.EqualFold(name, []byte("Encrypt")):
				if seen {
					return malformed("envelope has more than one Encrypt element")
				}
				seen = true
				e.encrypt = bytes.Clone(text)
			case bytes.EqualFold(name, []byte("ToUserName")):
				e.toUserName = string(text)
			case bytes.EqualFold(name, []byte("AgentID")):
				e.agentID = strings.TrimSpace(string(text))
			}
			return nil
		})
		if err != nil {
			return e, err
		}
	case '{':
		var j struct {
			ToUserName flexString `json:"tousername"`
			Encrypt    flexString `json:"encrypt"`
			AgentID    flexString `json:"agentid"`
		}
		if err := json.Unmarshal(body, &j); err != nil {
			return e, malformed("invalid JSON envelope")
		}
		e.toUserName, e.agentID, e.encrypt = string(j.ToUserName), string(j.AgentID), []byte(j.Encrypt)
	default:
		return e, malformed("envelope is neither XML nor JSON")
	}
	if len(e.encrypt) == 0 {
		return e, malformed("envelope has no Encrypt field")
	}
	return e, nil
}

// Marshal encodes the envelope as WeCom sends it. Empty ToUserName and
// AgentID are left out.
func (e Envelope) Marshal(format Format) ([]byte, error) {
	switch format {
	case FormatXML:
		var b bytes.Buffer
		b.WriteString("<xml>")
		if e.ToUserName != "" {
			b.WriteString("<ToUserName>")
			writeCDATA(&b, e.ToUserName)
			b.WriteString("</ToUserName>")
		}
		b.WriteString("<Encrypt>")
		writeCDATA(&b, e.Encrypt)
		b.WriteString("</Encrypt>")
		if e.AgentID != "" {
			b.WriteString("<AgentID>")
			writeCDATA(&b, e.AgentID)
			b.WriteString("</AgentID>")
		}
		b.WriteString("</xml>")
		return b.Bytes(), nil
	case FormatJSON:
		return marshalJSON(struct {
			ToUserName string `json:"tousername,omitempty"`
			Encrypt    string `json:"encrypt"`
			AgentID    string `json:"agentid,omitempty"`
		}{e.ToUserName, e.Encrypt, e.AgentID})
	}
	return nil, fmt.Errorf("%w: unknown format %v", ErrInvalidConfig, format)
}

// firstNonSpace returns the first byte of b that is not XML/JSON
// whitespace, or 0.
func firstNonSpace(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

// writeCDATA writes s as a CDATA section, splitting any "]]>" so that the
// section cannot be closed early.
func writeCDATA(b *bytes.Buffer, s string) {
	b.WriteString("<![CDATA[")
	b.WriteString(strings.ReplaceAll(s, "]]>", "]]]]><![CDATA[>"))
	b.WriteString("]]>")
}

// writeEscaped writes s as escaped XML character data.
func writeEscaped(b *bytes.Buffer, s string) {
	_ = xml.EscapeText(b, []byte(s)) // writes to a bytes.Buffer cannot fail
}

// marshalJSON encodes v without HTML escaping, as WeCom does.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("wecom: encode json: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// flexString decodes a JSON string, number or null into text. WeCom sends
// some fields (agentid, MsgId …) as a string in one place and a number in
// another; numbers keep their literal text so 64-bit ids stay exact.
type flexString string

// UnmarshalJSON implements json.Unmarshaler.
func (f *flexString) UnmarshalJSON(b []byte) error {
	if len(b) == 0 {
		return errors.New("empty value")
	}
	switch c := b[0]; {
	case c == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
	case c == 'n':
		*f = ""
	case c == '-' || c >= '0' && c <= '9':
		*f = flexString(b)
	default:
		return errors.New("want a string or a number")
	}
	return nil
}
