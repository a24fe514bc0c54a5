package bridge

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
)

// check reports what works and, for failures, what to fix; it fails the run
// when something required fails.
func TestCheckCommand(t *testing.T) {
	h := newHarness(t, "")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The callback probe goes to this daemon over loopback.
	local := *h.cfg
	local.Server.PublicURL = h.base
	var out bytes.Buffer
	ok := Check(ctx, &local, &out, quiet)
	if !ok {
		t.Fatalf("check failed on a good setup:\n%s", out.String())
	}
	for _, want := range []string{"gettoken", "OK", "agent/get", "backend kb (dify)", "backend chat (openai)", "answers WeCom's URL verification"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}

	// 60020 on agent/get: the egress IP and the 企业可信IP fix.
	h.wc.FailNext("/cgi-bin/agent/get", 60020, "not allow to access from your ip, hint: [1], from ip: 198.51.100.23, more info at https://open.work.weixin.qq.com/devtool/query?e=60020", 1)
	out.Reset()
	if Check(ctx, &local, &out, quiet) {
		t.Fatal("check passed despite 60020")
	}
	if !strings.Contains(out.String(), "198.51.100.23") || !strings.Contains(out.String(), "可信IP") {
		t.Fatalf("60020 report lacks the IP or the fix:\n%s", out.String())
	}

	// A wrong secret (40001) and a wrong Dify key (401).
	bad := local
	bad.Apps = append([]AppConfig(nil), h.cfg.Apps...)
	bad.Apps[0].Secret = "wrong-secret"
	h.dify.SetAPIKey("app-other")
	out.Reset()
	if Check(ctx, &bad, &out, quiet) {
		t.Fatal("check passed with a wrong secret")
	}
	report := out.String()
	if !strings.Contains(report, "40001") || !strings.Contains(report, "api_key") || !strings.Contains(report, "backends.kb") {
		t.Fatalf("report lacks the 40001 or the api_key fix:\n%s", report)
	}
	if strings.Contains(report, "wrong-secret") || strings.Contains(report, "app-llmtest") {
		t.Fatal("a secret is printed in the report")
	}
}

// simulate pushes typed lines through the real pipeline and prints the
// replies as WeCom would deliver them.
func TestSimulate(t *testing.T) {
	dify := llmtest.NewDify()
	defer dify.Close()
	dify.Push(llmtest.Script{Answer: "模拟的回答：**报销**需要发票。"})
	text := strings.Replace(validConfig, `base_url = "https://api.dify.ai/v1"`, `base_url = "`+dify.URL()+`"`, 1)
	text = strings.Replace(text, `api_key = "app-secretdifykey"`, `api_key = "app-llmtest"`, 1)
	cfg, err := Parse("sim.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	in := strings.NewReader("报销流程？\n/new\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = Simulate(ctx, cfg, SimulateOptions{User: "zhangsan", In: in, Out: &out, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.Contains(got, "模拟的回答：报销需要发票。") || !strings.Contains(got, "已开始新的对话") {
		t.Fatalf("simulate printed:\n%s", got)
	}
	if r := dify.Requests(); len(r) != 1 || r[0].User != "helpdesk:zhangsan" || r[0].Query != "报销流程？" {
		t.Fatalf("Dify saw %+v", r)
	}
}
