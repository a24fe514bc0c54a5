package bridge

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// DefaultConfigPath is where the daemon looks for its config file.
const DefaultConfigPath = "/etc/wecom-bridge/config.toml"

// Defaults for Config. Durations are written as strings in TOML ("90s").
const (
	DefaultListen           = "127.0.0.1:8080"
	DefaultStoragePath      = "/var/lib/wecom-bridge/bridge.db"
	DefaultReadTimeout      = 10 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultIdleTimeout      = 120 * time.Second
	DefaultMaxBodyBytes     = 64 << 10
	DefaultShutdownGrace    = 20 * time.Second
	DefaultWorkers          = 64
	DefaultDedupWindow      = 72 * time.Hour
	DefaultRetention        = 180 * 24 * time.Hour
	DefaultThinkingAfter    = 5 * time.Second
	DefaultSessionTTL       = 7 * 24 * time.Hour
	DefaultSendRetryFor     = 10 * time.Minute
	DefaultDepartmentTTL    = 10 * time.Minute
	DefaultMaxMessagesPerMi = 30 // WeCom: at most 30 messages a minute to one member per app
)

// Secret is a config value that must never be printed. In the TOML file it
// may be written literally, as "env:NAME" (read from the environment) or as
// "file:/path" (read from a file, e.g. a systemd credential).
type Secret string

// String redacts the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "<redacted>"
}

// GoString redacts the secret for %#v.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// LogValue redacts the secret in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText redacts the secret in JSON, TOML and other encodings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Value returns the secret itself, for the code that needs it.
func (s Secret) Value() string { return string(s) }

// Config is the whole daemon configuration (one TOML file).
type Config struct {
	Server   ServerConfig          `toml:"server"`
	Log      LogConfig             `toml:"log"`
	Storage  StorageConfig         `toml:"storage"`
	Workers  WorkersConfig         `toml:"workers"`
	WeCom    WeComConfig           `toml:"wecom"`
	History  HistoryConfig         `toml:"history"`
	Media    MediaConfig           `toml:"media"`
	Texts    Texts                 `toml:"texts"`
	Apps     []AppConfig           `toml:"apps"`
	Bots     []BotConfig           `toml:"bots"`
	Backends map[string]llm.Config `toml:"backends"` // [backends.NAME]; llm.Config redacts api_key
}

// ServerConfig is the [server] section.
type ServerConfig struct {
	Listen        string        `toml:"listen"`
	PublicURL     string        `toml:"public_url"`
	ReadTimeout   time.Duration `toml:"read_timeout"`
	WriteTimeout  time.Duration `toml:"write_timeout"`
	IdleTimeout   time.Duration `toml:"idle_timeout"`
	MaxBodyBytes  int           `toml:"max_body_bytes"`
	ShutdownGrace time.Duration `toml:"shutdown_grace"`
	// VerifyFiles maps WW_verify_*.txt names to their content (可信域名 check).
	VerifyFiles map[string]string `toml:"verify_files"`
	// Metrics enables /metrics (default true).
	Metrics *bool `toml:"metrics"`
}

// LogConfig is the [log] section.
type LogConfig struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
	// Timestamps: "auto" (off under systemd's journal), "on" or "off".
	Timestamps string `toml:"timestamps"`
}

// StorageConfig is the [storage] section.
type StorageConfig struct {
	Path        string        `toml:"path"`
	Retention   time.Duration `toml:"history_retention"` // 0 keeps history forever
	DedupWindow time.Duration `toml:"dedup_window"`
}

// WorkersConfig is the [workers] section.
type WorkersConfig struct {
	Count int `toml:"count"` // answers produced at once
}

// WeComConfig is the [wecom] section.
type WeComConfig struct {
	CorpID         string        `toml:"corp_id"`
	APIBase        string        `toml:"api_base"`
	OAuthBase      string        `toml:"oauth_base"`
	SSOBase        string        `toml:"sso_base"`
	RequestTimeout time.Duration `toml:"request_timeout"`
	// SendRetryFor bounds how long one piece is retried before giving up.
	SendRetryFor time.Duration `toml:"send_retry_for"`
	// RateLimitWait is how long to wait after errcode 45009 (default 60s).
	RateLimitWait time.Duration `toml:"rate_limit_wait"`
	// PerMemberPerMinute is the send budget to one member (WeCom drops more).
	PerMemberPerMinute int `toml:"per_member_per_minute"`
	// DuplicateCheckInterval is the window of message/send's duplicate
	// check for answer pieces (see the package caveats). Default 10m.
	DuplicateCheckInterval time.Duration `toml:"duplicate_check_interval"`
	// MaxCallbackAge rejects callbacks whose signed timestamp is older
	// (replays). Default 24h; must be shorter than storage.dedup_window.
	MaxCallbackAge time.Duration `toml:"max_callback_age"`
	// DepartmentCacheTTL is how long a member's departments are cached
	// for allow_departments checks. Default 10m.
	DepartmentCacheTTL time.Duration `toml:"department_cache_ttl"`
	// Proxy is an egress proxy for every WeCom API call ("http://host:port",
	// https:// or socks5://), so that a fixed-IP proxy can be put in
	// 企业可信IP. Empty honours HTTPS_PROXY / HTTP_PROXY / NO_PROXY.
	Proxy string `toml:"proxy"`
}

// MediaConfig is the [media] section: pictures, files and voice messages
// in questions.
type MediaConfig struct {
	// Enabled turns attachments on (default true); off, they get the
	// texts.unsupported reply.
	Enabled *bool `toml:"enabled"`
	// MaxBytes caps one attachment (default 20 MB, WeCom's own limit).
	MaxBytes int64 `toml:"max_bytes"`
	// Allowed lists the kinds taken: "image", "file", "voice", "video".
	Allowed []string `toml:"allowed"`
	// Hold is how long a picture or file sent alone waits for the text
	// question that usually follows (default 2m).
	Hold time.Duration `toml:"hold"`
	// DefaultPrompt is asked with attachments that no text followed.
	DefaultPrompt string `toml:"default_prompt"`
	// SpeechBackend names the [backends.NAME] (an OpenAI-compatible
	// /audio/transcriptions with transcription_model) that transcribes the
	// app's voice messages (AMR, converted with ffmpeg). "" = no app voice.
	SpeechBackend string `toml:"speech_backend"`
	// FFmpeg is the ffmpeg program (default "ffmpeg" on PATH).
	FFmpeg string `toml:"ffmpeg"`
}

// Media defaults.
const (
	DefaultMediaMaxBytes = 20 << 20
	DefaultMediaHold     = 2 * time.Minute
	DefaultMediaPrompt   = "请描述这张图片（或文件）的内容，并指出其中的问题。"
)

func (m MediaConfig) enabled() bool { return m.Enabled == nil || *m.Enabled }

// allows reports whether attachments of kind are taken.
func (m MediaConfig) allows(kind string) bool {
	return m.enabled() && slices.Contains(m.Allowed, kind)
}

// HistoryConfig is the [history] section (the employee history page).
type HistoryConfig struct {
	Enabled    *bool         `toml:"enabled"`
	LoginApp   string        `toml:"login_app"`
	SessionKey Secret        `toml:"session_key"`
	SessionTTL time.Duration `toml:"session_ttl"`
	Admins     []string      `toml:"admins"`
}

