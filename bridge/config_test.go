package bridge

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom"
)

const validConfig = `
[server]
listen = "127.0.0.1:8080"
public_url = "https://bot.example.com"       # how WeCom and browsers reach us

[storage]
path = "/var/lib/wecom-bridge/bridge.db"

[wecom]
corp_id = "ww0123456789abcdef"
# api_base   = "https://qyapi.weixin.qq.com"      # overridable, for proxies and tests
# oauth_base = "https://open.weixin.qq.com"
# sso_base   = "https://login.work.weixin.qq.com"

[[apps]]
name = "helpdesk"                 # its callback URL is {public_url}/wecom/helpdesk
agent_id = 1000002
secret = "corp-secret-value-1234"
token = "QDG6eK"
encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
backend = "kb"

[backends.kb]
type = "dify"
base_url = "https://api.dify.ai/v1"
api_key = "app-secretdifykey"

[backends.chat]
type = "openai"
base_url = "https://api.deepseek.com/v1"
api_key = "sk-secretopenaikey"
model = "deepseek-chat"
system_prompt = "你是公司的内部助手。"
`

// The shape given in the issue is accepted exactly as written.
func TestParseIssueShape(t *testing.T) {
	cfg, err := Parse("c.toml", []byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Apps[0].Backend != "kb" || cfg.Backends["chat"].Model != "deepseek-chat" || cfg.History.LoginApp != "helpdesk" {
		t.Fatalf("decoded %+v", cfg)
	}
	if cfg.Apps[0].Delivery != "stream" || cfg.Apps[0].Format != "text" || cfg.Workers.Count != DefaultWorkers {
		t.Fatal("defaults not applied")
	}
}

// Unknown keys and every validation problem are reported in one run, each
// with its line.
func TestParseReportsAllProblemsWithLines(t *testing.T) {
	bad := strings.NewReplacer(
		`public_url = "https://bot.example.com"`, `public_url = "bot.example.com"`,
		"agent_id = 1000002", "agent_id = 1000002\nagentid = 5",
		`backend = "kb"`, `backend = "nosuch"`,
		`model = "deepseek-chat"`, `model = "deepseek-chat"`+"\nmodle = \"x\"",
		`encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"`, `encoding_aes_key = "short"`,
	).Replace(validConfig)
	_, err := Parse("c.toml", []byte(bad))
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	lineOf := func(needle string) int {
		for i, l := range strings.Split(bad, "\n") {
			if strings.Contains(l, needle) {
				return i + 1
			}
		}
		t.Fatalf("%q not in config", needle)
		return 0
	}
	for _, want := range []string{
		fmt.Sprintf(`c.toml:%d: apps.agentid: 未知的配置项`, lineOf("agentid = 5")),
		`unknown key "apps.agentid"`,
		fmt.Sprintf(`c.toml:%d: backends.chat.modle: 未知的配置项`, lineOf("modle")),
		fmt.Sprintf(`c.toml:%d: server.public_url: 必须是完整的 http(s) 地址`, lineOf("public_url")),
		"must be an absolute http(s) URL",
		fmt.Sprintf(`c.toml:%d: apps[0].backend: 没有名为 "nosuch" 的后端`, lineOf(`backend = "nosuch"`)),
		`names backend "nosuch"`,
		fmt.Sprintf(`c.toml:%d: apps[0].encoding_aes_key: 必须是管理后台给出的 43 个字符的 EncodingAESKey（现在是 5 个字符）`, lineOf(`encoding_aes_key`)),
		"must be the 43-character EncodingAESKey",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if !strings.Contains(msg, "5 problem(s)") {
		t.Errorf("problem count wrong:\n%s", msg)
	}
}

func TestParseSyntaxErrorHasLine(t *testing.T) {
	_, err := Parse("c.toml", []byte("[server]\nlisten = \"x\n"))
	if err == nil || !strings.Contains(err.Error(), "c.toml:2:") {
		t.Fatalf("err = %v", err)
	}
	_, err = Parse("c.toml", []byte("[server]\nlisten = 5\n"))
	if err == nil || !strings.Contains(err.Error(), "c.toml:2") {
		t.Fatalf("type error without line: %v", err)
	}
}

// Secrets come from env:NAME and file:/path, and are never printed.
func TestSecretsResolvedAndRedacted(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "aes")
	if err := os.WriteFile(keyFile, []byte("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_CORP_SECRET", "from-env-secret-xyz")
	text := strings.NewReplacer(
		`secret = "corp-secret-value-1234"`, `secret = "env:TEST_CORP_SECRET"`,
		`encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"`, `encoding_aes_key = "file:`+keyFile+`"`,
	).Replace(validConfig)
	cfg, err := Parse("c.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Apps[0].Secret.Value() != "from-env-secret-xyz" || len(cfg.Apps[0].EncodingAESKey.Value()) != 43 {
		t.Fatalf("secrets not resolved")
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "cfg", cfg, "app", cfg.Apps[0])
	dumps := buf.String() + fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg.Apps[0])
	for _, secret := range []string{"from-env-secret-xyz", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "app-secretdifykey", "sk-secretopenaikey", "QDG6eK"} {
		if strings.Contains(dumps, secret) {
			t.Errorf("secret %q printed", secret)
		}
	}
	// A missing variable is an error that names the key and the variable.
	_, err = Parse("c.toml", []byte(strings.Replace(text, "TEST_CORP_SECRET", "NOPE_NOT_SET_VAR", 1)))
	if err == nil || !strings.Contains(err.Error(), "apps[0].secret: 密钥无法读取：环境变量 NOPE_NOT_SET_VAR 未设置") ||
		!strings.Contains(err.Error(), "environment variable NOPE_NOT_SET_VAR is not set") {
		t.Fatalf("err = %v", err)
	}
}

// config.example.toml parses (with its env: secrets set) and mentions every
// key the config accepts.
func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"HELPDESK_SECRET", "HELPDESK_TOKEN", "CHAT_SECRET", "CHAT_TOKEN", "DIFY_KB_KEY", "DEEPSEEK_KEY"} {
		t.Setenv(v, "x-"+v)
	}
	t.Setenv("HELPDESK_AES_KEY", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C")
	t.Setenv("CHAT_AES_KEY", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C")
	if _, err := Parse("config.example.toml", data); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#?\s*([a-z_]+)\s*=`).FindAllStringSubmatch(string(data), -1) {
		documented[m[1]] = true
	}
	var walk func(t reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			tag := f.Tag.Get("toml")
			if tag == "" {
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map || ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft.PkgPath() != "time" {
				walk(ft, path+tag+".")
				continue
			}
			if tag == "verify_files" || tag == "inputs" {
				continue // free-form tables, shown as [server.verify_files] / [apps.inputs]
			}
			if !documented[tag] {
				t.Errorf("config.example.toml does not document %s%s", path, tag)
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	for _, table := range []string{"[server.verify_files]", "[apps.inputs]", "[bots.inputs]", "[[bots]]"} {
		if !strings.Contains(string(data), table) {
			t.Errorf("config.example.toml does not show %s", table)
		}
	}
}

// lineOf returns the 1-based line of the first line of text containing needle.
func lineOf(t *testing.T, text, needle string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, needle) {
			return i + 1
		}
	}
	t.Fatalf("%q not in config", needle)
	return 0
}

func mustContainAll(t *testing.T, msg string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(msg, w) {
			t.Errorf("error lacks %q:\n%s", w, msg)
		}
	}
}

