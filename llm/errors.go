package llm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors. Callers test for them with errors.Is; an *APIError matches
// the sentinel that describes its cause.
var (
	// ErrConversationNotFound means Dify does not know the conversation id
	// for this user: it was deleted, belongs to another user, or has been
	// closed (conversation_completed). Drop the stored id and ask again
	// with an empty ConversationID.
	ErrConversationNotFound = errors.New("llm: conversation not found")
	// ErrUnauthorized means the service rejected the API key (HTTP 401).
	ErrUnauthorized = errors.New("llm: unauthorized")
	// ErrAppUnavailable means the Dify app is disabled, deleted, or its API
	// service is turned off (HTTP 403), or its configuration is broken.
	ErrAppUnavailable = errors.New("llm: app unavailable")
	// ErrEndpointNotFound means the API path does not exist on the server
	// (HTTP 404 that is not about a conversation or model), which almost
	// always means base_url is wrong.
	ErrEndpointNotFound = errors.New("llm: endpoint not found")
	// ErrWrongAppMode means the Dify app type does not match dify_mode.
	ErrWrongAppMode = errors.New("llm: app mode does not match dify_mode")
	// ErrQuotaExceeded means the provider quota or plan limit is used up;
	// retrying will not help.
	ErrQuotaExceeded = errors.New("llm: quota exceeded")
	// ErrModelNotFound means the configured model does not exist on the
	// server or the key has no access to it.
	ErrModelNotFound = errors.New("llm: model not found")
	// ErrRateLimited means the service asked us to slow down (HTTP 429) and
	// the retries were used up.
	ErrRateLimited = errors.New("llm: rate limited")
	// ErrIdleTimeout means no bytes arrived within the idle timeout.
	ErrIdleTimeout = errors.New("llm: idle timeout waiting for the stream")
	// ErrTimeout means the whole request took longer than the overall
	// timeout.
	ErrTimeout = errors.New("llm: overall timeout exceeded")
	// ErrIncompleteStream means the stream ended before its final event,
	// usually because the connection was cut.
	ErrIncompleteStream = errors.New("llm: stream ended before the answer was complete")
	// ErrEventTooLarge means one server-sent event exceeded the size limit.
	ErrEventTooLarge = errors.New("llm: stream event too large")
)

// APIError is an error reported by the remote service, either as an HTTP
// error status before the stream started or as an error event inside it.
type APIError struct {
	// Backend is "dify" or "openai".
	Backend string
	// Status is the HTTP status, or the status carried by a mid-stream error
	// event; 0 when the service gave none.
	Status int
	// Code is the service's machine-readable code, such as "not_found",
	// "invalid_api_key" or "provider_quota_exceeded".
	Code string
	// Message is the service's human-readable message, with any secret
	// removed.
	Message string
	// Hint names the setting to fix, such as "check api_key"; "" when
	// there is nothing to configure (e.g. a transient server error).
	Hint string
	// RetryAfter is the delay the server asked for (Retry-After), or 0.
	RetryAfter time.Duration
	// MidStream reports that the error arrived as an event inside a stream
	// that had already started (HTTP status 200).
	MidStream bool

	kind error // sentinel matched by Is; nil for none
}

// Error formats the error without any secret.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("llm: ")
	if e.Backend != "" {
		b.WriteString(e.Backend)
		b.WriteString(": ")
	}
	if e.MidStream {
		b.WriteString("stream error")
	} else {
		b.WriteString("request failed")
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, ": status %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ": %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Hint != "" {
		fmt.Fprintf(&b, " (%s)", e.Hint)
	}
	return b.String()
}

// Is reports whether target is the sentinel error describing e, so that
// errors.Is(err, ErrConversationNotFound) and similar checks work.
func (e *APIError) Is(target error) bool {
	return e.kind != nil && target == e.kind
}

// Temporary reports whether the same request may succeed if retried later:
// HTTP 408, 429 (other than quota or plan limits) and 5xx.
func (e *APIError) Temporary() bool {
	switch {
	case e.kind == ErrQuotaExceeded:
		return false
	case e.Status == 408, e.Status == 429, e.Status >= 500:
		return true
	}
	// Mid-stream errors carry no HTTP status; their codes tell. OpenAI's
	// own stream error spells its type "server_ error".
	switch strings.ReplaceAll(e.Code, " ", "") {
	case "too_many_requests", "internal_server_error", "server_error":
		return true
	}
	return false
}

