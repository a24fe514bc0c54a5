package wecom

// Test-only helpers: the daemon never decrypts a callback without parsing
// it, and never seals callbacks or passive replies; the emulator builds
// callbacks from Encrypt, Envelope and Signature.

import (
	"bytes"
	"fmt"
)

// Decrypt is Open without ParseMessage: it returns the decrypted inner
// message.
func (c *Crypto) Decrypt(msgSignature, timestamp, nonce string, body []byte) ([]byte, error) {
	return c.decryptBody(msgSignature, timestamp, nonce, body)
}

// Seal encrypts plain and wraps it the way WeCom delivers a callback: an
// envelope in the given format whose ToUserName is the receive id, plus the
// msg_signature to put in the query next to timestamp and nonce.
func (c *Crypto) Seal(plain []byte, timestamp, nonce string, format Format) (body []byte, msgSignature string, err error) {
	enc, err := c.Encrypt(plain)
	if err != nil {
		return nil, "", err
	}
	env := Envelope{ToUserName: string(c.receiveID), Encrypt: enc}
	body, err = env.Marshal(format)
	if err != nil {
		return nil, "", err
	}
	return body, Signature(string(c.token), timestamp, nonce, enc), nil
}

// SealReply encrypts a passive reply (被动回复) and returns the response
// body: the Encrypt, MsgSignature, TimeStamp and Nonce elements in XML, or
// the encrypt, msgsignature, timestamp and nonce keys in JSON. timestamp and
// nonce may be fresh or copied from the callback's query.
func (c *Crypto) SealReply(plain []byte, timestamp, nonce string, format Format) ([]byte, error) {
	enc, err := c.Encrypt(plain)
	if err != nil {
		return nil, err
	}
	sig := Signature(string(c.token), timestamp, nonce, enc)
	switch format {
	case FormatXML:
		var b bytes.Buffer
		b.WriteString("<xml><Encrypt>")
		writeCDATA(&b, enc)
		b.WriteString("</Encrypt><MsgSignature>")
		writeCDATA(&b, sig)
		b.WriteString("</MsgSignature><TimeStamp>")
		writeEscaped(&b, timestamp)
		b.WriteString("</TimeStamp><Nonce>")
		writeCDATA(&b, nonce)
		b.WriteString("</Nonce></xml>")
		return b.Bytes(), nil
	case FormatJSON:
		return marshalJSON(struct {
			Encrypt      string `json:"encrypt"`
			MsgSignature string `json:"msgsignature"`
			TimeStamp    string `json:"timestamp"`
			Nonce        string `json:"nonce"`
		}{enc, sig, timestamp, nonce})
	}
	return nil, fmt.Errorf("%w: unknown format %v", ErrInvalidConfig, format)
}

// DispositionFilename exposes the Content-Disposition parser to the fuzz
// target.
var DispositionFilename = dispositionFilename