// A bare number where a duration is expected would be nanoseconds; it and
// every malformed duration string are reported in one run, each with its
// key, line and an example to copy.
func TestConfigDurationsAllReported(t *testing.T) {
	text := strings.NewReplacer(
		`listen = "127.0.0.1:8080"`, "listen = \"127.0.0.1:8080\"\nidle_timeout = 60",
		`path = "/var/lib/wecom-bridge/bridge.db"`, "path = \"/var/lib/wecom-bridge/bridge.db\"\ndedup_window = \"three days\"",
		`backend = "kb"`, "backend = \"kb\"\nthinking_after = \"20\"",
		`api_key = "app-secretdifykey"`, "api_key = \"app-secretdifykey\"\ntimeout = 300\nretry_base = 1.5",
	).Replace(validConfig)
	_, err := Parse("c.toml", []byte(text))
	if err == nil {
		t.Fatal("bare-number durations accepted")
	}
	msg := err.Error()
	mustContainAll(t, msg,
		fmt.Sprintf(`c.toml:%d: server.idle_timeout: 时长必须写成带单位的字符串，例如 "60s"`, lineOf(t, text, "idle_timeout = 60")),
		fmt.Sprintf(`c.toml:%d: backends.kb.timeout: 时长必须写成带单位的字符串，例如 "300s"`, lineOf(t, text, "timeout = 300")),
		`a duration must be a string with a unit such as "300s" (a bare number would be read as nanoseconds)`,
		fmt.Sprintf(`c.toml:%d: apps[0].thinking_after: 时长 "20" 缺少单位，请写成 "20s"`, lineOf(t, text, `thinking_after = "20"`)),
		fmt.Sprintf(`c.toml:%d: storage.dedup_window: 无效的时长 "three days"`, lineOf(t, text, "three days")),
		`"90s", "10m", "24h"`,
		fmt.Sprintf(`c.toml:%d: backends.kb.retry_base: 时长必须写成带单位的字符串，例如 "1.5s"`, lineOf(t, text, "retry_base = 1.5")),
		"5 problem(s)",
	)
	// Strings with units are fine, negative ones too where allowed.
	ok := strings.Replace(validConfig, `backend = "kb"`, "backend = \"kb\"\nthinking_after = \"-1s\"\nidle_rollover = \"8h\"", 1)
	if cfg, err := Parse("c.toml", []byte(ok)); err != nil || cfg.Apps[0].ThinkingAfter >= 0 || cfg.Apps[0].IdleRollover.Hours() != 8 {
		t.Fatalf("valid durations: %v", err)
	}
}

