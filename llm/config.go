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
	}
	if c.Type == TypeOpenAI {
		if c.Model == "" {
			bad("model", "openai 后端必须填写模型名 / is required for openai backends")
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
	return c
}

// New builds the backend described by cfg. hc is the HTTP client to use;
// nil means a new client with no overall timeout (timeouts come from cfg).
// log may be nil. The returned Backend also implements Checker.
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
		return newDify(cfg, hc, log.With("component", "llm", "backend", TypeDify)), nil
	default:
		return newOpenAI(cfg, hc, log.With("component", "llm", "backend", TypeOpenAI))
	}
}