// AppConfig is one [[apps]] entry: a WeCom self-built app.
type AppConfig struct {
	Name           string `toml:"name"`
	AgentID        int64  `toml:"agent_id"`
	Secret         Secret `toml:"secret"`
	Token          Secret `toml:"token"`
	EncodingAESKey Secret `toml:"encoding_aes_key"`
	Backend        string `toml:"backend"`

	Delivery       string        `toml:"delivery"`       // "stream" or "whole"
	Format         string        `toml:"format"`         // "text" or "markdown"
	ThinkingAfter  time.Duration `toml:"thinking_after"` // negative disables
	RecallThinking *bool         `toml:"recall_thinking"`
	Welcome        string        `toml:"welcome"`
	IdleRollover   time.Duration `toml:"idle_rollover"`

	AllowUsers       []string `toml:"allow_users"`
	AllowDepartments []int64  `toml:"allow_departments"`
	PerMinute        int      `toml:"rate_per_minute"`
	PerDay           int      `toml:"rate_per_day"`

	// Inputs are passed to Dify as `inputs`.
	Inputs map[string]any `toml:"inputs"`
}

// Bot modes accepted in BotConfig.Mode.
const (
	BotModeWebSocket = "websocket" // the daemon dials WeCom's long connection (default)
	BotModeWebhook   = "webhook"   // WeCom POSTs to {public_url}/wecom/{name}
)

// Bot group memory modes accepted in BotConfig.GroupMemory.
const (
	GroupMemoryUser  = "user"  // each member of a group has their own conversation (default)
	GroupMemoryGroup = "group" // the whole group shares one conversation
)

// DefaultBotWSURL is WeCom's long-connection endpoint for 智能机器人.
const DefaultBotWSURL = "wss://openws.work.weixin.qq.com"

// BotConfig is one [[bots]] entry: a WeCom 智能机器人 (AI bot).
type BotConfig struct {
	Name           string        `toml:"name"`
	BotID          string        `toml:"bot_id"`
	Secret         Secret        `toml:"secret"` // long-connection Secret (websocket mode)
	Mode           string        `toml:"mode"`   // "websocket" (default) or "webhook"
	WSURL          string        `toml:"ws_url"` // default DefaultBotWSURL; ws:// allowed
	Token          Secret        `toml:"token"`  // webhook mode
	EncodingAESKey Secret        `toml:"encoding_aes_key"`
	Backend        string        `toml:"backend"`
	Welcome        string        `toml:"welcome"`      // answer to enter_chat; "" sends nothing
	GroupMemory    string        `toml:"group_memory"` // "user" (default) or "group"
	IdleRollover   time.Duration `toml:"idle_rollover"`

	// AllowDepartments needs a self-built app: departments are looked up
	// with an [[apps]] entry's secret (the first app).
	AllowUsers       []string `toml:"allow_users"`
	AllowDepartments []int64  `toml:"allow_departments"`
	PerMinute        int      `toml:"rate_per_minute"`
	PerDay           int      `toml:"rate_per_day"`

	// Inputs are passed to Dify as `inputs`.
	Inputs map[string]any `toml:"inputs"`
}

// Texts are the replies users see. Every one can be changed in [texts].
type Texts struct {
	Help        string `toml:"help"`
	NewChat     string `toml:"new_conversation"`
	Unsupported string `toml:"unsupported"`
	NotAllowed  string `toml:"not_allowed"`
	OverMinute  string `toml:"over_minute"`
	OverDay     string `toml:"over_day"`
	Failed      string `toml:"failed"` // %s is the reference id
	Thinking    string `toml:"thinking"`
	Interrupted string `toml:"interrupted"`
	Truncated   string `toml:"truncated"`
	Resend      string `toml:"resend_notice"`
}

// DefaultTexts are the built-in replies (Chinese first).
func DefaultTexts() Texts {
	return Texts{
		Help: "你好，我是企业内部的 AI 助手，直接发文字问题即可。\n" +
			"• 发送 /new 或「新对话」：开始新的对话（忘掉之前的上下文）\n" +
			"• 发送 /help 或「帮助」：查看本说明\n" +
			"目前只支持文字消息。",
		NewChat:     "好的，已开始新的对话。",
		Unsupported: "抱歉，目前只支持文字消息，请把问题用文字发给我。",
		NotAllowed:  "抱歉，你暂时没有使用这个应用的权限，如有需要请联系管理员。",
		OverMinute:  "你的提问有点快，请稍等一分钟再试。",
		OverDay:     "你今天的提问次数已用完，明天再来吧。",
		Failed:      "抱歉，回答时出了点问题，请稍后再试。（参考编号：%s）",
		Thinking:    "正在思考…",
		Interrupted: "（回答中断了，以上内容不完整。参考编号：%s）",
		Truncated:   "（回答长度达到上限，内容可能不完整。）",
		Resend:      "（上面的回答不完整，下面重新发送完整的回答。）",
	}
}

// Load reads, decodes and validates the config file. Every problem found is
// reported at once, with file line numbers where the key can be located.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load for config text already read; name is used in messages.
func Parse(name string, data []byte) (*Config, error) {
	cfg, _, err := parse(name, data, nil)
	return cfg, err
}

// SimulateChoice names what `simulate` chats through: at most one of App,
// Bot or Backend. All empty means the first app, else the first bot, else
// the first backend (in file order).
type SimulateChoice struct {
	App     string // an [[apps]] name
	Bot     string // a [[bots]] name
	Backend string // a [backends.NAME]; alone, a generated app "simulate" uses it
}

// LoadForSimulate is ParseForSimulate for a file.
func LoadForSimulate(path string, ch SimulateChoice) (*Config, SimulateChoice, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ch, fmt.Errorf("config: %w", err)
	}
	return ParseForSimulate(path, data, ch)
}

// ParseForSimulate is Parse for `simulate`, which emulates WeCom: WeCom
// credentials (wecom.corp_id, agent ids, app and bot secrets, tokens,
// EncodingAESKeys, bot ids, history.session_key) are neither required nor
// read — generated ones replace them — and only the chosen backend must be
// valid (its api_key resolvable). Unknown keys and the other settings are
// still checked. The returned config holds only the chosen app or bot (with
// a Backend alone, a generated app named "simulate"), server.public_url
// defaults to a loopback URL, and the resolved choice names the app or bot
// and its backend, for simulate to say which it picked.
func ParseForSimulate(name string, data []byte, ch SimulateChoice) (*Config, SimulateChoice, error) {
	return parse(name, data, &ch)
}

