package aibot

import (
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// MaxEnvelopeSize is the largest webhook POST body ParseEnvelope accepts.
const MaxEnvelopeSize = 64 << 10

// Webhook holds a bot's webhook-mode (API 模式：URL 回调) settings: the
// callback Token and EncodingAESKey. The receive id is "" for bots. It is
// safe for concurrent use.
type Webhook struct {
	crypto *wecom.Crypto
	token  string
}

// NewWebhook validates the Token and EncodingAESKey (43 characters of
// base64) and returns a Webhook. opts are passed to wecom.NewCrypto
// (wecom.WithRand for reproducible tests).
func NewWebhook(token, encodingAESKey string, opts ...wecom.CryptoOption) (*Webhook, error) {
	c, err := wecom.NewCrypto(token, encodingAESKey, "", opts...)
	if err != nil {
		return nil, fmt.Errorf("aibot: webhook: %w", err)
	}
	return &Webhook{crypto: c, token: token}, nil
}

// QuerySignature returns the signature from a callback's query:
// msg_signature, or msgsignature or signature as some WeCom scenes spell it.
func QuerySignature(q url.Values) string {
	for _, k := range []string{"msg_signature", "msgsignature", "signature"} {
		if v := q.Get(k); v != "" {
			return v
		}
	}
	return ""
}

// VerifyURL answers the GET verification made when the URL is saved in the
// console: it checks the signature over echostr and returns the decrypted
// plain text to write back as the whole body (no quotes, BOM or newline)
// within one second. q is the URL-decoded query.
func (w *Webhook) VerifyURL(q url.Values) ([]byte, error) {
	plain, err := w.crypto.VerifyURL(QuerySignature(q), q.Get("timestamp"), q.Get("nonce"), q.Get("echostr"))
	if err != nil {
		return nil, fmt.Errorf("aibot: webhook verify: %w", err)
	}
	return plain, nil
}

// ParseEnvelope returns the ciphertext of a webhook POST body
// {"encrypt": "…"}. The key is also accepted as "Encrypt" (WeCom spells it
// differently in different scenes); both present with different values is
// malformed. Errors wrap wecom.ErrMalformed or wecom.ErrTooLarge.
func ParseEnvelope(body []byte) (string, error) {
	if len(body) > MaxEnvelopeSize {
		return "", tooLarge("webhook body", len(body), MaxEnvelopeSize)
	}
	if firstByte(body) != '{' {
		return "", malformed("webhook body is not a JSON object")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return "", malformed("webhook body is not valid JSON")
	}
	var enc string
	for _, k := range []string{"encrypt", "Encrypt"} {
		raw, ok := fields[k]
		if !ok {
			continue
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", malformed("webhook " + k + " is not a string")
		}
		if enc != "" && s != enc {
			return "", malformed("webhook body has conflicting encrypt and Encrypt")
		}
		enc = s
	}
	if enc == "" {
		return "", malformed("webhook body has no encrypt field")
	}
	return enc, nil
}

// Decrypt verifies and decrypts a webhook POST and returns the inner JSON.
// q is the URL-decoded query (msg_signature, timestamp, nonce).
func (w *Webhook) Decrypt(q url.Values, body []byte) ([]byte, error) {
	enc, err := ParseEnvelope(body)
	if err != nil {
		return nil, err
	}
	plain, err := w.crypto.VerifyURL(QuerySignature(q), q.Get("timestamp"), q.Get("nonce"), enc)
	if err != nil {
		return nil, fmt.Errorf("aibot: webhook decrypt: %w", err)
	}
	return plain, nil
}

// Open is Decrypt followed by ParseMessage. A stream refresh callback has
// MsgType MsgStream and Stream.ID set.
func (w *Webhook) Open(q url.Values, body []byte) (*Message, error) {
	plain, err := w.Decrypt(q, body)
	if err != nil {
		return nil, err
	}
	return ParseMessage(plain)
}

// Reply encrypts a passive reply body (any JSON value) and returns the HTTP
// response body {encrypt, msgsignature, timestamp, nonce}. Send it with
// Content-Type text/plain; charset=utf-8, as WeCom's reference does.
// timestamp and nonce may be the callback's.
func (w *Webhook) Reply(body any, timestamp, nonce string) ([]byte, error) {
	plain, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("aibot: webhook reply: %w", err)
	}
	out, err := w.crypto.SealReply(plain, timestamp, nonce, wecom.FormatJSON)
	if err != nil {
		return nil, fmt.Errorf("aibot: webhook reply: %w", err)
	}
	return out, nil
}

// StreamReply is Reply with a stream body (NewStreamBody): the answer to a
// message or to a stream refresh callback, with the whole text so far.
func (w *Webhook) StreamReply(streamID, content string, finish bool, feedbackID, timestamp, nonce string) ([]byte, error) {
	b, err := NewStreamBody(streamID, content, finish, feedbackID)
	if err != nil {
		return nil, err
	}
	return w.Reply(b, timestamp, nonce)
}

// Seal encrypts an inbound callback body the way WeCom posts it, for
// simulators and tests: it returns the POST body and the msg_signature to
// put in the query next to timestamp and nonce.
func (w *Webhook) Seal(plain []byte, timestamp, nonce string) (body []byte, msgSignature string, err error) {
	enc, err := w.crypto.Encrypt(plain)
	if err != nil {
		return nil, "", fmt.Errorf("aibot: webhook seal: %w", err)
	}
	body, err = json.Marshal(struct {
		Encrypt string `json:"encrypt"`
	}{enc})
	if err != nil {
		return nil, "", fmt.Errorf("aibot: webhook seal: %w", err)
	}
	return body, wecom.Signature(w.token, timestamp, nonce, enc), nil
}

// OpenReply decrypts a passive reply produced by Reply, checking its
// signature: what WeCom does with the response, for simulators and tests.
func (w *Webhook) OpenReply(resp []byte) ([]byte, error) {
	var r struct {
		Encrypt      string `json:"encrypt"`
		MsgSignature string `json:"msgsignature"`
		TimeStamp    string `json:"timestamp"`
		Nonce        string `json:"nonce"`
	}
	if len(resp) > MaxEnvelopeSize {
		return nil, tooLarge("webhook reply", len(resp), MaxEnvelopeSize)
	}
	if err := json.Unmarshal(resp, &r); err != nil {
		return nil, malformed("webhook reply is not valid JSON")
	}
	plain, err := w.crypto.VerifyURL(r.MsgSignature, r.TimeStamp, r.Nonce, r.Encrypt)
	if err != nil {
		return nil, fmt.Errorf("aibot: webhook reply: %w", err)
	}
	return plain, nil
}
