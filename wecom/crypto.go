package wecom

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // SHA-1 is what the WeCom signature scheme specifies.
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"strconv"
)

// DefaultMaxBodySize is the default limit, in bytes, on a callback body or an
// echostr handed to Decrypt, Open or VerifyURL. Real callbacks are a few
// hundred bytes to a few KiB.
const DefaultMaxBodySize = 64 << 10

const (
	encodingAESKeyLen = 43 // characters of base64 in an EncodingAESKey
	aesKeyLen         = 32 // AES-256
	padBlock          = 32 // WeCom pads to multiples of 32 bytes, not 16
	randLen           = 16 // random prefix of the plaintext
	headerLen         = randLen + 4
)

// Format selects the envelope encoding of a callback: the admin console lets
// an app receive either XML or JSON (接收消息的格式).
type Format int

const (
	// FormatXML is the classic <xml><Encrypt>…</Encrypt></xml> envelope.
	FormatXML Format = iota
	// FormatJSON is the {"encrypt": "…"} envelope.
	FormatJSON
)

// String returns "xml" or "json".
func (f Format) String() string {
	switch f {
	case FormatXML:
		return "xml"
	case FormatJSON:
		return "json"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// Crypto verifies, decrypts and encrypts WeCom callback payloads
// (WXBizMsgCrypt) for one app. It is safe for concurrent use.
type Crypto struct {
	token     []byte
	receiveID []byte
	key       [aesKeyLen]byte
	block     cipher.Block
	rand      io.Reader
	maxBody   int
}

// CryptoOption customises a Crypto built by NewCrypto.
type CryptoOption func(*Crypto)

// WithRand sets the source of the 16 random bytes that prefix every
// encrypted plaintext. The default is crypto/rand. Tests use a fixed reader
// to reproduce known ciphertexts.
func WithRand(r io.Reader) CryptoOption {
	return func(c *Crypto) {
		if r != nil {
			c.rand = r
		}
	}
}

// WithMaxBodySize sets the largest callback body or echostr, in bytes, that
// Decrypt, Open and VerifyURL accept; larger inputs fail with ErrTooLarge.
// Values <= 0 keep DefaultMaxBodySize.
func WithMaxBodySize(n int) CryptoOption {
	return func(c *Crypto) {
		if n > 0 {
			c.maxBody = n
		}
	}
}

// NewCrypto returns a Crypto for the callback settings of an app: the Token
// and EncodingAESKey from the admin console (接收消息服务器配置) and the
// receive id the payloads must be addressed to — the CorpID for a
// self-built app, the SuiteID for third-party suite callbacks, "" for AI
// bots.
//
// The key must be 43 characters of base64 that decode to 32 bytes. It is
// decoded leniently about its last character's unused bits, as WeCom's own
// libraries do: many real keys, the official test key included, have them
// set.
func NewCrypto(token, encodingAESKey, receiveID string, opts ...CryptoOption) (*Crypto, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: callback token is empty", ErrInvalidConfig)
	}
	if len(encodingAESKey) != encodingAESKeyLen {
		return nil, fmt.Errorf("%w: want %d characters, got %d", ErrInvalidKey, encodingAESKeyLen, len(encodingAESKey))
	}
	// Not StdEncoding.Strict(): that rejects keys whose last character has
	// non-zero trailing bits.
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != aesKeyLen {
		return nil, fmt.Errorf("%w: not valid base64 for a 32-byte key", ErrInvalidKey)
	}
	c := &Crypto{
		token:     []byte(token),
		receiveID: []byte(receiveID),
		rand:      rand.Reader,
		maxBody:   DefaultMaxBodySize,
	}
	copy(c.key[:], key)
	clear(key)
	c.block, err = aes.NewCipher(c.key[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Signature returns the WeCom message signature: the lowercase hex SHA-1 of
// token, timestamp, nonce and encrypt sorted as byte strings and
// concatenated. encrypt is the echostr for URL verification and the
// Encrypt field of a message or reply envelope.
func Signature(token, timestamp, nonce, encrypt string) string {
	var out [2 * sha1.Size]byte
	signature(&out, []byte(token), []byte(timestamp), []byte(nonce), []byte(encrypt))
	return string(out[:])
}

// signature writes the hex signature of the four parts into out without
// allocating for typical sizes.
func signature(out *[2 * sha1.Size]byte, a, b, c, d []byte) {
	parts := [4][]byte{a, b, c, d}
	// Insertion sort: four elements, no allocation.
	for i := 1; i < len(parts); i++ {
		for j := i; j > 0 && bytes.Compare(parts[j], parts[j-1]) < 0; j-- {
			parts[j], parts[j-1] = parts[j-1], parts[j]
		}
	}
	n := len(a) + len(b) + len(c) + len(d)
	var stack [1024]byte
	buf := stack[:0]
	if n > len(stack) {
		buf = make([]byte, 0, n)
	}
	for _, p := range parts {
		buf = append(buf, p...)
	}
	sum := sha1.Sum(buf) //nolint:gosec // protocol-mandated
	hex.Encode(out[:], sum[:])
}

// verify checks msgSignature against the payload in constant time.
func (c *Crypto) verify(msgSignature, timestamp, nonce string, encrypt []byte) bool {
	var want [2 * sha1.Size]byte
	signature(&want, c.token, []byte(timestamp), []byte(nonce), encrypt)
	if len(msgSignature) != len(want) {
		return false
	}
	var v byte
	for i := range want {
		v |= want[i] ^ msgSignature[i]
	}
	return subtle.ConstantTimeByteEq(v, 0) == 1
}

// VerifyURL handles the GET handshake that WeCom makes when the callback URL
// is saved in the admin console: it checks msg_signature over echostr,
// decrypts echostr and returns the plain text, which the handler must write
// back as the whole response body (no quotes, BOM or newline) within one
// second. Pass the query values already URL-decoded.
func (c *Crypto) VerifyURL(msgSignature, timestamp, nonce, echostr string) ([]byte, error) {
	if len(echostr) > c.maxBody {
		return nil, fmt.Errorf("%w: echostr is %d bytes, limit %d", ErrTooLarge, len(echostr), c.maxBody)
	}
	return c.open(msgSignature, timestamp, nonce, []byte(echostr))
}

// decryptBody parses a POST callback envelope (XML or JSON, detected from
// the first non-space byte), checks msg_signature in constant time,
// decrypts the Encrypt field and checks its receive id. It returns the
// decrypted inner message, freshly allocated.
func (c *Crypto) decryptBody(msgSignature, timestamp, nonce string, body []byte) ([]byte, error) {
	if len(body) > c.maxBody {
		return nil, fmt.Errorf("%w: body is %d bytes, limit %d", ErrTooLarge, len(body), c.maxBody)
	}
	env, err := parseEnvelope(body)
	if err != nil {
		return nil, err
	}
	return c.open(msgSignature, timestamp, nonce, env.encrypt)
}

// Open handles a POST callback: it parses the envelope (XML or JSON,
// detected from the first non-space byte), checks msg_signature in constant
// time, decrypts the Encrypt field, checks its receive id and parses the
// inner message.
func (c *Crypto) Open(msgSignature, timestamp, nonce string, body []byte) (*Message, error) {
	plain, err := c.decryptBody(msgSignature, timestamp, nonce, body)
	if err != nil {
		return nil, err
	}
	return ParseMessage(plain)
}

func (c *Crypto) open(msgSignature, timestamp, nonce string, encrypt []byte) ([]byte, error) {
	if !c.verify(msgSignature, timestamp, nonce, encrypt) {
		return nil, ErrInvalidSignature
	}
	return c.decrypt(encrypt)
}

// decrypt turns base64 ciphertext into the message it carries, checking
// every length on the way.
func (c *Crypto) decrypt(encrypt []byte) ([]byte, error) {
	if len(encrypt) == 0 {
		return nil, malformed("empty ciphertext")
	}
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(encrypt)))
	n, err := base64.StdEncoding.Decode(buf, encrypt)
	if err != nil {
		return nil, malformed("ciphertext is not valid base64")
	}
	buf = buf[:n]
	if n == 0 || n%aes.BlockSize != 0 {
		return nil, malformed(fmt.Sprintf("ciphertext length %d is not a positive multiple of %d", n, aes.BlockSize))
	}
	cipher.NewCBCDecrypter(c.block, c.key[:aes.BlockSize]).CryptBlocks(buf, buf)

	pad := int(buf[n-1])
	if pad < 1 || pad > padBlock || pad > n {
		return nil, malformed(fmt.Sprintf("padding length %d out of range", pad))
	}
	for _, b := range buf[n-pad:] {
		if int(b) != pad {
			return nil, malformed("padding bytes are not uniform")
		}
	}
	buf = buf[:n-pad]
	if len(buf) < headerLen {
		return nil, malformed(fmt.Sprintf("plaintext is %d bytes, shorter than its %d-byte header", len(buf), headerLen))
	}
	msgLen := uint64(binary.BigEndian.Uint32(buf[randLen:headerLen]))
	if msgLen > uint64(len(buf)-headerLen) {
		return nil, malformed(fmt.Sprintf("message length %d runs past the %d-byte plaintext", msgLen, len(buf)))
	}
	end := headerLen + int(msgLen)
	if subtle.ConstantTimeCompare(buf[end:], c.receiveID) != 1 {
		return nil, ErrReceiverMismatch
	}
	// Full slice expression: appending to the result must not clobber the
	// receive id that follows it.
	return buf[headerLen:end:end], nil
}

// Encrypt encrypts plain for this app's receive id and returns the base64
// ciphertext, i.e. the Encrypt field of an envelope (msg_encrypt).
func (c *Crypto) Encrypt(plain []byte) (string, error) {
	if uint64(len(plain)) > math.MaxUint32 || len(plain) > math.MaxInt-headerLen-len(c.receiveID)-padBlock {
		return "", fmt.Errorf("%w: plaintext is %d bytes", ErrTooLarge, len(plain))
	}
	size := headerLen + len(plain) + len(c.receiveID)
	pad := padBlock - size%padBlock
	buf := make([]byte, size+pad)
	if _, err := io.ReadFull(c.rand, buf[:randLen]); err != nil {
		return "", fmt.Errorf("wecom: encrypt: read random bytes: %w", err)
	}
	binary.BigEndian.PutUint32(buf[randLen:headerLen], uint32(len(plain)))
	copy(buf[headerLen:], plain)
	copy(buf[headerLen+len(plain):], c.receiveID)
	for i := size; i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(c.block, c.key[:aes.BlockSize]).CryptBlocks(buf, buf)
	return base64.StdEncoding.EncodeToString(buf), nil
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
