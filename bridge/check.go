package bridge

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

// Timeouts of the check command.
const (
	// checkProbeTimeout bounds the callback-URL probe: WeCom itself waits
	// about 1 s for the answer to its URL verification, so a server that
	// is slower than this fails there too.
	checkProbeTimeout = 2 * time.Second
	// checkStepTimeout bounds each WeCom or backend step.
	checkStepTimeout = 15 * time.Second
)

// checkRow is one line of the check report.
type checkRow struct {
	app, step, status, detail string
}

// Check tests every app and bot of cfg against WeCom and its backend and
// prints a table of what works and, for each failure, what to fix. Apps are
// checked concurrently. It reports whether everything required passed.
func Check(ctx context.Context, cfg *Config, out io.Writer, log *slog.Logger) bool {
	// WeCom calls go through [wecom] proxy (or HTTPS_PROXY), as the
	// daemon's do, so the egress IP WeCom reports is the daemon's.
	wecomHC := &http.Client{Timeout: cfg.WeCom.RequestTimeout, Transport: cfg.WeComTransport(nil)}
	// No overall client timeout for the backends: each step has its own
	// deadline, and a client timeout would only make llm.New warn that it
	// cuts long answers — true of this client, not of the daemon's.
	llmHC := &http.Client{}
	probeHC := &http.Client{Timeout: checkProbeTimeout}

	egress := cfg.WeCom.ProxyDisplay()
	head := []checkRow{{"-", "config", "OK", fmt.Sprintf("%d app(s), %d bot(s), %d backend(s)", len(cfg.Apps), len(cfg.Bots), len(cfg.Backends))}}
	if len(cfg.Apps) > 0 {
		how := "直连 / direct (no proxy)"
		if egress != "" {
			how = "经代理 / through proxy " + egress
		}
		head = append(head, checkRow{"-", "wecom egress", "INFO", how})
	}

	if cfg.Media.enabled() {
		head = append(head, checkRow{"-", "attachments", "INFO", fmt.Sprintf("图片、文件与语音保存在 %s（随历史记录保留期删除）/ attachments are kept in %s, deleted with the history retention", mediaDir(cfg), mediaDir(cfg))})
	}
	if len(cfg.Apps) > 0 && cfg.Media.allows("voice") {
		// Voice messages of apps (AMR) need a speech backend and ffmpeg.
		if sp, err := newSpeech(ctx, cfg, llmHC, log); err != nil {
			head = append(head, checkRow{"-", "speech", "FAIL", explain(err)})
		} else {
			head = append(head, sp.checkRow(ctx))
		}
	}
	c := &checker{cfg: cfg, log: log, wecomHC: wecomHC, llmHC: llmHC, probeHC: probeHC, egress: egress}
	groups := make([][]checkRow, len(cfg.Apps)+len(cfg.Bots))
	var wg sync.WaitGroup
	for i, ac := range cfg.Apps {
		wg.Go(func() { groups[i] = c.app(ctx, ac) })
	}
	for i, bc := range cfg.Bots {
		wg.Go(func() { groups[len(cfg.Apps)+i] = c.bot(ctx, bc) })
	}
	wg.Wait()

	rows := head
	for _, g := range groups {
		rows = append(rows, g...)
	}
	ok := true
	for _, r := range rows {
		ok = ok && r.status != "FAIL"
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tCHECK\tRESULT\tDETAIL / HOW TO FIX")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.app, r.step, r.status, r.detail)
	}
	_ = tw.Flush()
	if ok {
		fmt.Fprintln(out, "\n全部检查通过 / all checks passed")
	} else {
		fmt.Fprintln(out, "\n有检查未通过，请按上表修复 / some checks failed: fix them as shown above")
	}
	return ok
}

// checker holds what the checks of one run share.
type checker struct {
	cfg                     *Config
	log                     *slog.Logger
	wecomHC, llmHC, probeHC *http.Client
	egress                  string // ProxyDisplay, "" when direct
}

func row(app, step string, err error, detail string) checkRow {
	if err != nil {
		return checkRow{app, step, "FAIL", explain(err)}
	}
	return checkRow{app, step, "OK", detail}
}

