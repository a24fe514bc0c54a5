package llm

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Backend types accepted in Config.Type.
const (
	TypeDify   = "dify"
	TypeOpenAI = "openai"
)

// Dify app modes accepted in Config.DifyMode.
const (
	// DifyModeChat covers Chatbot, Agent and Chatflow apps
	// (POST /chat-messages). It is the default.
	DifyModeChat = "chat"
	// DifyModeWorkflow covers workflow apps (POST /workflows/run).
	DifyModeWorkflow = "workflow"
	// DifyModeCompletion covers Text Generator apps
	// (POST /completion-messages).
	DifyModeCompletion = "completion"
)

// Defaults applied by New for zero Config fields.
const (
	DefaultDifyBaseURL   = "https://api.dify.ai/v1"
	DefaultOpenAIBaseURL = "https://api.openai.com/v1"
	DefaultQueryInput    = "query"                // Dify input variable that receives the question in workflow and completion apps
	DefaultHistoryTurns  = 10                     // turns of memory sent to OpenAI-compatible backends
	DefaultHistoryChars  = 8000                   // characters (runes) of memory sent to OpenAI-compatible backends
	DefaultIdleTimeout   = 60 * time.Second       // longest silence between stream bytes
	DefaultTimeout       = 5 * time.Minute        // longest whole request, retries included
	DefaultMaxRetries    = 3                      // retries before the first delta
	DefaultRetryBase     = 500 * time.Millisecond // first backoff step; doubles per retry
	DefaultMaxImageBytes = 4 << 20                // largest picture sent to an OpenAI-compatible backend (bytes, before base64)
	DefaultMaxFileText   = 32 << 10               // bytes of plain-text attachments inlined into an OpenAI-compatible prompt
	DefaultMaxAudioBytes = 25 << 20               // largest audio file sent for transcription (OpenAI's own limit)
	maxImageBytesCap     = 20 << 20               // OpenAI refuses pictures above 20 MB
	maxRetryDelay        = 30 * time.Second       // cap on a single computed backoff step
	stopTimeout          = 5 * time.Second        // budget for the Dify stop call after a cancel
)

// Config configures one backend. The zero value of every optional field
// means "use the default"; see the Default constants.
type Config struct {
	// Type is "dify" or "openai".
	Type string `toml:"type"`
	// BaseURL is the API root including the version, e.g.
	// "https://api.dify.ai/v1" or "http://localhost:11434/v1".
	BaseURL string `toml:"base_url"`
	// APIKey is the bearer token. It is secret: it is never logged, never
	// appears in errors, and is left out of JSON encodings (a config dumped
	// by a JSON log handler). Required for Dify.
	APIKey string `toml:"api_key" json:"-"`

	// DifyMode selects the Dify endpoint: "chat" (default; also accepts
	// "agent", "chatflow", "advanced-chat", "agent-chat"), "workflow" or
	// "completion".
	DifyMode string `toml:"dify_mode"`
	// WorkflowOutput names the workflow output variable holding the answer;
	// "" means the first string output.
	WorkflowOutput string `toml:"workflow_output"`
	// QueryInput names the input variable that receives the question in
	// workflow and completion apps (default "query"). It is not set when
	// Request.Inputs already has it.
	QueryInput string `toml:"query_input"`

	// Model is the model name for OpenAI-compatible backends. Required.
	Model string `toml:"model"`
	// SystemPrompt is sent first, as the system message, when not empty.
	SystemPrompt string `toml:"system_prompt"`
	// Temperature is sent when set (0 to 2); nil leaves the server default.
	Temperature *float32 `toml:"temperature"`
	// MaxTokens caps the answer length in tokens; 0 leaves the server
	// default.
	MaxTokens int `toml:"max_tokens"`
	// HistoryTurns is how many recent turns are sent (default 10; negative
	// sends none).
	HistoryTurns int `toml:"history_turns"`
	// HistoryChars caps the characters of history sent (default 8000;
	// negative sends none). Oldest turns are dropped first.
	HistoryChars int `toml:"history_chars"`

	// Vision lets pictures be sent to the model as image_url content parts
	// (data: URIs). Only for models that accept image input; without it a
	// picture fails with ErrNoVision. OpenAI-compatible backends only.
	Vision bool `toml:"vision"`
	// MaxImageBytes is the largest picture sent with vision, in bytes
	// before base64 (default 4 MiB, at most 20 MiB). Bigger pictures fail
	// with ErrFileTooLarge.
	MaxImageBytes int64 `toml:"max_image_bytes"`
	// MaxFileText caps the bytes of plain-text attachments (txt, md, csv,
	// json) inlined into the question (default 32 KiB; negative inlines
	// none, so text files are refused). Longer text is cut, and the prompt
	// says so.
	MaxFileText int `toml:"max_file_text_bytes"`
	// TranscriptionModel is the speech-to-text model for
	// POST {base_url}/audio/transcriptions, e.g. "whisper-1" or a local
	// whisper / SenseVoice server's model name. Setting it makes the
	// backend usable by NewTranscriber; model may then be left empty for
	// a speech-only backend.
	TranscriptionModel string `toml:"transcription_model"`
	// TranscriptionLanguage is the ISO-639-1 language hint sent with
	// audio, e.g. "zh"; "" lets the server detect it.
	TranscriptionLanguage string `toml:"transcription_language"`
	// MaxAudioBytes is the largest audio file sent for transcription
	// (default 25 MiB).
	MaxAudioBytes int64 `toml:"max_audio_bytes"`

	// IdleTimeout is the longest silence allowed while waiting for the
	// response or between stream bytes (default 60s). Keep-alive pings
	// count as activity.
	IdleTimeout time.Duration `toml:"idle_timeout"`
	// Timeout bounds one Stream call including retries (default 5m).
	Timeout time.Duration `toml:"timeout"`
	// MaxRetries is how many times a failed request is retried before the
	// first delta (default 3; negative disables retries).
	MaxRetries int `toml:"max_retries"`
	// RetryBase is the first backoff delay; it doubles per retry, with
	// jitter (default 500ms).
	RetryBase time.Duration `toml:"retry_base"`
}