// parse decodes, resolves, defaults and validates. sim is non-nil for
// simulate (see ParseForSimulate) and is resolved in place.
func parse(name string, data []byte, sim *SimulateChoice) (*Config, SimulateChoice, error) {
	var cfg Config
	var choice SimulateChoice
	// A first, schema-less decode: durations and value types are checked
	// against the raw TOML values (the decoder reads a bare integer as
	// nanoseconds, and stops at the first bad duration or type), so every
	// bad one is reported at once, with its key.
	var raw map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&raw); err != nil {
		return nil, choice, syntaxErr(name, err)
	}
	lines := indexKeys(data)
	var errs []error
	var valErrs []error
	refused := map[string]bool{}
	checkValues(raw, reflect.TypeOf(cfg), nil, &valErrs)
	src := data
	if len(valErrs) > 0 {
		// The bad values were removed from raw; decode what is left so the
		// rest of the file is still checked.
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(raw); err != nil {
			return nil, choice, fmt.Errorf("config: %s: %w", name, err)
		}
		src = buf.Bytes()
		for _, e := range valErrs {
			var ke *keyErr
			if errors.As(e, &ke) {
				refused[strings.Join(ke.path, ".")] = true
			}
			errs = append(errs, withLine(name, lines, e))
		}
	}
	md, err := toml.NewDecoder(bytes.NewReader(src)).Decode(&cfg)
	if err != nil {
		return nil, choice, syntaxErr(name, err)
	}
	for _, k := range md.Undecoded() {
		// Free-form tables (inputs, verify_files) have no fixed keys.
		if isFreeForm(k) {
			continue
		}
		errs = append(errs, fmt.Errorf("%s:%d: %s: 未知的配置项（拼写错误，或写在了别的表里？）/ unknown key %q",
			name, lines.line(k), displayKey(k), k.String()))
	}
	opts := validateOptions{}
	if sim != nil {
		choice, err = resolveChoice(&cfg, lines, *sim)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return nil, choice, fmt.Errorf("config: %d problem(s):\n%w", len(errs), errors.Join(errs...))
		}
		opts.onlyBackend = choice.Backend
		cfg.simulated()
	}
	if err := cfg.resolveSecrets(opts); err != nil {
		for _, e := range unjoin(err) {
			errs = append(errs, withLine(name, lines, e))
		}
	}
	cfg.applyDefaults()
	if err := cfg.validate(opts); err != nil {
		for _, e := range unjoin(err) {
			// A value already refused for its type or duration was
			// dropped; do not report it again as missing.
			var ke *keyErr
			if errors.As(e, &ke) && refused[strings.Join(ke.path, ".")] {
				continue
			}
			errs = append(errs, withLine(name, lines, e))
		}
	}
	if len(errs) > 0 {
		return nil, choice, fmt.Errorf("config: %d problem(s):\n%w", len(errs), errors.Join(errs...))
	}
	if sim != nil {
		cfg.keepOnly(choice)
	}
	return &cfg, choice, nil
}

func syntaxErr(name string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("config: %s:%d: %s", name, pe.Position.Line, pe.Message)
	}
	if m := reTOMLLine.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("config: %s:%s: %s", name, m[1], m[2])
	}
	return fmt.Errorf("config: %s: %w", name, err)
}

var durationType = reflect.TypeOf(time.Duration(0))

// checkValues walks the raw TOML tree alongside the config type and
// reports every value of the wrong type, and every time.Duration key whose
// value is not a duration string, removing it from raw.
func checkValues(raw map[string]any, typ reflect.Type, path []string, errs *[]error) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct {
		return
	}
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		tag := strings.Split(f.Tag.Get("toml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		v, ok := raw[tag]
		if !ok {
			continue
		}
		p := append(append([]string(nil), path...), tag)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if msg := valueProblem(v, ft); msg != "" {
			*errs = append(*errs, kerr(msg, p...))
			delete(raw, tag)
			continue
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != durationType:
			checkValues(v.(map[string]any), ft, p, errs)
		case ft.Kind() == reflect.Slice && structElem(ft.Elem()):
			for j, m := range tables(v) {
				checkValues(m, ft.Elem(), append(p, fmt.Sprint(j)), errs)
			}
		case ft.Kind() == reflect.Map && structElem(ft.Elem()):
			for k, sub := range v.(map[string]any) {
				sp := append(append([]string(nil), p...), k)
				sm, ok := sub.(map[string]any)
				if !ok {
					*errs = append(*errs, kerr(wrongType("表 table", "["+strings.Join(sp, ".")+"]", sub), sp...))
					delete(v.(map[string]any), k)
					continue
				}
				checkValues(sm, ft.Elem(), sp, errs)
			}
		}
	}
}

// valueProblem explains why the raw TOML value v cannot go into a field of
// type t, or returns "".
func valueProblem(v any, t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		return durationProblem(v)
	}
	switch t.Kind() {
	case reflect.Interface:
		return ""
	case reflect.String:
		if _, ok := v.(string); !ok {
			return wrongType("字符串 string", `"…"`, v)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if _, ok := v.(int64); !ok {
			return wrongType("整数 integer", "30", v)
		}
	case reflect.Float32, reflect.Float64:
		switch v.(type) {
		case int64, float64:
		default:
			return wrongType("数字 number", "0.7", v)
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return wrongType("布尔值 boolean", "true", v)
		}
	case reflect.Struct:
		if _, ok := v.(map[string]any); !ok {
			return wrongType("表 table", "[…]", v)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return wrongType("表 table", "[…]", v)
		}
		if !structElem(t.Elem()) {
			for k, e := range m {
				if msg := valueProblem(e, t.Elem()); msg != "" {
					return fmt.Sprintf("%q: %s", k, msg)
				}
			}
		}
	case reflect.Slice:
		if structElem(t.Elem()) {
			if tables(v) == nil {
				return wrongType("表数组 array-of-tables", "[[…]]", v)
			}
			for j, m := range tables(v) {
				if m == nil {
					return fmt.Sprintf("第 %d 项不是表 / entry %d is not a table", j+1, j+1)
				}
			}
			return ""
		}
		a, ok := v.([]any)
		if !ok {
			return wrongType("数组 array", "[…]", v)
		}
		for j, e := range a {
			if msg := valueProblem(e, t.Elem()); msg != "" {
				return fmt.Sprintf("第 %d 个元素 / element %d: %s", j+1, j+1, msg)
			}
		}
	}
	return ""
}

// wrongType is the message for a value of the wrong TOML type; want is
// "中文 English".
func wrongType(want, example string, got any) string {
	zh, en, _ := strings.Cut(want, " ")
	return fmt.Sprintf("类型不对：应为%s，例如 %s（现在是%s）/ wrong type: want %s such as %s, got %s",
		zh, example, tomlKind(got, true), en, example, tomlKind(got, false))
}

// tomlKind names the TOML type of a schema-less decoded value.
func tomlKind(v any, zh bool) string {
	pick := func(a, b string) string {
		if zh {
			return a
		}
		return b
	}
	switch v.(type) {
	case string:
		return pick("字符串", "a string")
	case int64:
		return pick("整数", "an integer")
	case float64:
		return pick("小数", "a float")
	case bool:
		return pick("布尔值", "a boolean")
	case []any, []map[string]any:
		return pick("数组", "an array")
	case map[string]any:
		return pick("表", "a table")
	case time.Time:
		return pick("日期时间", "a date-time")
	}
	return fmt.Sprintf("%T", v)
}

func structElem(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && t != durationType
}

// tables returns the tables of an array of tables as decoded schema-less.
func tables(v any) []map[string]any {
	switch a := v.(type) {
	case []map[string]any:
		return a
	case []any:
		var out []map[string]any
		for _, e := range a {
			m, _ := e.(map[string]any)
			out = append(out, m) // nil keeps the index of a non-table
		}
		return out
	}
	return nil
}

