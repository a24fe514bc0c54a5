package bridge

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

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
	DefaultFirstPieceBytes  = 60
	DefaultPieceBytes       = 600
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
	Texts    Texts                 `toml:"texts"`
	Apps     []AppConfig           `toml:"apps"`
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
	var cfg Config
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("config: %s:%d: %s", name, pe.Position.Line, pe.Message)
		}
		if m := reTOMLLine.FindStringSubmatch(err.Error()); m != nil {
			return nil, fmt.Errorf("config: %s:%s: %s", name, m[1], m[2])
		}
		return nil, fmt.Errorf("config: %s: %w", name, err)
	}
	lines := indexKeys(data)
	var errs []error
	for _, k := range md.Undecoded() {
		// Free-form tables (inputs, verify_files) have no fixed keys.
		if isFreeForm(k) {
			continue
		}
		errs = append(errs, fmt.Errorf("%s:%d: unknown key %q", name, lines.line(k), k.String()))
	}
	if err := cfg.resolveSecrets(); err != nil {
		for _, e := range unjoin(err) {
			errs = append(errs, withLine(name, lines, e))
		}
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		for _, e := range unjoin(err) {
			errs = append(errs, withLine(name, lines, e))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("config: %d problem(s):\n%w", len(errs), errors.Join(errs...))
	}
	return &cfg, nil
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
func (c *Config) resolveSecrets() error {
	var errs []error
	resStr := func(v *string, path ...string) {
		switch {
		case strings.HasPrefix(*v, "env:"):
			name := strings.TrimPrefix(*v, "env:")
			val, ok := os.LookupEnv(name)
			if !ok || val == "" {
				errs = append(errs, kerr(fmt.Sprintf("environment variable %s is not set", name), path...))
				return
			}
			*v = val
		case strings.HasPrefix(*v, "file:"):
			p := strings.TrimPrefix(*v, "file:")
			data, err := os.ReadFile(p)
			if err != nil {
				errs = append(errs, kerr(fmt.Sprintf("cannot read secret file %s: %v", p, errors.Unwrap(err)), path...))
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
	for name, b := range c.Backends {
		resStr(&b.APIKey, "backends", name, "api_key")
		c.Backends[name] = b
	}
	res(&c.History.SessionKey, "history", "session_key")
	return errors.Join(errs...)
}

// unresolved reports a secret whose env:/file: reference could not be read.
func unresolved(s Secret) bool {
	return strings.HasPrefix(string(s), "env:") || strings.HasPrefix(string(s), "file:")
}

func (c *Config) applyDefaults() {
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

// Validate reports every problem at once; each names its config key.
func (c *Config) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if _, _, err := net.SplitHostPort(c.Server.Listen); err != nil {
		add(kerr(fmt.Sprintf("%q is not host:port", c.Server.Listen), "server", "listen"))
	}
	if c.Server.PublicURL == "" {
		add(kerr("is required: the https URL WeCom and browsers use to reach this server, e.g. https://bot.example.com", "server", "public_url"))
	} else if u, err := url.Parse(c.Server.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		add(kerr("must be an absolute http(s) URL such as https://bot.example.com", "server", "public_url"))
	}
	if c.Server.MaxBodyBytes < 1024 {
		add(kerr("must be at least 1024", "server", "max_body_bytes"))
	}
	for name := range c.Server.VerifyFiles {
		if !strings.HasPrefix(name, "WW_verify_") || !strings.HasSuffix(name, ".txt") || strings.ContainsAny(name, "/\\") {
			add(kerr(fmt.Sprintf("%q: names must look like WW_verify_XXXX.txt, as downloaded from the admin console", name), "server", "verify_files"))
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add(kerr(`must be "debug", "info", "warn" or "error"`, "log", "level"))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add(kerr(`must be "text" or "json"`, "log", "format"))
	}
	switch c.Log.Timestamps {
	case "auto", "on", "off":
	default:
		add(kerr(`must be "auto", "on" or "off"`, "log", "timestamps"))
	}
	if c.Workers.Count < 1 || c.Workers.Count > 10000 {
		add(kerr("must be between 1 and 10000", "workers", "count"))
	}
	if c.Storage.DedupWindow < time.Hour {
		add(kerr("must be at least 1h (WeCom retries for a few seconds; keep a margin)", "storage", "dedup_window"))
	}
	if c.WeCom.CorpID == "" {
		add(kerr("is required: 我的企业 → 企业信息 → 企业ID", "wecom", "corp_id"))
	}
	for _, k := range []struct{ v, name string }{{c.WeCom.APIBase, "api_base"}, {c.WeCom.OAuthBase, "oauth_base"}, {c.WeCom.SSOBase, "sso_base"}} {
		if u, err := url.Parse(k.v); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			add(kerr("must be an absolute http(s) URL", "wecom", k.name))
		}
	}
	if c.WeCom.DuplicateCheckInterval < 0 || c.WeCom.DuplicateCheckInterval > 4*time.Hour {
		add(kerr("must be between 0s and 4h (WeCom's limit)", "wecom", "duplicate_check_interval"))
	}
	if c.WeCom.MaxCallbackAge >= c.Storage.DedupWindow {
		add(kerr("must be shorter than storage.dedup_window, or an old callback could be replayed after its dedup mark is pruned", "wecom", "max_callback_age"))
	}
	if c.WeCom.PerMemberPerMinute < 1 || c.WeCom.PerMemberPerMinute > 30 {
		add(kerr("must be between 1 and 30 (WeCom drops more than 30 a minute)", "wecom", "per_member_per_minute"))
	}
	if len(c.Apps) == 0 {
		add(kerr("at least one [[apps]] entry is required", "apps"))
	}
	names := map[string]bool{}
	agents := map[int64]bool{}
	for i, a := range c.Apps {
		idx := fmt.Sprint(i)
		p := func(k string) []string { return []string{"apps", idx, k} }
		if !reAppName.MatchString(a.Name) {
			add(kerr("must be 1-32 lowercase letters, digits, - or _ (it is the callback path /wecom/<name>)", p("name")...))
		} else if names[a.Name] {
			add(kerr(fmt.Sprintf("%q is used by two apps", a.Name), p("name")...))
		}
		names[a.Name] = true
		if a.AgentID <= 0 {
			add(kerr("is required: 应用管理 → 应用 → AgentId", p("agent_id")...))
		} else if agents[a.AgentID] {
			add(kerr(fmt.Sprintf("%d is used by two apps", a.AgentID), p("agent_id")...))
		}
		agents[a.AgentID] = true
		if a.Secret == "" {
			add(kerr("is required: 应用管理 → 应用 → Secret", p("secret")...))
		}
		if a.Token == "" {
			add(kerr("is required: 应用 → 接收消息 → 设置API接收 → Token", p("token")...))
		}
		if a.EncodingAESKey == "" {
			add(kerr("is required: 应用 → 接收消息 → 设置API接收 → EncodingAESKey", p("encoding_aes_key")...))
		} else if unresolved(a.EncodingAESKey) {
			// already reported by resolveSecrets
		} else if _, err := wecom.NewCrypto(a.Token.Value(), a.EncodingAESKey.Value(), "x"); err != nil && a.Token != "" {
			add(kerr("must be the 43-character EncodingAESKey from the admin console", p("encoding_aes_key")...))
		}
		if a.Backend == "" {
			add(kerr("is required: the name of a [backends.NAME] table", p("backend")...))
		} else if _, ok := c.Backends[a.Backend]; !ok {
			add(kerr(fmt.Sprintf("names backend %q, but there is no [backends.%s]", a.Backend, a.Backend), p("backend")...))
		}
		if a.Delivery != "stream" && a.Delivery != "whole" {
			add(kerr(`must be "stream" or "whole"`, p("delivery")...))
		}
		if a.Format != "text" && a.Format != "markdown" {
			add(kerr(`must be "text" or "markdown"`, p("format")...))
		}
		if a.PerMinute < 0 || a.PerDay < 0 {
			add(kerr("must not be negative", p("rate_per_minute")...))
		}
		if a.IdleRollover < 0 {
			add(kerr("must not be negative", p("idle_rollover")...))
		}
	}
	if c.History.LoginApp != "" && !names[c.History.LoginApp] {
		add(kerr(fmt.Sprintf("names app %q, which is not configured", c.History.LoginApp), "history", "login_app"))
	}
	if k := c.History.SessionKey; k != "" && len(k) < 32 {
		add(kerr("must be at least 32 characters (or leave it empty to generate one)", "history", "session_key"))
	}
	backendNames := make([]string, 0, len(c.Backends))
	for name := range c.Backends {
		backendNames = append(backendNames, name)
	}
	sort.Strings(backendNames)
	for _, name := range backendNames {
		b := c.Backends[name]
		if err := b.Validate("backends." + name); err != nil {
			for _, e := range unjoin(err) {
				add(backendErr(name, e))
			}
		}
	}
	if strings.Count(c.Texts.Failed, "%s") > 1 || strings.Count(c.Texts.Interrupted, "%s") > 1 {
		add(kerr("may contain at most one %s (the reference id)", "texts", "failed"))
	}
	return errors.Join(errs...)
}

// backendErr ties an llm validation error to its key for line lookup.
func backendErr(name string, e error) error {
	msg := e.Error()
	// llm formats "backends.NAME.key: message"; recover the key if present.
	rest := strings.TrimPrefix(msg, "llm: ")
	prefix := "backends." + name + "."
	if strings.HasPrefix(rest, prefix) {
		if i := strings.Index(rest, ":"); i > 0 {
			key := rest[len(prefix):i]
			return kerr(strings.TrimSpace(rest[i+1:]), "backends", name, key)
		}
	}
	return kerr(rest, "backends", name)
}

// Enabled reports whether the history page is on (default true).
func (h HistoryConfig) enabled() bool { return h.Enabled == nil || *h.Enabled }

func (s ServerConfig) metrics() bool { return s.Metrics == nil || *s.Metrics }

func (a AppConfig) recallThinking() bool { return a.RecallThinking == nil || *a.RecallThinking }
