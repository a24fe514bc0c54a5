package wecom

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Sentinel errors. Every error returned by this package that falls into one
// of these classes wraps the matching sentinel, so callers can branch with
// errors.Is. None of the messages carry secret material.
var (
	// ErrInvalidSignature means msg_signature did not match the payload
	// (签名验证错误, -40001 in the official crypto libraries).
	ErrInvalidSignature = errors.New("wecom: invalid signature")

	// ErrMalformed means the input could not be parsed or decrypted: bad
	// envelope, bad base64, bad ciphertext length or padding, truncated
	// plaintext, a forbidden XML construct and the like. The wrapping error
	// names the reason.
	ErrMalformed = errors.New("wecom: malformed input")

	// ErrReceiverMismatch means the payload decrypted correctly but was
	// addressed to a different receive id (ReceiveId 校验错误, -40005).
	ErrReceiverMismatch = errors.New("wecom: receive id mismatch")

	// ErrTooLarge means an input or an outgoing message is over its size
	// limit.
	ErrTooLarge = errors.New("wecom: input too large")

	// ErrInvalidKey means the EncodingAESKey is not 43 characters of base64
	// that decode to 32 bytes (AESKey 非法, -40004).
	ErrInvalidKey = errors.New("wecom: invalid EncodingAESKey")

	// ErrInvalidConfig means a Config or a call argument failed validation.
	ErrInvalidConfig = errors.New("wecom: invalid configuration")
)

// malformed returns an error that wraps ErrMalformed with a short reason.
// The reason must never contain key material or decrypted content.
func malformed(reason string) error {
	return fmt.Errorf("%w: %s", ErrMalformed, reason)
}

// Path of the gettoken API; a 40001 from it means a wrong secret, not a stale
// access token.
const pathGetToken = "/cgi-bin/gettoken"

// APIError is an error answer from the WeCom API: a non-zero errcode in the
// JSON body. Use errors.As to reach it.
type APIError struct {
	// Code is the WeCom errcode (全局错误码).
	Code int
	// Msg is WeCom's errmsg, unchanged. It may carry the caller's egress IP
	// (see EgressIP) but never a secret.
	Msg string
	// Path is the API path that answered, e.g. "/cgi-bin/message/send".
	// It can be empty for errors built by hand.
	Path string
}

// Error returns the code, WeCom's message and, when there is one, an operator
// hint.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("errcode ")
	b.WriteString(strconv.Itoa(e.Code))
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	if h := e.Hint(); h != "" {
		b.WriteString(" (hint: ")
		b.WriteString(h)
		b.WriteString(")")
	}
	return b.String()
}

// Temporary reports whether the same call may succeed later without any
// change on our side: -1 (系统繁忙), 45009 (接口调用超过限制, blocked for
// about a minute) and 45033 (接口并发调用超过限制).
func (e *APIError) Temporary() bool {
	switch e.Code {
	case -1, 45009, 45033:
		return true
	}
	return false
}

// EgressIP returns the caller IP address that WeCom reports in errmsg
// ("..., from ip: 203.0.113.7, ..."), as sent with 60020 and some other
// errors. It returns "" when errmsg carries no valid address.
func (e *APIError) EgressIP() string {
	const marker = "from ip:"
	i := strings.Index(strings.ToLower(e.Msg), marker)
	if i < 0 {
		return ""
	}
	rest := strings.TrimLeft(e.Msg[i+len(marker):], " ")
	end := 0
	for end < len(rest) && isIPChar(rest[end]) {
		end++
	}
	addr, err := netip.ParseAddr(rest[:end])
	if err != nil {
		return ""
	}
	return addr.String()
}

func isIPChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '.' || c == ':'
}

