package bridge

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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
	for _, want := range []string{"gettoken", "OK", "agent/get", "backend kb (dify)", "backend chat (openai)", "answers WeCom's URL verification",
		"corp_id 和 secret 正确", "通过企业微信的 URL 验证",
		"attachments", ".media", "文件上传"} { // where attachments are kept; the Dify setting that takes them
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

// The callback probes of all apps are in flight together, each bounded by
// a short timeout like WeCom's own (about 1 s), not the 15 s of the other
// steps; and check's own client no longer makes llm warn that it would cut
// long answers.
func TestCheckProbesConcurrentlyWithShortTimeout(t *testing.T) {
	h := newHarness(t, "")
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logBuf.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Answers only once both apps' probes have arrived; a probe that came
	// alone waits until its client gives up.
	var mu sync.Mutex
	arrived := 0
	both := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived++
		if arrived == 2 {
			close(both)
		}
		mu.Unlock()
		select {
		case <-both:
			w.WriteHeader(http.StatusTeapot)
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	local := *h.cfg
	local.Server.PublicURL = srv.URL
	var out bytes.Buffer
	if !Check(ctx, &local, &out, log) {
		t.Fatalf("a callback-URL warning failed the check:\n%s", out.String())
	}
	if n := strings.Count(out.String(), "answered HTTP 418"); n != 2 {
		t.Fatalf("the two probes were not in flight together (%d answered):\n%s", n, out.String())
	}
	logMu.Lock()
	if strings.Contains(logBuf.String(), "http client timeout is shorter") {
		t.Errorf("check's own client triggers the llm timeout warning:\n%s", logBuf.String())
	}
	logMu.Unlock()

	// A port that accepts and never answers: the probe gives up after the
	// short timeout and says so.
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	local.Server.PublicURL = hang.URL
	out.Reset()
	Check(ctx, &local, &out, log)
	if n := strings.Count(out.String(), "did not answer within "+checkProbeTimeout.String()+" (WeCom waits about 1 s)"); n != 2 {
		t.Fatalf("hanging callback URL not reported with the short timeout on both apps:\n%s", out.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Network failures say where to look: refused port, unknown host, the
// proxy; and no secret reaches the report.
func TestCheckNetworkHints(t *testing.T) {
	h := newHarness(t, "")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close()
	for _, tc := range []struct {
		name string
		set  func(c *Config)
		want string
	}{
		{"refused", func(c *Config) { c.WeCom.APIBase = "http://" + deadAddr }, "连接被拒绝"},
		{"dns", func(c *Config) { c.WeCom.APIBase = "http://wecom-api.invalid" }, "域名解析失败"},
		{"proxy", func(c *Config) { c.WeCom.Proxy = "http://" + deadAddr }, "连不上代理：检查 wecom.proxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local := *h.cfg
			local.Server.PublicURL = h.base
			tc.set(&local)
			var out bytes.Buffer
			if Check(ctx, &local, &out, quiet) {
				t.Fatalf("check passed:\n%s", out.String())
			}
			report := out.String()
			if !strings.Contains(report, tc.want) {
				t.Fatalf("gettoken failure lacks %q:\n%s", tc.want, report)
			}
			if strings.Contains(report, "secret-helpdesk") || strings.Contains(report, "corpsecret") {
				t.Fatalf("secret in report:\n%s", report)
			}
		})
	}
}

// With [wecom] proxy, WeCom calls go through it, and a 60020 shows the
// egress IP WeCom saw (the proxy's) and where to add it.
func TestCheckEgressIPThroughProxy(t *testing.T) {
	h := newHarness(t, "")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var via []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		via = append(via, r.URL.Path)
		mu.Unlock()
		out := r.Clone(r.Context())
		out.RequestURI = ""
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	defer proxy.Close()
	local := *h.cfg
	local.Server.PublicURL = h.base
	local.WeCom.Proxy = proxy.URL
	h.wc.FailNext("/cgi-bin/agent/get", 60020, "not allow to access from your ip, hint: [1], from ip: 203.0.113.77, more info at https://open.work.weixin.qq.com/devtool/query?e=60020", 1)
	var out bytes.Buffer
	if Check(ctx, &local, &out, quiet) {
		t.Fatal("check passed despite 60020")
	}
	report := out.String()
	for _, want := range []string{"through proxy " + proxy.URL, "egress IP WeCom sees: 203.0.113.77", "经代理", "企业可信IP", "这是代理的出口 IP"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	got := strings.Join(via, " ")
	if strings.Count(got, "/cgi-bin/gettoken") != 2 || strings.Count(got, "/cgi-bin/agent/get") != 2 {
		t.Fatalf("WeCom calls did not all go through the proxy: %v", via)
	}
}
