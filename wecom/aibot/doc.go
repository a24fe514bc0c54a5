// Package aibot speaks the protocol of WeCom's 智能机器人 (AI bot): the
// long connection (WebSocket, wss://openws.work.weixin.qq.com) and the
// webhook mode (API 模式：URL 回调), as Tencent's own bot SDK
// (@wecom/aibot-node-sdk 1.0.7) does. It knows nothing of LLMs, storage or
// HTTP servers; the bridge wires it in.
//
// # Frames
//
// Every long-connection message is a JSON text frame {cmd, headers:{req_id},
// body}; a frame without cmd is an ack {headers:{req_id}, errcode, errmsg}.
// ParseFrame and ParseMessage parse them defensively (size limits, unknown
// fields ignored, errors wrapping wecom.ErrMalformed / wecom.ErrTooLarge).
//
// # Long connection
//
// A Client dials, sends aibot_subscribe {bot_id, secret} as its first frame
// and checks the ack (an *AuthError when refused), pings every
// HeartbeatInterval and redials after MaxMissedPings unanswered pings, and
// after any drop redials with jittered exponential back-off, 1 s doubling to
// 30 s. Auth failures back off the same way and are logged once per attempt.
// Callbacks go to the Handler one at a time, from a goroutine that does not
// block reading, so acks keep flowing while the Handler runs.
//
// Displacement: WeCom allows one live connection per bot. When another one
// subscribes, WeCom sends the old one a disconnected_event and closes it.
// The Client does not fight back: it stays down for DisplacedDelay
// (5 minutes by default, doubling per consecutive displacement up to an
// hour), or, with a negative DisplacedDelay, Run returns ErrDisplaced and
// stays down until it is called again. The state is StateDisplaced meanwhile.
//
// # Replies
//
// RespondStream, RespondWelcome and SendMarkdown (and the generic Respond)
// wait for their ack and return a non-zero errcode as an *APIError
// (errors.Is ErrInvalidReqID for 846605, ErrStreamExpired for 846608).
// Frames for one req_id are sent strictly one at a time: the next only
// after the previous one's ack or AckTimeout (5 s), as the SDK does.
// Content over MaxContentBytes (20480) is ErrContentTooLarge, never
// truncated: the caller splits. Stream coalesces updates of one stream
// (the latest text wins while a frame waits for its ack) and reports what
// the user was shown.
//
// # Webhook mode
//
// Webhook verifies and decrypts the JSON envelope {"encrypt": …} with
// receive id "" (the wecom package's WXBizMsgCrypt), answers the GET
// verification, and seals passive replies {encrypt, msgsignature,
// timestamp, nonce} carrying a stream body.
//
// # Media
//
// DecryptMedia decrypts downloaded images, files and videos (AES-256-CBC,
// key = base64(aeskey), IV = key[:16], PKCS#7 to 32-byte blocks) and
// MediaFilename reads the name from Content-Disposition (RFC 5987 first).
//
// # Caveats
//
//   - A req_id dies with its connection: after a reconnect, replies on an
//     old req_id fail with 846605. Continue with SendMarkdown to
//     Message.ChatKey.
//   - A Respond whose caller gives up (ctx done) still holds its req_id's
//     lane until the ack or the timeout, so ordering is never violated.
//   - A write is never bound to the caller's ctx: cancelling a write would
//     close the whole connection (coder/websocket semantics).
//   - The Secret is sent only in the subscribe frame; it is never logged and
//     never part of an error.
//   - WeCom caps a user at 3 messages in flight per bot; the Client does not
//     enforce it (the fake in wecom/emulator does).
package aibot
