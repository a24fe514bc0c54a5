package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"-version"}} {
		code, out, _ := runMain(t, args...)
		if code != 0 || !strings.HasPrefix(out, "wecom-bridge ") {
			t.Fatalf("%v: %d %q", args, code, out)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	code, _, errs := runMain(t, "frobnicate")
	if code != 2 || !strings.Contains(errs, "unknown command") {
		t.Fatalf("%d %q", code, errs)
	}
}

// A broken config exits non-zero and names the file, line and key.
func TestConfigErrorsExitNonZero(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("[server]\nlisten = \"127.0.0.1:8080\"\nlisen = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runMain(t, "check-config", "-config", path)
	if code != 1 || !strings.Contains(errs, "config.toml:3: unknown key \"server.lisen\"") || !strings.Contains(errs, "wecom.corp_id") {
		t.Fatalf("%d %q", code, errs)
	}
	code, _, errs = runMain(t, "-config", filepath.Join(t.TempDir(), "missing.toml"))
	if code != 1 || !strings.Contains(errs, "missing.toml") {
		t.Fatalf("%d %q", code, errs)
	}
}

func TestCheckConfigOnExample(t *testing.T) {
	for _, v := range []string{"HELPDESK_SECRET", "HELPDESK_TOKEN", "CHAT_SECRET", "CHAT_TOKEN", "DIFY_KB_KEY", "DEEPSEEK_KEY"} {
		t.Setenv(v, "x-"+v)
	}
	t.Setenv("HELPDESK_AES_KEY", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C")
	t.Setenv("CHAT_AES_KEY", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C")
	code, out, errs := runMain(t, "check-config", "-config", "config.example.toml")
	if code != 0 || !strings.Contains(out, "config OK") {
		t.Fatalf("%d %q %q", code, out, errs)
	}
}