// LogValue implements slog.LogValuer so that logging a Config never prints
// the API key.
func (c Config) LogValue() slog.Value {
	key := ""
	if c.APIKey != "" {
		key = "<redacted>"
	}
	return slog.GroupValue(
		slog.String("type", c.Type),
		slog.String("base_url", c.BaseURL),
		slog.String("api_key", key),
		slog.String("dify_mode", c.DifyMode),
		slog.String("model", c.Model),
		slog.Bool("vision", c.Vision),
		slog.String("transcription_model", c.TranscriptionModel),
	)
}

// String formats the Config with the API key redacted, so fmt verbs cannot
// leak it either.
func (c Config) String() string {
	c2 := c
	if c2.APIKey != "" {
		c2.APIKey = "<redacted>"
	}
	type plain Config // drops the String method
	return fmt.Sprintf("%+v", plain(c2))
}

// GoString is like String, for the %#v verb.
func (c Config) GoString() string { return "llm.Config" + c.String() }

// FieldError is one problem with one key of a backend Config. Key is the
// TOML key inside the backend's own table (e.g. "base_url"), so a caller that
// embeds Config under [backends.NAME] can locate it without parsing text.
type FieldError struct {
	Key string // TOML key relative to the backend table, e.g. "timeout"
	Msg string // what is wrong and how to fix it, Chinese first
}

// Error formats the problem as "key: message".
func (e FieldError) Error() string { return e.Key + ": " + e.Msg }

