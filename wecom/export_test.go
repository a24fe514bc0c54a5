package wecom

// Test-only helpers: the daemon never decrypts a callback without parsing
// it, and never seals callbacks; the emulator builds callbacks from
// Encrypt, Envelope and Signature.

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

// DispositionFilename exposes the Content-Disposition parser to the fuzz
// target.
var DispositionFilename = dispositionFilename
