// Package wecom speaks the WeCom (企业微信) protocol for a self-built app
// (自建应用): callback crypto and parsing, the server API client, and reply
// splitting. It depends only on the standard library and
// golang.org/x/sync, and knows nothing about HTTP servers, LLMs or storage.
//
// # Callbacks
//
// A Crypto holds one app's callback settings (Token, EncodingAESKey and the
// CorpID as receive id). Crypto.VerifyURL answers the GET handshake made
// when the callback URL is saved; Crypto.Open verifies, decrypts and parses
// a POST callback into a Message, in either of the two envelope formats the
// admin console offers (XML or JSON). Message.DedupKey identifies a message
// across WeCom's retries. Crypto.Seal and Crypto.SealReply produce
// encrypted payloads for simulators and passive replies.
//
// The scheme is WeCom's WXBizMsgCrypt: msg_signature is the SHA-1 of the
// sorted token, timestamp, nonce and ciphertext; the ciphertext is
// AES-256-CBC with IV = key[:16] over random(16) || BE32(len) || msg ||
// receiveid, padded PKCS#7-style to a multiple of 32 bytes.
//
// # Caveats
//
//   - Pass VerifyURL the URL-decoded query values. A '+' in echostr that a
//     proxy left unencoded decodes to a space and fails the signature check.
//   - WeCom pads to 32-byte blocks, so pad values 17..32 are legitimate. A
//     generic 16-byte PKCS#7 unpadder rejects real traffic.
//   - No timestamp freshness window is applied: WeCom documents none. Replays
//     of a genuine callback are caught by deduplicating on Message.DedupKey.
//   - Decrypt bounds its input (DefaultMaxBodySize, WithMaxBodySize) and
//     rejects XML directives (DOCTYPE, ENTITY), undeclared entities and deep
//     nesting. Malformed input never panics; it returns an error that wraps
//     ErrMalformed, ErrInvalidSignature, ErrReceiverMismatch or ErrTooLarge.
package wecom