// Every time.Duration key of the config, bridge's and llm's, is checked.
func TestConfigDurationsEveryKey(t *testing.T) {
	var keys []string
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			tag := f.Tag.Get("toml")
			ft := f.Type
			for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map || ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch {
			case ft == reflect.TypeOf(time.Duration(0)):
				keys = append(keys, path+tag)
			case ft.Kind() == reflect.Struct && ft.PkgPath() != "time":
				walk(ft, path+tag+".")
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	if len(keys) < 19 {
		t.Fatalf("found only %d duration keys: %v", len(keys), keys)
	}
	for _, k := range keys {
		parts := strings.Split(k, ".")
		var text string
		switch parts[0] {
		case "apps":
			text = strings.Replace(validConfig, `backend = "kb"`, "backend = \"kb\"\n"+parts[1]+" = 7", 1)
		case "bots":
			text = validConfig + "\n[[bots]]\nname = \"b\"\nbot_id = \"aib1\"\nsecret = \"s\"\nbackend = \"kb\"\n" + parts[1] + " = 7\n"
		case "backends":
			text = strings.Replace(validConfig, `api_key = "app-secretdifykey"`, "api_key = \"app-secretdifykey\"\n"+parts[1]+" = 7", 1)
		default:
			text = validConfig + "\n[" + parts[0] + "]\n" + parts[1] + " = 7\n"
			if parts[0] == "server" || parts[0] == "storage" || parts[0] == "wecom" {
				// these tables exist already: add the key inside it
				text = strings.Replace(validConfig, "["+parts[0]+"]", "["+parts[0]+"]\n"+parts[1]+" = 7", 1)
			}
		}
		_, err := Parse("c.toml", []byte(text))
		disp := strings.Replace(k, "apps.", "apps[0].", 1)
		disp = strings.Replace(disp, "bots.", "bots[0].", 1)
		disp = strings.Replace(disp, "backends.", "backends.kb.", 1)
		if err == nil || !strings.Contains(err.Error(), disp+`: 时长必须写成带单位的字符串，例如 "7s"`) {
			t.Errorf("%s = 7 not rejected as a bare number: %v", k, err)
		}
	}
}

// failed and interrupted are formatted with the reference id: exactly one
// %s; the other texts are sent as they are.
func TestConfigTextsPlaceholders(t *testing.T) {
	text := validConfig + `
[texts]
failed = "出错了"
interrupted = "中断了 %s %d"
help = "帮助 %s"
over_day = "100% 用完了"
`
	_, err := Parse("c.toml", []byte(text))
	if err == nil {
		t.Fatal("bad texts accepted")
	}
	mustContainAll(t, err.Error(),
		fmt.Sprintf(`c.toml:%d: texts.failed: 必须正好包含一个 %%s（参考编号），现在有 0 个占位符`, lineOf(t, text, `failed = "出错了"`)),
		fmt.Sprintf(`c.toml:%d: texts.interrupted: 必须正好包含一个 %%s（参考编号），现在有 2 个占位符 [%%s %%d]`, lineOf(t, text, "interrupted =")),
		fmt.Sprintf(`c.toml:%d: texts.help: 这段文字原样发送，%%s 不会被替换`, lineOf(t, text, "help =")),
		"3 problem(s)",
	)
	good := validConfig + "\n[texts]\nfailed = \"成功率 100%% 以外：%s\"\ninterrupted = \"%s\"\n"
	cfg, err := Parse("c.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf(cfg.Texts.Failed, "REF1"); got != "成功率 100% 以外：REF1" {
		t.Fatalf("formatted %q", got)
	}
	if err := DefaultTexts().validate(); err != nil {
		t.Fatalf("default texts invalid: %v", err)
	}
}

const botOnlyConfig = `
[[bots]]
name = "kbbot"
bot_id = "aibXXXXXXXX"
secret = "bot-secret-1"
backend = "kb"

[backends.kb]
type = "dify"
api_key = "app-secretdifykey"
`

// A config with only [[bots]] (no [[apps]], no corp_id, no public_url) is
// valid, with the defaults of issue 10.
func TestConfigBotsOnly(t *testing.T) {
	cfg, err := Parse("c.toml", []byte(botOnlyConfig))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Bots[0]
	if b.Mode != BotModeWebSocket || b.WSURL != DefaultBotWSURL || b.GroupMemory != GroupMemoryUser || b.Secret.Value() != "bot-secret-1" {
		t.Fatalf("bot %+v", b)
	}
	if cfg.History.enabled() {
		t.Fatal("history page on without an app to sign in with")
	}
	// Asking for the history page without an app is an error that says how.
	_, err = Parse("c.toml", []byte(botOnlyConfig+"\n[history]\nenabled = true\n"))
	if err == nil || !strings.Contains(err.Error(), "history.enabled: 历史记录页用自建应用登录企业微信") {
		t.Fatalf("err = %v", err)
	}
	// ws:// is allowed (proxies and tests); webhook mode with its keys too.
	text := strings.Replace(botOnlyConfig, `backend = "kb"`, "backend = \"kb\"\nws_url = \"ws://127.0.0.1:9000/ws\"\ngroup_memory = \"group\"\nwelcome = \"你好\"", 1) + `
[server]
public_url = "https://bot.example.com"

[[bots]]
name = "hook"
bot_id = "aibYYYY"
mode = "webhook"
token = "tok"
encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
backend = "kb"
allow_users = ["zhangsan"]
rate_per_minute = 5
[bots.inputs]
x = "y"
`
	cfg, err = Parse("c.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bots[0].WSURL != "ws://127.0.0.1:9000/ws" || cfg.Bots[0].GroupMemory != GroupMemoryGroup || cfg.Bots[1].Mode != BotModeWebhook || cfg.Bots[1].Inputs["x"] != "y" {
		t.Fatalf("bots %+v", cfg.Bots)
	}
}

// Bot mistakes are reported with key and line, and names are unique across
// [[apps]] and [[bots]].
func TestConfigBotProblems(t *testing.T) {
	text := validConfig + `
[[bots]]
name = "helpdesk"
mode = "websocket"
ws_url = "https://openws.example.com"
backend = "nosuch"
group_memory = "everyone"

[[bots]]
name = "hook"
bot_id = "aib2"
mode = "webhook"
encoding_aes_key = "short"
backend = "kb"

[[bots]]
name = "Bad Name"
bot_id = "aib3"
mode = "push"
secret = "env:NO_SUCH_BOT_SECRET_VAR"
backend = "kb"
`
	_, err := Parse("c.toml", []byte(text))
	if err == nil {
		t.Fatal("bad bots accepted")
	}
	bot := func(i int, needle string) int {
		// the needle's line inside the i-th [[bots]] table
		lines := strings.Split(text, "\n")
		seen := -1
		for n, l := range lines {
			if strings.TrimSpace(l) == "[[bots]]" {
				seen++
			}
			if seen == i && strings.Contains(l, needle) {
				return n + 1
			}
		}
		t.Fatalf("%q not in bot %d", needle, i)
		return 0
	}
	mustContainAll(t, err.Error(),
		fmt.Sprintf(`c.toml:%d: bots[0].name: 名称 "helpdesk" 重复`, bot(0, `name = "helpdesk"`)),
		"names must be unique across [[apps]] and [[bots]]",
		fmt.Sprintf(`c.toml:%d: bots[0].bot_id: 必须填写`, bot(0, "[[bots]]")), // a missing key: its table's line
		fmt.Sprintf(`c.toml:%d: bots[0].secret: 长连接模式必须填写`, bot(0, "[[bots]]")),
		fmt.Sprintf(`c.toml:%d: bots[0].ws_url: 必须是 wss:// 或 ws:// 地址`, bot(0, "ws_url")),
		fmt.Sprintf(`c.toml:%d: bots[0].backend: 没有名为 "nosuch" 的后端`, bot(0, "nosuch")),
		fmt.Sprintf(`c.toml:%d: bots[0].group_memory: 只能是 "user"、"group"`, bot(0, "group_memory")),
		fmt.Sprintf(`c.toml:%d: bots[1].token: 回调模式必须填写`, bot(1, "[[bots]]")),
		fmt.Sprintf(`c.toml:%d: bots[1].encoding_aes_key: 必须是管理后台给出的 43 个字符的 EncodingAESKey（现在是 5 个字符）`, bot(1, "encoding_aes_key")),
		fmt.Sprintf(`c.toml:%d: bots[2].name: 只能由 1-32 个小写字母`, bot(2, "Bad Name")),
		fmt.Sprintf(`c.toml:%d: bots[2].mode: 只能是 "websocket"、"webhook"，不能是 "push"`, bot(2, "push")),
		fmt.Sprintf(`c.toml:%d: bots[2].secret: 密钥无法读取：环境变量 NO_SUCH_BOT_SECRET_VAR 未设置`, bot(2, "NO_SUCH_BOT_SECRET_VAR")),
		"11 problem(s)",
	)
	// Departments are looked up through an app: a bot-only config with
	// allow_departments says so.
	_, err = Parse("c.toml", []byte(strings.Replace(botOnlyConfig, `backend = "kb"`, "backend = \"kb\"\nallow_departments = [2]", 1)))
	if err == nil || !strings.Contains(err.Error(), "bots[0].allow_departments: 需要至少一个 [[apps]]") {
		t.Fatalf("err = %v", err)
	}
	// Without apps nor bots, corp_id and an entry are asked for.
	_, err = Parse("c.toml", []byte("[server]\npublic_url = \"https://x.example.com\"\n"))
	if err == nil || !strings.Contains(err.Error(), "wecom.corp_id: 必须填写") || !strings.Contains(err.Error(), "至少需要一个 [[apps]]") {
		t.Fatalf("err = %v", err)
	}
}

// [wecom] proxy is validated, and WeComTransport sends every request
// through it — loopback ones included, unlike HTTPS_PROXY.
func TestConfigWeComProxy(t *testing.T) {
	for _, bad := range []string{"10.0.0.5:3128", "ftp://10.0.0.5", "http://", "http://p.example.com:3128/path"} {
		text := strings.Replace(validConfig, `corp_id = "ww0123456789abcdef"`, `corp_id = "ww0123456789abcdef"`+"\nproxy = \""+bad+"\"", 1)
		_, err := Parse("c.toml", []byte(text))
		want := fmt.Sprintf("c.toml:%d: wecom.proxy: 必须是代理地址，例如 http://10.0.0.5:3128", lineOf(t, text, "proxy ="))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("proxy %q: %v", bad, err)
		}
	}
	var mu sync.Mutex
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.String()) // a proxy sees the absolute URL
		mu.Unlock()
		_, _ = io.WriteString(w, `{"errcode":0}`)
	}))
	defer proxy.Close()
	text := strings.Replace(validConfig, `corp_id = "ww0123456789abcdef"`, `corp_id = "ww0123456789abcdef"`+"\nproxy = \"http://user:pw@"+strings.TrimPrefix(proxy.URL, "http://")+"\"", 1)
	cfg, err := Parse("c.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.WeCom.ProxyDisplay(); d != proxy.URL || strings.Contains(d, "pw") {
		t.Errorf("ProxyDisplay = %q, want %q without credentials", d, proxy.URL)
	}
	hc := &http.Client{Transport: cfg.WeComTransport(nil)}
	resp, err := hc.Get("http://127.0.0.1:1/cgi-bin/gettoken?corpid=x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != "GET http://127.0.0.1:1/cgi-bin/gettoken?corpid=x" {
		t.Fatalf("proxy saw %v", seen)
	}
	// The base transport's settings are kept; only Proxy changes.
	base := &http.Transport{MaxConnsPerHost: 7}
	if tr := cfg.WeComTransport(base); tr.MaxConnsPerHost != 7 || tr == base || base.Proxy != nil {
		t.Fatal("WeComTransport must clone base and keep its settings")
	}
}