// classify fills in kind and Hint from the status and code. requestPath is
// the path that was called; hadConversation reports whether a conversation
// id was sent.
func (e *APIError) classify(hadConversation bool) {
	code := strings.ToLower(e.Code)
	msg := strings.ToLower(e.Message)
	switch {
	case (e.Status == 404 && code == "not_found" && strings.HasPrefix(msg, "conversation not exists")) ||
		(code == "conversation_completed"):
		if hadConversation || code == "conversation_completed" {
			e.kind = ErrConversationNotFound
			e.Hint = "start a new conversation"
			return
		}
	case code == "provider_quota_exceeded" || code == "insufficient_quota" || code == "rate_limit_error" ||
		strings.Contains(msg, "exceeded your current quota"):
		e.kind = ErrQuotaExceeded
		e.Hint = "provider quota or plan limit exhausted; top up or check the provider credentials"
		return
	case code == "model_not_found" || code == "model_not_exist" || code == "model_currently_not_support" ||
		(strings.Contains(msg, "model") && (strings.Contains(msg, "does not exist") || strings.Contains(msg, "not found"))):
		e.kind = ErrModelNotFound
		e.Hint = "check model"
		return
	case code == "provider_not_initialize":
		e.kind = ErrAppUnavailable
		e.Hint = "configure the model provider credentials in Dify"
		return
	case code == "not_chat_app" || code == "not_workflow_app" || code == "not_completion_app":
		e.kind = ErrWrongAppMode
		e.Hint = "check dify_mode"
		return
	case code == "file_too_large":
		e.kind = ErrFileTooLarge
		e.Hint = "文件超过 Dify 的上传大小限制（Dify 的 UPLOAD_FILE_SIZE_LIMIT、UPLOAD_IMAGE_FILE_SIZE_LIMIT 等环境变量）/ exceeds Dify's upload size limit (its UPLOAD_*_FILE_SIZE_LIMIT settings)"
		return
	case code == "unsupported_file_type":
		e.kind = ErrUnsupportedFile
		e.Hint = "Dify 不允许上传此类文件（Dify 的 UPLOAD_FILE_EXTENSION_BLACKLIST）/ Dify refuses this file type (its UPLOAD_FILE_EXTENSION_BLACKLIST)"
		return
	case code == "no_file_uploaded" || code == "too_many_files" || code == "filename_not_exists_error":
		e.Hint = "上传请求不完整，这是桥接程序的缺陷，请报告 / malformed upload: a bridge bug, please report it"
		return
	case code == "invalid_param" && strings.HasPrefix(msg, "file validation failed"):
		// The message ends with the file name, which is the user's and
		// stays out of logs.
		if i := strings.Index(e.Message, " for file:"); i >= 0 {
			e.Message = e.Message[:i]
		}
		e.kind = ErrFileNotAccepted
		e.Hint = difyFileSetting + "：允许该文件类型并勾选「本地上传」/ allow this file type and Local upload"
		return
	case code == "invalid_param" && strings.HasPrefix(msg, "number of") && strings.Contains(msg, "files exceeds"):
		e.kind = ErrTooManyFiles
		e.Hint = difyFileSetting + "：调大「最大上传数」/ raise the upload limit"
		return
	case code == "invalid_param" && strings.HasPrefix(msg, "invalid upload file"):
		e.Hint = "附件必须由提问的同一用户上传 / attachments must be uploaded by the asking user"
		return
	}
	switch {
	case e.Status == 401:
		e.kind = ErrUnauthorized
		e.Hint = "check api_key"
	case e.Status == 403 || code == "app_unavailable":
		e.kind = ErrAppUnavailable
		e.Hint = "check that the app exists, is enabled and its API is on, and that api_key belongs to it"
	case e.Status == 413:
		// No Dify code: a proxy in front refused the body.
		e.kind = ErrFileTooLarge
		e.Hint = "Dify 前面的 nginx 限制了请求大小（client_max_body_size，Dify 的 NGINX_CLIENT_MAX_BODY_SIZE）/ the proxy in front of Dify limits the body size (client_max_body_size)"
	case e.Status == 404:
		e.kind = ErrEndpointNotFound
		e.Hint = "check base_url (it usually ends in /v1)"
	case e.Status == 429:
		e.kind = ErrRateLimited
	}
}

// redact replaces every occurrence of secret in s.
func redact(s, secret string) string {
	if secret == "" || !strings.Contains(s, secret) {
		return s
	}
	return strings.ReplaceAll(s, secret, "<redacted>")
}

// timeoutError is returned when the idle or overall timeout ends a
// request; it matches its sentinel and context.DeadlineExceeded.
type timeoutError struct {
	sentinel error
	after    time.Duration
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("%s (%s)", e.sentinel.Error(), e.after)
}

func (e *timeoutError) Is(target error) bool {
	return target == e.sentinel || target == context.DeadlineExceeded
}

// Timeout reports true, so that net.Error-style checks treat it as one.
func (e *timeoutError) Timeout() bool { return true }

// backendError prefixes an error with the backend name without repeating
// the "llm: " prefix that package errors already carry.
type backendError struct {
	backend string
	err     error
}

func (e *backendError) Error() string {
	return "llm: " + e.backend + ": " + strings.TrimPrefix(e.err.Error(), "llm: ")
}

func (e *backendError) Unwrap() error { return e.err }

func wrap(backend string, err error) error { return &backendError{backend: backend, err: err} }