// durationProblem explains why v is not a duration, or returns "".
func durationProblem(v any) string {
	const examples = `"90s"、"10m"、"24h"`
	switch d := v.(type) {
	case string:
		if _, err := time.ParseDuration(d); err == nil {
			return ""
		}
		if _, err := strconv.ParseFloat(d, 64); err == nil {
			return fmt.Sprintf(`时长 %q 缺少单位，请写成 "%ss"（或 "%sm"）/ duration %q has no unit: write "%ss" (or "%sm")`, d, d, d, d, d, d)
		}
		return fmt.Sprintf(`无效的时长 %q，请写成带单位的字符串，例如 %s / invalid duration %q: write a string with a unit, e.g. "90s", "10m", "24h"`, d, examples, d)
	case int64:
		return fmt.Sprintf(`时长必须写成带单位的字符串，例如 "%ds"；不带单位的数字会被当成纳秒 / a duration must be a string with a unit such as "%ds" (a bare number would be read as nanoseconds)`, d, d)
	case float64:
		return fmt.Sprintf(`时长必须写成带单位的字符串，例如 "%gs" / a duration must be a string with a unit such as "%gs"`, d, d)
	default:
		return fmt.Sprintf(`时长必须写成带单位的字符串，例如 %s / a duration must be a string with a unit, e.g. "90s", "10m", "24h"`, examples)
	}
}