// app checks one app: its credentials, its visibility, its backend and
// its callback URL.
func (c *checker) app(ctx context.Context, ac AppConfig) []checkRow {
	var rows []checkRow
	// The client makes one attempt per call, so a check answers quickly.
	cl, err := wecom.New(c.cfg.wecomConfig(ac, c.wecomHC, c.log))
	if err != nil {
		return append(rows, row(ac.Name, "wecom client", err, ""))
	}
	sctx, cancel := context.WithTimeout(ctx, checkStepTimeout)
	_, err = cl.Token(sctx)
	cancel()
	rows = append(rows, row(ac.Name, "gettoken", err, "corp_id 和 secret 正确 / corp_id and secret accepted"))
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, checkStepTimeout)
		info, err := cl.Agent(sctx)
		cancel()
		detail := ""
		if err == nil {
			detail = fmt.Sprintf("应用「%s」, 可见范围: %d user(s), %d department(s), %d tag(s)", info.Name, len(info.AllowUsers), len(info.AllowParties), len(info.AllowTags))
			if info.Closed {
				err = errors.New("应用已停用：请在 应用管理 中启用 / the app is disabled: enable it in 应用管理")
			} else if len(info.AllowUsers)+len(info.AllowParties)+len(info.AllowTags) == 0 {
				err = errors.New("应用的可见范围为空，没有人能收到它的消息：在 应用管理 → 应用 → 可见范围 中添加成员 / nobody is in the app's 可见范围, so no one can receive its messages: add members in 应用管理 → 应用 → 可见范围")
			}
		}
		rows = append(rows, row(ac.Name, "agent/get (can send)", err, detail))
		if r, ok := c.egressRow(ac.Name, err); ok {
			rows = append(rows, r)
		}
	} else if r, ok := c.egressRow(ac.Name, err); ok {
		rows = append(rows, r)
	}
	rows = append(rows, c.backendRows(ctx, ac.Name, ac.Backend)...)
	// Is this daemon reachable at the callback URL? Only a warning: the
	// check may run before the daemon is started.
	return append(rows, probeCallback(ctx, c.probeHC, c.cfg, ac))
}

// bot checks one bot: its long connection (websocket mode) or its
// callback URL (webhook mode), and its backend.
func (c *checker) bot(ctx context.Context, bc BotConfig) []checkRow {
	var rows []checkRow
	if bc.Mode == BotModeWebhook {
		ac := AppConfig{Name: bc.Name, Token: bc.Token, EncodingAESKey: bc.EncodingAESKey}
		cfg := *c.cfg
		cfg.WeCom.CorpID = "" // a bot's receive id is empty
		rows = append(rows, probeCallback(ctx, c.probeHC, &cfg, ac))
	} else {
		rows = append(rows, c.subscribe(ctx, bc))
	}
	return append(rows, c.backendRows(ctx, bc.Name, bc.Backend)...)
}