// Hint returns a short bilingual (Chinese, then English) explanation of what
// an operator should do about the errors admins meet most often, or "" for
// other codes.
func (e *APIError) Hint() string {
	switch e.Code {
	case -1:
		return "企业微信系统繁忙，稍后重试即可 / WeCom is busy; retry later"
	case 40001:
		if e.Path == pathGetToken || e.Path == "" {
			return "secret 不正确或应用已停用：核对配置项 apps.secret 是否为本应用（应用管理 → 应用 → Secret）的最新 secret，并确认应用已启用 / " +
				"wrong secret or disabled app: check config key apps.secret against the app's current Secret and make sure the app is enabled"
		}
		return "access_token 无效，已重新获取 / the access token was rejected; a new one is fetched"
	case 40007:
		return "media_id 无效或已过期：临时素材只在上传后 3 天内有效 / invalid media_id: temporary media expire three days after upload"
	case 40013:
		return "CorpID 不正确：在管理后台 我的企业 → 企业信息 中核对 corp_id / invalid CorpID: check corp_id against 我的企业 → 企业信息 in the admin console"
	case 40014, 42001:
		return "access_token 无效或已过期，会自动重新获取；若持续出现，检查是否有其他程序在用同一 secret 频繁获取 token / " +
			"access token invalid or expired; it is refetched automatically. If this persists, check that nothing else fetches tokens with the same secret"
	case 40029:
		return "OAuth code 无效：code 只能使用一次且 5 分钟内有效，请让用户重新登录 / invalid OAuth code: codes are single-use and expire after 5 minutes; ask the user to sign in again"
	case 40056:
		return "agentid 不正确：核对配置中的 agent_id 与 应用管理 → 应用 中的 AgentId / invalid agentid: check agent_id against the app's AgentId"
	case 40058:
		return "请求参数不合法（撤回消息时需与发送消息使用同一应用） / invalid parameter (a recall must use the same app that sent the message)"
	case 41001:
		return "缺少 access_token 参数 / access_token missing from the request"
	case 42052:
		return "只能撤回 24 小时内发送的消息 / only messages sent within the last 24 hours can be recalled"
	case 45002:
		return "消息内容超过 2048 字节，请先分段 / message content over 2048 bytes; split it first"
	case 45009:
		return "接口调用超过频率限制，通常被拦截 60 秒；检查是否重复获取 access_token（每个应用只应缓存一个） / " +
			"API rate limit hit, usually blocked for 60 seconds; make sure access tokens are cached (one per app)"
	case 45033:
		return "接口并发调用超过限制，稍后重试 / too many concurrent calls to this API; retry later"
	case 48002:
		return "该 secret 无权调用此接口：发消息须使用自建应用自己的 secret（不能用通讯录同步等 secret），并确认应用有相应接口权限 / " +
			"this secret may not call the API: sending needs the self-built app's own secret, not e.g. the contacts-sync secret"
	case 50001:
		return "redirect_uri 的域名未登记为可信域名：在 应用管理 → 应用 → 网页授权及JS-SDK / 企业微信授权登录 中设置可信域名（须完全匹配，包括端口） / " +
			"redirect_uri host is not a trusted domain (可信域名) of the app; it must match exactly, port included"
	case 60011:
		return "无权限：成员不在应用可见范围内，请在 应用管理 → 应用 → 可见范围 中添加 / no privilege: the member is outside the app's visible range (可见范围)"
	case 60020:
		ip := e.EgressIP()
		if ip == "" {
			ip = "本机出口IP / this host's egress IP"
		}
		return "请管理员将 " + ip + " 添加到 应用管理 → 应用 → 企业可信IP，约 1 分钟后生效 / ask the admin to add " + ip +
			" to 应用管理 → 应用 → 企业可信IP (trusted IPs); it takes about a minute to apply"
	case 60111:
		return "成员 UserID 不存在 / userid not found in the contacts"
	case 81013:
		return "接收人全部无效或不在应用可见范围内：检查 UserID 是否正确，并在 应用管理 → 应用 → 可见范围 中加入接收人 / " +
			"all recipients invalid or outside the app's visible range (可见范围)"
	case 301002:
		return "access_token 与 agentid 不属于同一应用：核对 agent_id 与 secret 是否来自同一应用 / the access token belongs to another app; agent_id and secret must come from the same app"
	}
	return ""
}

// IsTokenError reports whether err carries an APIError which means that the
// access token used for the call was rejected: 40014 (不合法的access_token),
// 42001 (access_token已过期) or 40001 from an API other than gettoken. A
// 40001 from gettoken itself means a wrong secret and is not a token error.
func IsTokenError(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Code {
	case 40014, 42001:
		return true
	case 40001:
		return ae.Path != pathGetToken
	}
	return false
}

// PartialError reports recipients that message/send rejected while still
// delivering to the others (errcode 0 with invaliduser and friends). Send
// returns it together with a non-nil SendResult.
type PartialError struct {
	InvalidUser    []string
	InvalidParty   []string
	InvalidTag     []string
	UnlicensedUser []string
}

// Error lists the rejected recipients.
func (e *PartialError) Error() string {
	var parts []string
	add := func(name string, v []string) {
		if len(v) > 0 {
			parts = append(parts, name+"="+strings.Join(v, "|"))
		}
	}
	add("invaliduser", e.InvalidUser)
	add("invalidparty", e.InvalidParty)
	add("invalidtag", e.InvalidTag)
	add("unlicenseduser", e.UnlicensedUser)
	return "wecom: message delivered only in part: " + strings.Join(parts, ", ")
}