// Every restart-only key that changed is listed, the per-member send
// budget and the bots' connection settings included; reloadable ones are
// not.
func TestConfigRestartKeys(t *testing.T) {
	withBot := validConfig + "\n[[bots]]\nname = \"kbbot\"\nbot_id = \"aib1\"\nsecret = \"s1\"\nbackend = \"kb\"\n"
	old, err := Parse("c.toml", []byte(withBot))
	if err != nil {
		t.Fatal(err)
	}
	if keys := RestartKeys(old, old); len(keys) != 0 {
		t.Fatalf("no change, yet %v", keys)
	}
	next, err := Parse("c.toml", []byte(strings.NewReplacer(
		`listen = "127.0.0.1:8080"`, "listen = \"127.0.0.1:9090\"\nidle_timeout = \"1m\"",
		`corp_id = "ww0123456789abcdef"`, "corp_id = \"ww0123456789abcdef\"\nper_member_per_minute = 20\nproxy = \"http://10.0.0.5:3128\"\nsend_retry_for = \"1m\"",
		`secret = "s1"`, `secret = "s2"`,
		`backend = "nosuch"`, `backend = "kb"`,
		`system_prompt = "你是公司的内部助手。"`, `system_prompt = "changed"`,
	).Replace(withBot)+"\n[workers]\ncount = 3\n[log]\nlevel = \"debug\"\n[texts]\nthinking = \"稍等\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"server.listen", "server.idle_timeout", "log", "workers.count", "wecom.proxy"}
	if got := RestartKeys(old, next); !reflect.DeepEqual(got, want) {
		t.Fatalf("RestartKeys = %v, want %v", got, want)
	}
	// A bot added or removed is a reload, not a restart.
	if got := RestartKeys(next, mustParse(t, validConfig)); !reflect.DeepEqual(got, want) {
		t.Fatalf("bot removed: %v", got)
	}
}

func mustParse(t *testing.T, text string) *Config {
	t.Helper()
	cfg, err := Parse("c.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// simulate emulates WeCom: the shipped example loads with no WeCom secret
// in the environment, only the chosen backend's key.
func TestConfigParseForSimulate(t *testing.T) {
	data, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	// Parse refuses it: every env: secret is missing.
	if _, err := Parse("config.example.toml", data); err == nil || !strings.Contains(err.Error(), "HELPDESK_SECRET") {
		t.Fatalf("Parse without secrets: %v", err)
	}
	// Default choice: the first app, whose backend key is then the only
	// thing asked for.
	_, ch, err := ParseForSimulate("config.example.toml", data, SimulateChoice{})
	if err == nil || strings.Count(err.Error(), "\n") != 1 || !strings.Contains(err.Error(), "backends.kb.api_key: 密钥无法读取：环境变量 DIFY_KB_KEY 未设置") {
		t.Fatalf("only the chosen backend's key must be asked for: %v", err)
	}
	if ch.App != "helpdesk" || ch.Backend != "kb" {
		t.Fatalf("default choice %+v", ch)
	}
	t.Setenv("DEEPSEEK_KEY", "sk-x")
	cfg, ch, err := ParseForSimulate("config.example.toml", data, SimulateChoice{App: "chat"})
	if err != nil {
		t.Fatal(err)
	}
	if ch != (SimulateChoice{App: "chat", Backend: "chat"}) || len(cfg.Apps) != 1 || cfg.Apps[0].Name != "chat" || len(cfg.Backends) != 1 || cfg.Backends["chat"].APIKey != "sk-x" {
		t.Fatalf("choice %+v, config apps %+v backends %v", ch, cfg.Apps, cfg.Backends)
	}
	a := cfg.Apps[0]
	if cfg.WeCom.CorpID == "" || a.AgentID <= 0 || a.Secret == "" || strings.HasPrefix(a.Secret.Value(), "env:") {
		t.Fatalf("credentials not generated: %+v", a)
	}
	if _, err := wecom.NewCrypto(a.Token.Value(), a.EncodingAESKey.Value(), cfg.WeCom.CorpID); err != nil {
		t.Fatalf("generated token/EncodingAESKey unusable: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("simulate config does not validate: %v", err)
	}
	// A backend alone gets a generated app; a bot alone its own config.
	cfg, ch, err = ParseForSimulate("config.example.toml", data, SimulateChoice{Backend: "chat"})
	if err != nil || len(cfg.Apps) != 1 || cfg.Apps[0].Name != "simulate" || cfg.Apps[0].Backend != "chat" || ch.Backend != "chat" {
		t.Fatalf("backend only: %v %+v", err, cfg)
	}
	bots := strings.Replace(botOnlyConfig, `secret = "bot-secret-1"`, `secret = "env:NOT_SET_BOT_SECRET"`, 1) +
		"\n[backends.other]\ntype = \"openai\"\nmodel = \"m\"\napi_key = \"env:NOT_SET_OTHER_KEY\"\n"
	cfg, ch, err = ParseForSimulate("b.toml", []byte(bots), SimulateChoice{})
	if err != nil || ch.Bot != "kbbot" || len(cfg.Bots) != 1 || cfg.Bots[0].Secret == "" || len(cfg.Apps) != 0 || cfg.History.enabled() {
		t.Fatalf("bot only: %v %+v %+v", err, ch, cfg)
	}
	if _, _, err := ParseForSimulate("b.toml", []byte(bots), SimulateChoice{App: "nope"}); err == nil || !strings.Contains(err.Error(), `no app named "nope"`) {
		t.Fatalf("unknown app: %v", err)
	}
	// Settings other than WeCom credentials are still checked.
	if _, _, err := ParseForSimulate("b.toml", []byte(bots+"\n[server]\nidle_timeout = 5\n"), SimulateChoice{}); err == nil || !strings.Contains(err.Error(), "server.idle_timeout") {
		t.Fatalf("bad duration in simulate: %v", err)
	}
}

// Whatever [texts] failed an operator writes, if validation accepts it,
// formatting it with the reference id shows no fmt error and the id once.
func FuzzConfigTextsFailed(f *testing.F) {
	for _, s := range []string{DefaultTexts().Failed, "%s", "100%% %s", "%d", "%", "%[1]s", "%-5s", "%s%s", "%%s", "出错 %v", "a%!s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		tx := DefaultTexts()
		tx.Failed = text
		if tx.validate() != nil {
			return
		}
		got := fmt.Sprintf(tx.Failed, "REF8C1D")
		if strings.Contains(got, "%!") && !strings.Contains(text, "%!") {
			t.Fatalf("accepted %q formats as %q", text, got)
		}
		if strings.Count(got, "REF8C1D") < 1 {
			t.Fatalf("accepted %q loses the reference id: %q", text, got)
		}
	})
}

// Values of the wrong type are all reported at once, each with key, line,
// what is expected and an example (the decoder stopped at the first one).
func TestConfigWrongTypesAllReported(t *testing.T) {
	text := strings.NewReplacer(
		"agent_id = 1000002", `agent_id = "1000002"`,
		`listen = "127.0.0.1:8080"`, "listen = 8080\nmetrics = \"yes\"",
		`model = "deepseek-chat"`, "model = \"deepseek-chat\"\ntemperature = \"0.7\"",
		`backend = "kb"`, "backend = \"kb\"\nallow_departments = [2, \"3\"]\nallow_users = \"zhangsan\"",
	).Replace(validConfig)
	_, err := Parse("c.toml", []byte(text))
	if err == nil {
		t.Fatal("wrong types accepted")
	}
	mustContainAll(t, err.Error(),
		fmt.Sprintf(`c.toml:%d: apps[0].agent_id: 类型不对：应为整数，例如 30（现在是字符串）/ wrong type: want integer such as 30, got a string`, lineOf(t, text, "agent_id =")),
		fmt.Sprintf(`c.toml:%d: server.listen: 类型不对：应为字符串，例如 "…"（现在是整数）`, lineOf(t, text, "listen = 8080")),
		fmt.Sprintf(`c.toml:%d: server.metrics: 类型不对：应为布尔值，例如 true`, lineOf(t, text, "metrics =")),
		fmt.Sprintf(`c.toml:%d: backends.chat.temperature: 类型不对：应为数字`, lineOf(t, text, "temperature =")),
		fmt.Sprintf(`c.toml:%d: apps[0].allow_departments: 第 2 个元素 / element 2: 类型不对：应为整数`, lineOf(t, text, "allow_departments")),
		fmt.Sprintf(`c.toml:%d: apps[0].allow_users: 类型不对：应为数组`, lineOf(t, text, "allow_users")),
		"6 problem(s)",
	)
	// Integers are fine where a float is expected, as TOML decoding allows.
	if _, err := Parse("c.toml", []byte(strings.Replace(validConfig, `model = "deepseek-chat"`, "model = \"deepseek-chat\"\ntemperature = 1", 1))); err != nil {
		t.Fatal(err)
	}
}