// subscribe connects a websocket bot once and reports whether WeCom
// accepts its bot_id and secret. WeCom keeps one connection per bot, so a
// running daemon would be displaced: when one answers on server.listen,
// its own view of the connection is reported instead.
func (c *checker) subscribe(ctx context.Context, bc BotConfig) checkRow {
	rw := checkRow{bc.Name, "long connection", "", ""}
	if online, ok := c.runningBot(ctx, bc.Name); ok {
		if online {
			rw.status, rw.detail = "OK", "运行中的守护进程已连接 / the running daemon is subscribed"
		} else {
			rw.status, rw.detail = "FAIL", fmt.Sprintf("运行中的守护进程未能订阅：查看其日志；检查 bots.%s.bot_id 与 bots.%s.secret / the running daemon is not subscribed: see its log; check bots.%s.bot_id and secret", bc.Name, bc.Name, bc.Name)
		}
		return rw
	}
	sctx, cancel := context.WithTimeout(ctx, checkStepTimeout)
	defer cancel()
	cl, err := aibot.New(aibot.Config{Name: bc.Name, BotID: bc.BotID, Secret: bc.Secret.Value(), URL: bc.WSURL, DisplacedDelay: -1},
		aibot.Deps{Log: c.log, Handler: func(context.Context, *aibot.Callback) {}, HTTPClient: c.wecomHC})
	if err != nil {
		return row(bc.Name, "long connection", err, "")
	}
	done := make(chan error, 1)
	go func() { done <- cl.Run(sctx) }()
	for {
		switch st := cl.State(); st {
		case aibot.StateOnline:
			cancel()
			<-done
			return checkRow{bc.Name, "long connection", "OK", "已订阅 " + bc.WSURL + " / subscribed"}
		case aibot.StateAuthFailed:
			cancel()
			<-done
			return checkRow{bc.Name, "long connection", "FAIL", fmt.Sprintf("企业微信拒绝订阅：检查 bots.%s.bot_id 与 bots.%s.secret（智能机器人 → API 模式 → 长连接）/ WeCom refused the subscription: check bots.%s.bot_id and secret (%v)", bc.Name, bc.Name, bc.Name, cl.LastError())}
		}
		select {
		case err := <-done:
			if err == nil {
				err = cl.LastError()
			}
			return checkRow{bc.Name, "long connection", "FAIL", fmt.Sprintf("连不上 %s：%s / cannot connect: %v", bc.WSURL, netHintOr(err), err)}
		case <-sctx.Done():
			<-done
			return checkRow{bc.Name, "long connection", "FAIL", fmt.Sprintf("%s 在 %s 内未能订阅：%s / not subscribed within %s: %v", bc.WSURL, checkStepTimeout, netHintOr(cl.LastError()), checkStepTimeout, cl.LastError())}
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func netHintOr(err error) string {
	if h := netHint(err); h != "" {
		return h
	}
	return "检查 DNS、防火墙和出站代理（HTTPS_PROXY）/ check DNS, the firewall and the outbound proxy (HTTPS_PROXY)"
}

// runningBot asks a daemon running on server.listen whether a bot is
// subscribed (from its /metrics); ok is false when none answers.
func (c *checker) runningBot(ctx context.Context, name string) (online, ok bool) {
	addr := c.cfg.Server.Listen
	if strings.HasPrefix(addr, ":") {
		addr = "127.0.0.1" + addr
	}
	hc := &http.Client{Timeout: time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return false, false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	line := fmt.Sprintf("wecom_bridge_bot_online{bot=%q} ", name)
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, line) {
			return strings.TrimPrefix(l, line) == "1", true
		}
	}
	return false, false // no daemon there with this bot
}

// egressRow turns a 60020 (IP not in 企业可信IP) into the IP WeCom saw,
// the proxy it went through, and where to add it.
func (c *checker) egressRow(app string, err error) (checkRow, bool) {
	var we *wecom.APIError
	if !errors.As(err, &we) || we.Code != 60020 {
		return checkRow{}, false
	}
	ip := we.EgressIP()
	if ip == "" {
		ip = "（企业微信未给出 / not given by WeCom）"
	}
	via := "本机直连 / this host, direct"
	fix := "出口 IP 会变时，可设置 [wecom] proxy 为固定 IP 的代理，再把代理的 IP 加入 / if the IP changes, set [wecom] proxy to a fixed-IP proxy and add that proxy's IP"
	if c.egress != "" {
		via = "经代理 / through proxy " + c.egress
		fix = "这是代理的出口 IP / this is the proxy's egress IP"
	}
	return checkRow{app, "egress IP", "INFO", fmt.Sprintf(
		"企业微信看到的出口 IP / egress IP WeCom sees: %s（%s）。添加到 管理后台 → 应用管理 → 应用「%s」→ 企业可信IP / add it to the app's 企业可信IP (trusted IPs)。%s",
		ip, via, app, fix)}, true
}

// backendRows checks the backend an app or bot uses.
func (c *checker) backendRows(ctx context.Context, who, name string) []checkRow {
	bc := c.cfg.Backends[name]
	be, err := llm.New(bc, c.llmHC, c.log)
	if err != nil {
		return []checkRow{row(who, "backend "+name, err, "")}
	}
	ch, isChecker := be.(llm.Checker)
	if !isChecker {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, checkStepTimeout)
	info, err := ch.Check(sctx)
	cancel()
	detail := ""
	if err == nil {
		detail = strings.TrimSpace(fmt.Sprintf("%s %s %s", info.Name, info.Mode, info.Model))
	} else {
		err = fmt.Errorf("%s [config: backends.%s]", explain(err), name)
	}
	rows := []checkRow{row(who, "backend "+name+" ("+bc.Type+")", err, detail)}
	// Attachments: which kinds the backend takes, and where to turn more on.
	if fs, ok := be.(llm.FileSupport); ok && err == nil && c.cfg.Media.enabled() {
		sctx, cancel := context.WithTimeout(ctx, checkStepTimeout)
		caps, cerr := fs.Capabilities(sctx)
		cancel()
		switch {
		case cerr != nil:
			rows = append(rows, checkRow{who, "attachments", "WARN", explain(cerr)})
		case !caps.Enabled || len(caps.Kinds) == 0:
			rows = append(rows, checkRow{who, "attachments", "WARN", "后端不接受图片和文件，用户发来时会收到说明；要开启：" + caps.Setting + " / the backend takes no attachments"})
		default:
			var kinds []string
			for _, k := range caps.Kinds {
				kinds = append(kinds, string(k))
			}
			rows = append(rows, checkRow{who, "attachments", "OK", "接受 / takes: " + strings.Join(kinds, ", ") + "（更多类型：" + caps.Setting + "）"})
		}
	}
	return rows
}

// explain turns an error into the operator's fix.
func explain(err error) string {
	var we *wecom.APIError
	if errors.As(err, &we) {
		if h := we.Hint(); h != "" {
			return fmt.Sprintf("errcode %d: %s", we.Code, h)
		}
		return err.Error()
	}
	var le *llm.APIError
	if errors.As(err, &le) && le.Hint != "" {
		return fmt.Sprintf("HTTP %d %s: %s", le.Status, le.Code, le.Hint)
	}
	if h := netHint(err); h != "" {
		return netText(err) + ": " + h
	}
	return err.Error()
}

// netText describes a network error without the request's query (which
// may carry a secret).
func netText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		host := ""
		if u, perr := url.Parse(ue.URL); perr == nil {
			host = u.Scheme + "://" + u.Host
		}
		return fmt.Sprintf("%s %s: %v", ue.Op, host, ue.Err)
	}
	return err.Error()
}