func isFreeForm(k toml.Key) bool {
	for i, p := range k {
		if (p == "inputs" || p == "verify_files") && i < len(k)-1 {
			return true
		}
	}
	return false
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

// keyErr is a validation problem tied to a config key path.
type keyErr struct {
	path []string // e.g. apps, 0, token
	msg  string
}

func (e *keyErr) Error() string { return displayKey(e.path) + ": " + e.msg }

func displayKey(path []string) string {
	var b strings.Builder
	for i, p := range path {
		if isIndex(p) {
			b.WriteString("[" + p + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

func isIndex(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func kerr(msg string, path ...string) error { return &keyErr{path: path, msg: msg} }

func withLine(name string, lines keyLines, err error) error {
	var ke *keyErr
	if errors.As(err, &ke) {
		if n := lines.lineOf(ke.path); n > 0 {
			return fmt.Errorf("%s:%d: %w", name, n, err)
		}
	}
	return fmt.Errorf("%s: %w", name, err)
}

// keyLines maps a dotted key path (array indices included) to its line.
type keyLines map[string]int

var (
	reTOMLLine = regexp.MustCompile(`^toml: line (\d+) (.*)$`)
	reTable    = regexp.MustCompile(`^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$`)
	reArrTable = regexp.MustCompile(`^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$`)
	reKey      = regexp.MustCompile(`^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-.]+)\s*=`)
)

// indexKeys finds the line of every key and table header by a light scan of
// the file (the TOML decoder does not report key positions).
func indexKeys(data []byte) keyLines {
	out := keyLines{}
	counts := map[string]int{}
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := reArrTable.FindStringSubmatch(line); m != nil {
			name := normKey(m[1])
			i := counts[name]
			counts[name]++
			table = fmt.Sprintf("%s.%d", name, i)
			out.set(table, n)
			continue
		}
		if m := reTable.FindStringSubmatch(line); m != nil {
			table = normKey(m[1])
			out.set(table, n)
			continue
		}
		if m := reKey.FindStringSubmatch(line); m != nil {
			k := normKey(m[1])
			if table != "" {
				k = table + "." + k
			}
			out.set(k, n)
		}
	}
	return out
}

func (l keyLines) set(k string, n int) {
	if _, ok := l[k]; !ok {
		l[k] = n
	}
}

func normKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// line finds an undecoded key: toml.Key has no array indices, so match the
// first line whose path equals it once indices are dropped.
func (l keyLines) line(k toml.Key) int {
	want := strings.Join(k, ".")
	best := 0
	for path, n := range l {
		if stripIndices(path) == want && (best == 0 || n < best) {
			best = n
		}
	}
	return best
}

func (l keyLines) lineOf(path []string) int {
	for len(path) > 0 {
		if n, ok := l[strings.Join(path, ".")]; ok {
			return n
		}
		path = path[:len(path)-1]
	}
	return 0
}

func stripIndices(path string) string {
	parts := strings.Split(path, ".")
	out := parts[:0]
	for _, p := range parts {
		if !isIndex(p) {
			out = append(out, p)
		}
	}
	return strings.Join(out, ".")
}

// resolveSecrets replaces "env:NAME" and "file:/path" secrets with the value.
// With opts.onlyBackend set, other backends' api_key are left alone.
func (c *Config) resolveSecrets(opts validateOptions) error {
	var errs []error
	resStr := func(v *string, path ...string) {
		switch {
		case strings.HasPrefix(*v, "env:"):
			name := strings.TrimPrefix(*v, "env:")
			val, ok := os.LookupEnv(name)
			if !ok || val == "" {
				errs = append(errs, kerr(fmt.Sprintf("密钥无法读取：环境变量 %s 未设置或为空 / environment variable %s is not set", name, name), path...))
				return
			}
			*v = val
		case strings.HasPrefix(*v, "file:"):
			p := strings.TrimPrefix(*v, "file:")
			data, err := os.ReadFile(p)
			if err != nil {
				why := errors.Unwrap(err)
				errs = append(errs, kerr(fmt.Sprintf("密钥无法读取：文件 %s 读取失败（%v）/ cannot read secret file %s: %v", p, why, p, why), path...))
				return
			}
			*v = strings.TrimRight(string(data), "\r\n")
		}
	}
	res := func(s *Secret, path ...string) {
		v := string(*s)
		resStr(&v, path...)
		*s = Secret(v)
	}
	for i := range c.Apps {
		idx := fmt.Sprint(i)
		res(&c.Apps[i].Secret, "apps", idx, "secret")
		res(&c.Apps[i].Token, "apps", idx, "token")
		res(&c.Apps[i].EncodingAESKey, "apps", idx, "encoding_aes_key")
	}
	for i := range c.Bots {
		idx := fmt.Sprint(i)
		res(&c.Bots[i].Secret, "bots", idx, "secret")
		res(&c.Bots[i].Token, "bots", idx, "token")
		res(&c.Bots[i].EncodingAESKey, "bots", idx, "encoding_aes_key")
	}
	for _, name := range sortedKeys(c.Backends) {
		if opts.onlyBackend != "" && name != opts.onlyBackend {
			continue
		}
		b := c.Backends[name]
		resStr(&b.APIKey, "backends", name, "api_key")
		c.Backends[name] = b
	}
	res(&c.History.SessionKey, "history", "session_key")
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// unresolved reports a secret whose env:/file: reference could not be read.
func unresolved(s Secret) bool {
	return strings.HasPrefix(string(s), "env:") || strings.HasPrefix(string(s), "file:")
}

func (c *Config) applyDefaults() {
	if m := &c.Media; true {
		if m.MaxBytes == 0 {
			m.MaxBytes = DefaultMediaMaxBytes
		}
		if m.Allowed == nil {
			m.Allowed = []string{"image", "file", "voice", "video"}
		}
		if m.Hold == 0 {
			m.Hold = DefaultMediaHold
		}
		if m.DefaultPrompt == "" {
			m.DefaultPrompt = DefaultMediaPrompt
		}
		if m.FFmpeg == "" {
			m.FFmpeg = "ffmpeg"
		}
	}
	s := &c.Server
	if s.Listen == "" {
		s.Listen = DefaultListen
	}
	if s.ReadTimeout == 0 {
		s.ReadTimeout = DefaultReadTimeout
	}
	if s.WriteTimeout == 0 {
		s.WriteTimeout = DefaultWriteTimeout
	}
	if s.IdleTimeout == 0 {
		s.IdleTimeout = DefaultIdleTimeout
	}
	if s.MaxBodyBytes == 0 {
		s.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if s.ShutdownGrace == 0 {
		s.ShutdownGrace = DefaultShutdownGrace
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.Log.Timestamps == "" {
		c.Log.Timestamps = "auto"
	}
	if c.Storage.Path == "" {
		c.Storage.Path = DefaultStoragePath
	}
	if c.Storage.DedupWindow == 0 {
		c.Storage.DedupWindow = DefaultDedupWindow
	}
	if c.Storage.Retention == 0 {
		c.Storage.Retention = DefaultRetention
	}
	if c.Workers.Count == 0 {
		c.Workers.Count = DefaultWorkers
	}
	w := &c.WeCom
	if w.APIBase == "" {
		w.APIBase = wecom.DefaultAPIBase
	}
	if w.OAuthBase == "" {
		w.OAuthBase = wecom.DefaultOAuthBase
	}
	if w.SSOBase == "" {
		w.SSOBase = wecom.DefaultSSOBase
	}
	if w.RequestTimeout == 0 {
		w.RequestTimeout = wecom.DefaultHTTPTimeout
	}
	if w.SendRetryFor == 0 {
		w.SendRetryFor = DefaultSendRetryFor
	}
	if w.RateLimitWait == 0 {
		w.RateLimitWait = wecom.DefaultRateLimitWait
	}
	if w.DuplicateCheckInterval == 0 {
		w.DuplicateCheckInterval = 10 * time.Minute
	}
	if w.MaxCallbackAge == 0 {
		w.MaxCallbackAge = 24 * time.Hour
	}
	if w.DepartmentCacheTTL == 0 {
		w.DepartmentCacheTTL = DefaultDepartmentTTL
	}
	if w.PerMemberPerMinute == 0 {
		w.PerMemberPerMinute = DefaultMaxMessagesPerMi
	}
	if c.History.SessionTTL == 0 {
		c.History.SessionTTL = DefaultSessionTTL
	}
	if c.History.LoginApp == "" && len(c.Apps) > 0 {
		c.History.LoginApp = c.Apps[0].Name
	}
	if len(c.Apps) == 0 && c.History.Enabled == nil {
		// WeCom's login needs a self-built app's agentid: a bot-only
		// deployment has no history page unless it adds one.
		off := false
		c.History.Enabled = &off
	}
	for i := range c.Bots {
		bt := &c.Bots[i]
		if bt.Mode == "" {
			bt.Mode = BotModeWebSocket
		}
		if bt.WSURL == "" {
			bt.WSURL = DefaultBotWSURL
		}
		if bt.GroupMemory == "" {
			bt.GroupMemory = GroupMemoryUser
		}
	}
	c.Texts.fill(DefaultTexts())
	for i := range c.Apps {
		a := &c.Apps[i]
		if a.Delivery == "" {
			a.Delivery = "stream"
		}
		if a.Format == "" {
			a.Format = "text"
		}
		if a.ThinkingAfter == 0 {
			a.ThinkingAfter = DefaultThinkingAfter
		}
	}
}

// fill sets every empty text to its default.
func (t *Texts) fill(d Texts) {
	set := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	set(&t.Help, d.Help)
	set(&t.NewChat, d.NewChat)
	set(&t.Unsupported, d.Unsupported)
	set(&t.NotAllowed, d.NotAllowed)
	set(&t.OverMinute, d.OverMinute)
	set(&t.OverDay, d.OverDay)
	set(&t.Failed, d.Failed)
	set(&t.Thinking, d.Thinking)
	set(&t.Interrupted, d.Interrupted)
	set(&t.Truncated, d.Truncated)
	set(&t.Resend, d.Resend)
}

var reAppName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// validateOptions relax Validate for simulate.
type validateOptions struct {
	// onlyBackend, when set, is the one backend that must be valid (the
	// others are not used and their secrets are not read).
	onlyBackend string
}

// Validate reports every problem at once; each names its config key.
// Messages give Chinese first, then English.
func (c *Config) Validate() error { return c.validate(validateOptions{}) }

func (c *Config) validate(opts validateOptions) error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	webhookBots := false
	for _, bt := range c.Bots {
		webhookBots = webhookBots || bt.Mode == BotModeWebhook
	}
	if _, _, err := net.SplitHostPort(c.Server.Listen); err != nil {
		add(kerr(fmt.Sprintf(`%q 不是 host:port 格式，例如 "127.0.0.1:8080" / %q is not host:port`, c.Server.Listen, c.Server.Listen), "server", "listen"))
	}
	if c.Server.PublicURL == "" {
		if len(c.Apps) > 0 || webhookBots {
			add(kerr("必须填写：企业微信和浏览器访问本服务的 https 地址，例如 https://bot.example.com / is required: the https URL WeCom and browsers use to reach this server, e.g. https://bot.example.com", "server", "public_url"))
		}
	} else if u, err := url.Parse(c.Server.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		add(kerr("必须是完整的 http(s) 地址，例如 https://bot.example.com / must be an absolute http(s) URL such as https://bot.example.com", "server", "public_url"))
	}
	if c.Server.MaxBodyBytes < 1024 {
		add(kerr("不能小于 1024 / must be at least 1024", "server", "max_body_bytes"))
	}
	for _, name := range sortedKeys(c.Server.VerifyFiles) {
		if !strings.HasPrefix(name, "WW_verify_") || !strings.HasSuffix(name, ".txt") || strings.ContainsAny(name, "/\\") {
			add(kerr(fmt.Sprintf("%q：文件名应形如 WW_verify_XXXX.txt（与管理后台下载的一致）/ names must look like WW_verify_XXXX.txt, as downloaded from the admin console", name), "server", "verify_files"))
		}
	}
	oneOf := func(v string, allowed []string, path ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		q := make([]string, len(allowed))
		for i, a := range allowed {
			q[i] = strconv.Quote(a)
		}
		add(kerr(fmt.Sprintf("只能是 %s，不能是 %q / must be %s, not %q", strings.Join(q, "、"), v, strings.Join(q, " or "), v), path...))
	}
	oneOf(c.Log.Level, []string{"debug", "info", "warn", "error"}, "log", "level")
	oneOf(c.Log.Format, []string{"text", "json"}, "log", "format")
	oneOf(c.Log.Timestamps, []string{"auto", "on", "off"}, "log", "timestamps")
	if c.Workers.Count < 1 || c.Workers.Count > 10000 {
		add(kerr("必须在 1 到 10000 之间 / must be between 1 and 10000", "workers", "count"))
	}
	if c.Storage.DedupWindow < time.Hour {
		add(kerr("至少 1h（企业微信会重试几秒钟，留出余量）/ must be at least 1h (WeCom retries for a few seconds; keep a margin)", "storage", "dedup_window"))
	}
	if c.WeCom.CorpID == "" && (len(c.Apps) > 0 || len(c.Bots) == 0) {
		add(kerr("必须填写：管理后台 → 我的企业 → 企业信息 → 企业ID / is required (My Company → Company Info → Corp ID)", "wecom", "corp_id"))
	}
	for _, k := range []struct{ v, name string }{{c.WeCom.APIBase, "api_base"}, {c.WeCom.OAuthBase, "oauth_base"}, {c.WeCom.SSOBase, "sso_base"}} {
		if u, err := url.Parse(k.v); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			add(kerr("必须是完整的 http(s) 地址 / must be an absolute http(s) URL", "wecom", k.name))
		}
	}
	if c.WeCom.Proxy != "" {
		if _, err := c.WeCom.proxyURL(); err != nil {
			add(kerr("必须是代理地址，例如 http://10.0.0.5:3128（支持 http、https、socks5）/ must be a proxy URL such as http://10.0.0.5:3128 (http, https or socks5)", "wecom", "proxy"))
		}
	}
	if c.WeCom.DuplicateCheckInterval < 0 || c.WeCom.DuplicateCheckInterval > 4*time.Hour {
		add(kerr("必须在 0s 到 4h 之间（企业微信的上限）/ must be between 0s and 4h (WeCom's limit)", "wecom", "duplicate_check_interval"))
	}
	if c.WeCom.MaxCallbackAge >= c.Storage.DedupWindow {
		add(kerr("必须短于 storage.dedup_window，否则去重记录清理后旧回调可被重放 / must be shorter than storage.dedup_window, or an old callback could be replayed after its dedup mark is pruned", "wecom", "max_callback_age"))
	}
	if c.WeCom.PerMemberPerMinute < 1 || c.WeCom.PerMemberPerMinute > 30 {
		add(kerr("必须在 1 到 30 之间（企业微信每分钟最多给一个成员发 30 条）/ must be between 1 and 30 (WeCom drops more than 30 a minute)", "wecom", "per_member_per_minute"))
	}
	for i, k := range c.Media.Allowed {
		if !slices.Contains([]string{"image", "file", "voice", "video"}, k) {
			add(kerr(fmt.Sprintf("%q 不是可用的类型：image、file、voice、video / %q is not one of image, file, voice, video", k, k), "media", "allowed", strconv.Itoa(i)))
		}
	}
	if c.Media.MaxBytes < 0 {
		add(kerr("不能为负数 / must not be negative", "media", "max_bytes"))
	}
	if c.Media.Hold < 0 {
		add(kerr("不能为负数 / must not be negative", "media", "hold"))
	}
	if sb := c.Media.SpeechBackend; sb != "" {
		if bc, ok := c.Backends[sb]; !ok {
			add(kerr(fmt.Sprintf("没有名为 %q 的后端 / no backend named %q", sb, sb), "media", "speech_backend"))
		} else if bc.TranscriptionModel == "" {
			add(kerr(fmt.Sprintf("backends.%s 需要设置 transcription_model（语音转写模型）/ backends.%s needs transcription_model", sb, sb), "media", "speech_backend"))
		}
	}
	if len(c.Apps) == 0 && len(c.Bots) == 0 && opts.onlyBackend == "" {
		// (simulate generates an app for a backend chosen alone)
		add(kerr("至少需要一个 [[apps]]（自建应用）或 [[bots]]（智能机器人）/ at least one [[apps]] or [[bots]] entry is required", "apps"))
	}
	backendList := strings.Join(sortedKeys(c.Backends), ", ")
	checkBackend := func(name string, path ...string) {
		if name == "" {
			add(kerr("必须填写：某个 [backends.NAME] 的名称 / is required: the name of a [backends.NAME] table", path...))
		} else if _, ok := c.Backends[name]; !ok {
			add(kerr(fmt.Sprintf("没有名为 %q 的后端：请添加 [backends.%s]（已配置：%s）/ names backend %q, but there is no [backends.%s] (configured: %s)",
				name, name, backendList, name, name, backendList), path...))
		}
	}
	checkAESKey := func(key Secret, what string, path ...string) {
		switch {
		case key == "":
			add(kerr("必须填写："+what+" → EncodingAESKey / is required ("+what+" → EncodingAESKey)", path...))
		case unresolved(key):
			// already reported by resolveSecrets
		case len(key) != 43:
			add(kerr(fmt.Sprintf("必须是管理后台给出的 43 个字符的 EncodingAESKey（现在是 %d 个字符）/ must be the 43-character EncodingAESKey from the admin console (got %d)", len(key), len(key)), path...))
		default:
			if _, err := wecom.NewCrypto("x", key.Value(), "x"); err != nil {
				add(kerr("不是有效的 EncodingAESKey：请在管理后台重新「随机获取」并完整复制 / is not a valid EncodingAESKey: generate a new one in the admin console and copy all 43 characters", path...))
			}
		}
	}
	checkRates := func(perMinute, perDay int, rollover time.Duration, path func(string) []string) {
		if perMinute < 0 {
			add(kerr("不能为负数 / must not be negative", path("rate_per_minute")...))
		}
		if perDay < 0 {
			add(kerr("不能为负数 / must not be negative", path("rate_per_day")...))
		}
		if rollover < 0 {
			add(kerr("不能为负数 / must not be negative", path("idle_rollover")...))
		}
	}
	names := map[string]bool{}
	checkName := func(name string, path []string) {
		if !reAppName.MatchString(name) {
			add(kerr("只能由 1-32 个小写字母、数字、- 或 _ 组成（它是回调路径 /wecom/<name>）/ must be 1-32 lowercase letters, digits, - or _ (it is the callback path /wecom/<name>)", path...))
		} else if names[name] {
			add(kerr(fmt.Sprintf("名称 %q 重复：[[apps]] 和 [[bots]] 的名称必须各不相同 / %q is used twice: names must be unique across [[apps]] and [[bots]]", name, name), path...))
		}
		names[name] = true
	}
	appNames := map[string]bool{}
	agents := map[int64]bool{}
	for i, a := range c.Apps {
		idx := fmt.Sprint(i)
		p := func(k string) []string { return []string{"apps", idx, k} }
		checkName(a.Name, p("name"))
		appNames[a.Name] = true
		if a.AgentID <= 0 {
			add(kerr("必须填写：应用管理 → 应用 → AgentId / is required (App Management → app → AgentId)", p("agent_id")...))
		} else if agents[a.AgentID] {
			add(kerr(fmt.Sprintf("AgentId %d 重复：被两个应用使用 / %d is used by two apps", a.AgentID, a.AgentID), p("agent_id")...))
		}
		agents[a.AgentID] = true
		if a.Secret == "" {
			add(kerr("必须填写：应用管理 → 应用 → Secret / is required (App Management → app → Secret)", p("secret")...))
		}
		if a.Token == "" {
			add(kerr("必须填写：应用 → 接收消息 → 设置API接收 → Token / is required (app → Receive Messages → Set API → Token)", p("token")...))
		}
		checkAESKey(a.EncodingAESKey, "应用 → 接收消息 → 设置API接收", p("encoding_aes_key")...)
		checkBackend(a.Backend, p("backend")...)
		oneOf(a.Delivery, []string{"stream", "whole"}, p("delivery")...)
		oneOf(a.Format, []string{"text", "markdown"}, p("format")...)
		checkRates(a.PerMinute, a.PerDay, a.IdleRollover, p)
	}
	for i, bt := range c.Bots {
		idx := fmt.Sprint(i)
		p := func(k string) []string { return []string{"bots", idx, k} }
		checkName(bt.Name, p("name"))
		if bt.BotID == "" {
			add(kerr("必须填写：管理后台 → 智能机器人 → BotID / is required (智能机器人 → BotID)", p("bot_id")...))
		}
		oneOf(bt.Mode, []string{BotModeWebSocket, BotModeWebhook}, p("mode")...)
		switch bt.Mode {
		case BotModeWebSocket:
			if bt.Secret == "" {
				add(kerr("长连接模式必须填写：智能机器人 → API 模式 → 长连接 → Secret / is required in websocket mode (the bot's long-connection Secret)", p("secret")...))
			}
			if u, err := url.Parse(bt.WSURL); err != nil || (u.Scheme != "wss" && u.Scheme != "ws") || u.Host == "" {
				add(kerr("必须是 wss:// 或 ws:// 地址，例如 "+DefaultBotWSURL+" / must be a wss:// or ws:// URL such as "+DefaultBotWSURL, p("ws_url")...))
			}
		case BotModeWebhook:
			if bt.Token == "" {
				add(kerr("回调模式必须填写：智能机器人 → 接收消息 → Token / is required in webhook mode (the bot's callback Token)", p("token")...))
			}
			checkAESKey(bt.EncodingAESKey, "智能机器人 → 接收消息", p("encoding_aes_key")...)
		}
		checkBackend(bt.Backend, p("backend")...)
		oneOf(bt.GroupMemory, []string{GroupMemoryUser, GroupMemoryGroup}, p("group_memory")...)
		checkRates(bt.PerMinute, bt.PerDay, bt.IdleRollover, p)
		if len(bt.AllowDepartments) > 0 && len(c.Apps) == 0 {
			add(kerr("需要至少一个 [[apps]]：机器人不能读取通讯录，成员的部门用自建应用的 secret 查询 / needs an [[apps]] entry: a bot cannot read the contacts, so departments are looked up with a self-built app's secret", p("allow_departments")...))
		}
	}
	if c.History.LoginApp != "" && !appNames[c.History.LoginApp] {
		add(kerr(fmt.Sprintf("指定的应用 %q 不存在（必须是 [[apps]] 的名称）/ names app %q, which is not configured in [[apps]]", c.History.LoginApp, c.History.LoginApp), "history", "login_app"))
	}
	if c.History.enabled() && len(c.Apps) == 0 {
		add(kerr("历史记录页用自建应用登录企业微信：请添加一个 [[apps]]，或设置 enabled = false / the history page signs in through a self-built app: add an [[apps]] entry, or set enabled = false", "history", "enabled"))
	}
	if k := c.History.SessionKey; k != "" && !unresolved(k) && len(k) < 32 {
		add(kerr("至少 32 个字符（留空则自动生成）/ must be at least 32 characters (or leave it empty to generate one)", "history", "session_key"))
	}
	for _, name := range sortedKeys(c.Backends) {
		if opts.onlyBackend != "" && name != opts.onlyBackend {
			continue
		}
		for _, p := range c.Backends[name].Problems() {
			add(kerr(p.Msg, "backends", name, p.Key))
		}
	}
	add(c.Texts.validate())
	return errors.Join(errs...)
}

// validate checks the placeholders of the texts: failed and interrupted are
// formatted with the reference id and need exactly one %s; the others are
// sent as they are, so a %s in them would reach the user literally.
func (t Texts) validate() error {
	var errs []error
	for _, f := range []struct {
		key, v string
		verbs  int // 1: exactly one %s; 0: sent as is
	}{
		{"help", t.Help, 0}, {"new_conversation", t.NewChat, 0}, {"unsupported", t.Unsupported, 0},
		{"not_allowed", t.NotAllowed, 0}, {"over_minute", t.OverMinute, 0}, {"over_day", t.OverDay, 0},
		{"failed", t.Failed, 1}, {"thinking", t.Thinking, 0}, {"interrupted", t.Interrupted, 1},
		{"truncated", t.Truncated, 0}, {"resend_notice", t.Resend, 0},
	} {
		if f.verbs == 0 {
			if strings.Contains(f.v, "%s") {
				errs = append(errs, kerr("这段文字原样发送，%s 不会被替换，请删掉 / this text is sent as is: %s would reach the user literally; remove it", "texts", f.key))
			}
			continue
		}
		verbs := fmtVerbs(f.v)
		if len(verbs) != 1 || verbs[0] != "%s" {
			errs = append(errs, kerr(fmt.Sprintf("必须正好包含一个 %%s（参考编号），现在有 %d 个占位符 %v；百分号请写成 %%%% / must contain exactly one %%s (the reference id), found %d verb(s) %v; write a literal percent sign as %%%%",
				len(verbs), verbs, len(verbs), verbs), "texts", f.key))
		}
	}
	return errors.Join(errs...)
}

// fmtVerbs returns the fmt verbs of format (such as "%s", "%5d"); "%%" is a
// literal percent sign and not counted. A trailing "%" counts as a verb.
func fmtVerbs(format string) []string {
	var out []string
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		j := i + 1
		if j < len(format) && format[j] == '%' {
			i = j
			continue
		}
		for j < len(format) && strings.IndexByte("+-# 0123456789.*[]", format[j]) >= 0 {
			j++
		}
		if j < len(format) {
			_, size := utf8.DecodeRuneInString(format[j:])
			j += size
		}
		out = append(out, format[i:j])
		i = j - 1
	}
	return out
}

// Enabled reports whether the history page is on (default true).
func (h HistoryConfig) enabled() bool { return h.Enabled == nil || *h.Enabled }

func (s ServerConfig) metrics() bool { return s.Metrics == nil || *s.Metrics }

func (a AppConfig) recallThinking() bool { return a.RecallThinking == nil || *a.RecallThinking }

// proxyURL parses [wecom] proxy.
func (w WeComConfig) proxyURL() (*url.URL, error) {
	u, err := url.Parse(w.Proxy)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		return nil, fmt.Errorf("unsupported proxy scheme %q", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, errors.New("a proxy URL is scheme://host:port")
	}
	return u, nil
}

// ProxyFunc is the proxy of every WeCom API call: [wecom] proxy when set
// (used for every request, loopback ones included), else the environment's
// HTTPS_PROXY / HTTP_PROXY / NO_PROXY (http.ProxyFromEnvironment).
func (w WeComConfig) ProxyFunc() func(*http.Request) (*url.URL, error) {
	if w.Proxy == "" {
		return http.ProxyFromEnvironment
	}
	u, err := w.proxyURL()
	if err != nil {
		// Validate rejects this; fail the request rather than bypass the proxy.
		return func(*http.Request) (*url.URL, error) {
			return nil, fmt.Errorf("bridge: wecom.proxy: %w", err)
		}
	}
	return http.ProxyURL(u)
}

// ProxyDisplay describes the WeCom egress for operators: the proxy's
// scheme://host:port (its credentials left out), "HTTPS_PROXY=..." taken
// from the environment, or "" for a direct connection.
func (w WeComConfig) ProxyDisplay() string {
	if w.Proxy != "" {
		if u, err := w.proxyURL(); err == nil {
			return u.Scheme + "://" + u.Host
		}
		return "wecom.proxy"
	}
	req, _ := http.NewRequest(http.MethodGet, w.APIBase, nil)
	if req == nil {
		return ""
	}
	if u, err := http.ProxyFromEnvironment(req); err == nil && u != nil {
		return "HTTPS_PROXY=" + u.Scheme + "://" + u.Host
	}
	return ""
}

// WeComTransport returns a clone of base (nil: a clone of
// http.DefaultTransport) whose Proxy is WeCom.ProxyFunc, for the WeCom API
// client.
func (c *Config) WeComTransport(base *http.Transport) *http.Transport {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport)
	}
	t := base.Clone()
	t.Proxy = c.WeCom.ProxyFunc()
	return t
}

// RestartKeys lists the config keys whose change between old and next only
// takes effect after a restart (a reload keeps the running value), in a
// stable order, e.g. ["server.listen", "wecom.proxy"]. Apps, bots (their
// connections are redialled when their settings change), backends, texts
// and the per-member send limit change on reload.
func RestartKeys(old, next *Config) []string {
	var out []string
	diff := func(changed bool, key string) {
		if changed {
			out = append(out, key)
		}
	}
	so, sn := old.Server, next.Server
	diff(so.Listen != sn.Listen, "server.listen")
	diff(so.ReadTimeout != sn.ReadTimeout, "server.read_timeout")
	diff(so.WriteTimeout != sn.WriteTimeout, "server.write_timeout")
	diff(so.IdleTimeout != sn.IdleTimeout, "server.idle_timeout")
	diff(so.MaxBodyBytes != sn.MaxBodyBytes, "server.max_body_bytes")
	diff(so.ShutdownGrace != sn.ShutdownGrace, "server.shutdown_grace")
	diff(old.Log != next.Log, "log")
	diff(old.Storage.Path != next.Storage.Path, "storage.path")
	diff(old.Workers.Count != next.Workers.Count, "workers.count")
	diff(old.WeCom.Proxy != next.WeCom.Proxy, "wecom.proxy")
	diff(old.History.enabled() != next.History.enabled(), "history.enabled")
	return out
}

// resolveChoice picks what simulate chats through.
func resolveChoice(c *Config, lines keyLines, ch SimulateChoice) (SimulateChoice, error) {
	set := 0
	for _, v := range []string{ch.App, ch.Bot, ch.Backend} {
		if v != "" {
			set++
		}
	}
	if set > 1 {
		return ch, errors.New("simulate: 只能选择 -app、-bot、-backend 之一 / choose one of -app, -bot and -backend")
	}
	var appNames, botNames []string
	for _, a := range c.Apps {
		appNames = append(appNames, a.Name)
	}
	for _, b := range c.Bots {
		botNames = append(botNames, b.Name)
	}
	switch {
	case ch.App != "":
		for _, a := range c.Apps {
			if a.Name == ch.App {
				return SimulateChoice{App: a.Name, Backend: a.Backend}, nil
			}
		}
		return ch, fmt.Errorf("simulate: 没有名为 %q 的 [[apps]]（已配置：%s）/ no app named %q (configured: %s)",
			ch.App, strings.Join(appNames, ", "), ch.App, strings.Join(appNames, ", "))
	case ch.Bot != "":
		for _, b := range c.Bots {
			if b.Name == ch.Bot {
				return SimulateChoice{Bot: b.Name, Backend: b.Backend}, nil
			}
		}
		return ch, fmt.Errorf("simulate: 没有名为 %q 的 [[bots]]（已配置：%s）/ no bot named %q (configured: %s)",
			ch.Bot, strings.Join(botNames, ", "), ch.Bot, strings.Join(botNames, ", "))
	case ch.Backend != "":
		if _, ok := c.Backends[ch.Backend]; !ok {
			list := strings.Join(sortedKeys(c.Backends), ", ")
			return ch, fmt.Errorf("simulate: 没有名为 %q 的后端（已配置：%s）/ no backend named %q (configured: %s)", ch.Backend, list, ch.Backend, list)
		}
		return SimulateChoice{Backend: ch.Backend}, nil
	case len(c.Apps) > 0:
		return SimulateChoice{App: c.Apps[0].Name, Backend: c.Apps[0].Backend}, nil
	case len(c.Bots) > 0:
		return SimulateChoice{Bot: c.Bots[0].Name, Backend: c.Bots[0].Backend}, nil
	}
	// The first backend in the file.
	first, firstLine := "", 0
	for name := range c.Backends {
		if n := lines.lineOf([]string{"backends", name}); first == "" || n < firstLine || (n == firstLine && name < first) {
			first, firstLine = name, n
		}
	}
	if first == "" {
		return ch, errors.New("simulate: 没有可用的后端：请添加 [backends.NAME] / nothing to talk to: add a [backends.NAME] table")
	}
	return SimulateChoice{Backend: first}, nil
}

// simulatedCorpID is the corp id simulate's emulated WeCom uses.
const simulatedCorpID = "wwsimulate0000000"

// simulated replaces every WeCom credential with a generated one: simulate
// emulates WeCom, so real ones are neither needed nor sent anywhere.
func (c *Config) simulated() {
	c.WeCom.CorpID = simulatedCorpID
	for i := range c.Apps {
		a := &c.Apps[i]
		a.AgentID = int64(1000001 + i)
		a.Secret, a.Token, a.EncodingAESKey = randomSecret(), randomSecret(), randomAESKey()
	}
	for i := range c.Bots {
		b := &c.Bots[i]
		if b.BotID == "" {
			b.BotID = "aibsimulate" + b.Name
		}
		b.Secret, b.Token, b.EncodingAESKey = randomSecret(), randomSecret(), randomAESKey()
	}
	c.History.SessionKey = ""
	if c.Server.PublicURL == "" {
		c.Server.PublicURL = "http://127.0.0.1"
	}
}

// keepOnly reduces a simulate config to the chosen app or bot and its
// backend.
func (c *Config) keepOnly(ch SimulateChoice) {
	var apps []AppConfig
	var bots []BotConfig
	switch {
	case ch.App != "":
		for _, a := range c.Apps {
			if a.Name == ch.App {
				apps = append(apps, a)
			}
		}
	case ch.Bot != "":
		for _, b := range c.Bots {
			if b.Name == ch.Bot {
				bots = append(bots, b)
			}
		}
	default:
		apps = []AppConfig{{
			Name: "simulate", AgentID: 1000001, Secret: randomSecret(), Token: randomSecret(), EncodingAESKey: randomAESKey(),
			Backend: ch.Backend, Delivery: "stream", Format: "text", ThinkingAfter: DefaultThinkingAfter,
		}}
	}
	c.Apps, c.Bots = apps, bots
	c.Backends = map[string]llm.Config{ch.Backend: c.Backends[ch.Backend]}
	c.History.LoginApp = ""
	if len(apps) > 0 {
		c.History.LoginApp = apps[0].Name
	} else {
		off := false
		c.History.Enabled = &off
	}
}

func randomSecret() Secret {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return Secret(hex.EncodeToString(b))
}

// randomAESKey is a valid EncodingAESKey: 32 random bytes in unpadded
// base64, 43 characters.
func randomAESKey() Secret {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return Secret(base64.RawStdEncoding.EncodeToString(b))
}
