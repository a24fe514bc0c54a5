package bridge

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
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
		fmt.Sprintf(`c.toml:%d: unknown key "apps.agentid"`, lineOf("agentid = 5")),
		fmt.Sprintf(`c.toml:%d: unknown key "backends.chat.modle"`, lineOf("modle")),
		fmt.Sprintf(`c.toml:%d: server.public_url: must be an absolute`, lineOf("public_url")),
		fmt.Sprintf(`c.toml:%d: apps[0].backend: names backend "nosuch"`, lineOf(`backend = "nosuch"`)),
		fmt.Sprintf(`c.toml:%d: apps[0].encoding_aes_key: must be the 43-character`, lineOf(`encoding_aes_key`)),
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
	if err == nil || !strings.Contains(err.Error(), "apps[0].secret: environment variable NOPE_NOT_SET_VAR is not set") {
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
	for _, table := range []string{"[server.verify_files]", "[apps.inputs]"} {
		if !strings.Contains(string(data), table) {
			t.Errorf("config.example.toml does not show %s", table)
		}
	}
}