// Problems lists every problem in c, in a stable order (empty when c is
// valid). Messages give Chinese first, then English.
func (c Config) Problems() []FieldError {
	var out []FieldError
	bad := func(key, format string, args ...any) {
		out = append(out, FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	switch c.Type {
	case TypeDify, TypeOpenAI:
	case "":
		bad("type", `必须填写 "dify" 或 "openai" / is required ("dify" or "openai")`)
	default:
		bad("type", `只能是 "dify" 或 "openai" / must be "dify" or "openai", not %q`, c.Type)
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("base_url", "必须是 http(s) 地址，例如 https://api.dify.ai/v1 / must be an http or https URL")
		} else if u.RawQuery != "" || u.Fragment != "" {
			bad("base_url", "不能带查询参数或 # / must not have a query or fragment")
		}
	}
	if strings.TrimSpace(c.APIKey) != c.APIKey {
		bad("api_key", "首尾有空格 / has leading or trailing spaces")
	}
	if c.Type == TypeDify {
		if c.APIKey == "" {
			bad("api_key", "dify 后端必须填写：Dify 应用 → 访问 API → API 密钥（app-...）/ is required for dify (the app's API key, app-...)")
		}
		if normDifyMode(c.DifyMode) == "" {
			bad("dify_mode", `只能是 "chat"、"workflow" 或 "completion" / must be "chat", "workflow" or "completion", not %q`, c.DifyMode)
		}
		if c.WorkflowOutput != "" && normDifyMode(c.DifyMode) != DifyModeWorkflow {
			bad("workflow_output", `只用于 dify_mode = "workflow" / is only used with dify_mode = "workflow"`)
		}
		for _, k := range []struct {
			key string
			set bool
		}{
			{"model", c.Model != ""}, {"system_prompt", c.SystemPrompt != ""}, {"temperature", c.Temperature != nil},
			{"max_tokens", c.MaxTokens != 0}, {"history_turns", c.HistoryTurns != 0}, {"history_chars", c.HistoryChars != 0},
		} {
			if k.set {
				bad(k.key, "dify 后端不使用此项，请在 Dify 应用里设置 / is not used by dify backends (set it in the Dify app)")
			}
		}
		for _, k := range []struct {
			key string
			set bool
		}{
			{"vision", c.Vision}, {"max_image_bytes", c.MaxImageBytes != 0}, {"max_file_text_bytes", c.MaxFileText != 0},
			{"transcription_model", c.TranscriptionModel != ""}, {"transcription_language", c.TranscriptionLanguage != ""},
			{"max_audio_bytes", c.MaxAudioBytes != 0},
		} {
			if k.set {
				bad(k.key, "dify 后端不使用此项：附件类型在 Dify 应用编排 → 功能 → 文件上传里设置 / is not used by dify backends (attachments are set in the app's Features → File upload)")
			}
		}
	}
	if c.Type == TypeOpenAI {
		if c.Model == "" && c.TranscriptionModel == "" {
			bad("model", "openai 后端必须填写模型名（只做语音转写时填写 transcription_model）/ is required for openai backends (or transcription_model for a speech-only backend)")
		}
		if c.MaxImageBytes < 0 || c.MaxImageBytes > maxImageBytesCap {
			bad("max_image_bytes", "必须在 0 到 %d（20 MB）之间 / must be between 0 and %d (20 MB)", maxImageBytesCap, maxImageBytesCap)
		} else if c.MaxImageBytes != 0 && !c.Vision {
			bad("max_image_bytes", "只在 vision = true 时使用 / is only used with vision = true")
		}
		if c.MaxAudioBytes < 0 {
			bad("max_audio_bytes", "不能为负数 / must not be negative")
		} else if c.MaxAudioBytes != 0 && c.TranscriptionModel == "" {
			bad("max_audio_bytes", "只在设置了 transcription_model 时使用 / is only used with transcription_model")
		}
		if c.TranscriptionLanguage != "" && c.TranscriptionModel == "" {
			bad("transcription_language", "只在设置了 transcription_model 时使用 / is only used with transcription_model")
		} else if c.TranscriptionLanguage != "" && !isLangCode(c.TranscriptionLanguage) {
			bad("transcription_language", `必须是 ISO-639-1 语言代码，例如 "zh" / must be an ISO-639-1 code such as "zh", not %q`, c.TranscriptionLanguage)
		}
		if strings.TrimSpace(c.TranscriptionModel) != c.TranscriptionModel {
			bad("transcription_model", "首尾有空格 / has leading or trailing spaces")
		}
		if c.Temperature != nil && (*c.Temperature < 0 || *c.Temperature > 2) {
			bad("temperature", "必须在 0 到 2 之间 / must be between 0 and 2")
		}
		if c.MaxTokens < 0 {
			bad("max_tokens", "不能为负数 / must not be negative")
		}
		for _, k := range []struct {
			key string
			set bool
		}{
			{"dify_mode", c.DifyMode != ""}, {"workflow_output", c.WorkflowOutput != ""}, {"query_input", c.QueryInput != ""},
		} {
			if k.set {
				bad(k.key, "只用于 dify 后端 / is only used by dify backends")
			}
		}
	}
	if c.IdleTimeout < 0 {
		bad("idle_timeout", "不能为负数 / must not be negative")
	}
	if c.Timeout < 0 {
		bad("timeout", "不能为负数 / must not be negative")
	}
	if c.IdleTimeout > 0 && c.Timeout > 0 && c.IdleTimeout > c.Timeout {
		bad("idle_timeout", "不能超过 timeout（%s）/ must not exceed timeout (%s)", c.Timeout, c.Timeout)
	}
	if c.RetryBase < 0 {
		bad("retry_base", "不能为负数 / must not be negative")
	}
	return out
}

// Validate reports every problem in c at once, joined with errors.Join. Each
// message starts with prefix and the TOML key, e.g.
// "backends.kb.base_url: 必须是 http(s) 地址… / must be an http or https URL".
// prefix may be "". Use Problems for the structured list.
func (c Config) Validate(prefix string) error {
	var errs []error
	for _, p := range c.Problems() {
		if prefix != "" {
			p.Key = prefix + "." + p.Key
		}
		errs = append(errs, p)
	}
	return errors.Join(errs...)
}

// isLangCode reports a two- or three-letter lower-case language code.
func isLangCode(s string) bool {
	if len(s) < 2 || len(s) > 3 {
		return false
	}
	for _, r := range s {
		if r < 'a' || r > 'z' {
			return false
		}
	}
	return true
}

// normDifyMode maps the accepted spellings of dify_mode to one of the
// DifyMode constants, or "" when m is not accepted.
func normDifyMode(m string) string {
	switch strings.ToLower(m) {
	case "", "chat", "agent", "agent-chat", "chatflow", "advanced-chat":
		return DifyModeChat
	case "workflow":
		return DifyModeWorkflow
	case "completion":
		return DifyModeCompletion
	}
	return ""
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.BaseURL == "" {
		c.BaseURL = DefaultOpenAIBaseURL
		if c.Type == TypeDify {
			c.BaseURL = DefaultDifyBaseURL
		}
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.Type == TypeDify {
		c.DifyMode = normDifyMode(c.DifyMode)
		if c.QueryInput == "" {
			c.QueryInput = DefaultQueryInput
		}
	}
	if c.HistoryTurns == 0 {
		c.HistoryTurns = DefaultHistoryTurns
	}
	if c.HistoryChars == 0 {
		c.HistoryChars = DefaultHistoryChars
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.IdleTimeout > c.Timeout {
		c.IdleTimeout = c.Timeout
	}
	switch {
	case c.MaxRetries == 0:
		c.MaxRetries = DefaultMaxRetries
	case c.MaxRetries < 0:
		c.MaxRetries = 0
	}
	if c.RetryBase == 0 {
		c.RetryBase = DefaultRetryBase
	}
	if c.MaxImageBytes == 0 {
		c.MaxImageBytes = DefaultMaxImageBytes
	}
	if c.MaxFileText == 0 {
		c.MaxFileText = DefaultMaxFileText
	}
	if c.MaxAudioBytes == 0 {
		c.MaxAudioBytes = DefaultMaxAudioBytes
	}
	return c
}

// New builds the backend described by cfg. hc is the HTTP client to use;
// nil means a new client with no overall timeout (timeouts come from cfg).
// log may be nil. The returned Backend also implements Checker and
// FileSupport.
func New(cfg Config, hc *http.Client, log *slog.Logger) (Backend, error) {
	if err := cfg.Validate(""); err != nil {
		return nil, fmt.Errorf("llm: invalid config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if hc == nil {
		hc = &http.Client{}
	}
	cfg = cfg.withDefaults()
	if hc.Timeout > 0 && hc.Timeout < cfg.Timeout {
		log.Warn("http client timeout is shorter than the llm timeout and will cut long answers",
			"client_timeout", hc.Timeout, "timeout", cfg.Timeout)
	}
	switch cfg.Type {
	case TypeDify:
		return newDify(cfg, hc, log.With("component", "llm", "backend_type", TypeDify)), nil
	default:
		if cfg.Model == "" {
			return nil, errors.New("llm: invalid config: model: 这是只做语音转写的后端（只有 transcription_model），不能回答问题 / this backend only has transcription_model and cannot answer questions")
		}
		return newOpenAI(cfg, hc, log.With("component", "llm", "backend_type", TypeOpenAI))
	}
}
