// Package wecom speaks the WeCom (企业微信) protocol for a self-built app
// (自建应用): callback crypto and parsing, the server API client, and reply
// splitting. It depends only on the standard library and golang.org/x/sync
// and knows nothing of HTTP servers, LLMs or storage.
//
// # Callbacks
//
// A Crypto holds one app's callback settings (Token, EncodingAESKey and the
// CorpID as receive id). Crypto.VerifyURL answers the GET handshake made
// when the callback URL is saved; Crypto.Open verifies, decrypts and parses
// a POST callback into a Message, in either envelope format the admin
// console offers (XML or JSON). Message.DedupKey identifies a message
// across WeCom's retries. Crypto.Encrypt, Envelope.Marshal and Signature
// are the parts from which package emulator builds what WeCom sends.
//
// The scheme is WeCom's WXBizMsgCrypt: msg_signature is the SHA-1 of the
// sorted token, timestamp, nonce and ciphertext; the ciphertext is
// AES-256-CBC with IV = key[:16] over random(16) || BE32(len) || msg ||
// receiveid, padded PKCS#7-style to a multiple of 32 bytes.
//
// # API client
//
// A Client calls the server API for one app: Send (message/send, text and
// markdown), Recall, UserInfo (auth/getuserinfo for OAuth and QR-login
// codes), UserDepartments, Agent, Media (media/get, temporary media by
// media_id), and the OAuthURL and QRLoginURL builders. It caches the
// access token, refreshes it five minutes before expiry with a single
// gettoken shared by all waiting callers
// (golang.org/x/sync/singleflight), and on 40001, 40014 or 42001 fetches a
// new token and tries once more. It repeats nothing else: Classify is the
// one place that says what a failure means (heals or not, and the minimum
// wait: about a minute after 45009 and 45033, slowly for configuration
// problems such as 60020, never for 81013 or 45002), and Retry.Backoff
// spaces a caller's attempts. Errors from WeCom are *APIError, whose Hint
// tells an operator what to change.
//
// # Splitting
//
// Split cuts a reply into pieces under message/send's 2048-byte limit at
// paragraph, line, sentence or word boundaries, never inside a UTF-8
// character, and keeps fenced code blocks whole when they fit.
//
// # Caveats
//
//   - Pass VerifyURL the URL-decoded query values. A '+' in echostr that a
//     proxy left unencoded decodes to a space and fails the signature check.
//   - WeCom pads to 32-byte blocks, so pad values 17..32 are legitimate. A
//     generic 16-byte PKCS#7 unpadder rejects real traffic.
//   - No timestamp freshness window is applied: WeCom documents none.
//     Replays of a genuine callback are caught by deduplicating on
//     Message.DedupKey.
//   - Open bounds its input (DefaultMaxBodySize, WithMaxBodySize) and
//     rejects XML directives (DOCTYPE, ENTITY), undeclared entities and deep
//     nesting. Its XML reader is a single pass over the bytes, not
//     encoding/xml (over a quarter of intake's CPU went there); it accepts
//     a subset of what encoding/xml accepts, with the same result, which a
//     differential fuzz test checks. Malformed input never panics; it
//     returns an error that wraps ErrMalformed, ErrInvalidSignature,
//     ErrReceiverMismatch or ErrTooLarge.
//   - A caller that retries Send after a network error may deliver twice:
//     WeCom may have delivered already. Only OutMessage.EnableDuplicateCheck
//     prevents that, and it drops any request whose whole JSON equals one
//     sent within the interval, a genuinely repeated message too.
//   - The access token travels in the URL query. Errors from net/http
//     (*url.Error) are rewritten with the query replaced by "REDACTED", so
//     neither the token nor the secret reaches an error string or a log.
//   - A token flight runs detached from the caller that started it (bounded
//     to 30 seconds), so one cancelled caller does not fail the others.
//   - message/send limits each member to 30 messages a minute and 1000 an
//     hour per app, counted by WeCom's arrival time, and silently drops the
//     rest while answering errcode 0: Send cannot tell.
package wecom