// netHint says where to look for a network failure (DNS, firewall, proxy,
// TLS), or "" when err is not one.
func netHint(err error) string {
	var dnsErr *net.DNSError
	var certErr *x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var ne net.Error
	msg := err.Error()
	switch {
	case strings.Contains(msg, "proxyconnect") || strings.Contains(msg, "socks connect"):
		return "连不上代理：检查 wecom.proxy / HTTPS_PROXY 的地址，以及代理是否在运行、是否允许本机连接 / cannot reach the proxy: check wecom.proxy or HTTPS_PROXY and that the proxy runs and accepts this host"
	case errors.As(err, &dnsErr):
		return "域名解析失败：检查域名拼写和本机 DNS（/etc/resolv.conf）；内网无法解析外网域名时，配置 [wecom] proxy 或 HTTPS_PROXY / DNS lookup failed: check the host name and this host's DNS; on a network without outside DNS, use [wecom] proxy or HTTPS_PROXY"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "连接被拒绝：该端口没有程序在监听，或被防火墙拒绝 / connection refused: nothing listens on that port, or a firewall rejects it"
	case errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH):
		return "网络不可达：检查路由和防火墙；只能经代理出网时，配置 [wecom] proxy 或 HTTPS_PROXY / network unreachable: check routes and the firewall; if outbound traffic must use a proxy, set [wecom] proxy or HTTPS_PROXY"
	case errors.Is(err, syscall.ECONNRESET):
		return "连接被重置：防火墙或代理中断了连接 / connection reset: a firewall or proxy cut the connection"
	case errors.As(err, &certErr) || errors.As(err, &hostErr) || strings.Contains(msg, "x509:"):
		return "TLS 证书校验失败：安装系统 CA 证书（ca-certificates），或代理在拦截 HTTPS / TLS certificate check failed: install CA certificates, or a proxy intercepts HTTPS"
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "连接超时：检查防火墙 / 安全组是否放行出站连接；只能经代理出网时，配置 [wecom] proxy 或 HTTPS_PROXY / timed out: check that the firewall or security group allows outbound connections; if a proxy is required, set [wecom] proxy or HTTPS_PROXY"
	}
	return ""
}

// probeCallback signs a URL-verification request with the app's own token
// and sends it to the public callback URL, as WeCom would when the admin
// saves the 接收消息 settings. hc's timeout is short, like WeCom's.
func probeCallback(ctx context.Context, hc *http.Client, cfg *Config, ac AppConfig) checkRow {
	target := strings.TrimRight(cfg.Server.PublicURL, "/") + "/wecom/" + ac.Name
	row := checkRow{ac.Name, "callback URL", "WARN", ""}
	q, err := emulator.VerifyURLQuery(ac.Token.Value(), ac.EncodingAESKey.Value(), cfg.WeCom.CorpID, "wecom-bridge-check")
	if err != nil {
		row.detail = err.Error()
		return row
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target+"?"+q.Encode(), nil)
	if err != nil {
		row.detail = err.Error()
		return row
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		why := err
		if errors.As(err, &ue) {
			why = ue.Err
		}
		if errors.As(err, &ue) && ue.Timeout() {
			row.detail = fmt.Sprintf("%s 在 %s 内没有应答（企业微信只等约 1 秒）：守护进程是否已启动、反向代理是否转发到 server.listen？/ %s did not answer within %s (WeCom waits about 1 s): is the daemon running, and does the reverse proxy forward to server.listen?",
				target, hc.Timeout, target, hc.Timeout)
			return row
		}
		hint := netHint(err)
		if hint == "" {
			hint = "检查 DNS、防火墙和反向代理 / check DNS, the firewall and the reverse proxy"
		}
		row.detail = fmt.Sprintf("%s 不可达 / not reachable (%v): %s；并确认守护进程已启动、域名已由本企业主体备案 / also start the daemon, and check the domain is 备案 by this company", target, why, hint)
		return row
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode == http.StatusOK && string(body) == "wecom-bridge-check" {
		row.status, row.detail = "OK", target+" 通过企业微信的 URL 验证 / answers WeCom's URL verification"
		return row
	}
	row.detail = fmt.Sprintf("%s 返回 HTTP %d：这个地址后面是别的程序，或 token / encoding_aes_key 与正在运行的守护进程不同？/ %s answered HTTP %d: is another program behind this URL, or do token/encoding_aes_key differ from the running daemon?", target, resp.StatusCode, target, resp.StatusCode)
	return row
}
