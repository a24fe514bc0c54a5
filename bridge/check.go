package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

// checkRow is one line of the check report.
type checkRow struct {
	app, step, status, detail string
}

// Check tests every app of cfg against WeCom and its backend and prints a
// table of what works and, for each failure, what to fix. It reports
// whether everything required passed.
func Check(ctx context.Context, cfg *Config, out io.Writer, log *slog.Logger) bool {
	hc := &http.Client{Timeout: 15 * time.Second}
	var rows []checkRow
	ok := true
	add := func(app, step string, err error, detail string) {
		status := "OK"
		if err != nil {
			status, ok = "FAIL", false
			detail = explain(err)
		}
		rows = append(rows, checkRow{app, step, status, detail})
	}
	rows = append(rows, checkRow{"-", "config", "OK", fmt.Sprintf("%d app(s), %d backend(s)", len(cfg.Apps), len(cfg.Backends))})
	for _, ac := range cfg.Apps {
		// The client makes one attempt per call, so a check answers quickly.
		cl, err := wecom.New(cfg.wecomConfig(ac, hc, log))
		if err != nil {
			add(ac.Name, "wecom client", err, "")
			continue
		}
		_, err = cl.Token(ctx)
		add(ac.Name, "gettoken", err, "corp_id and secret accepted")
		if err == nil {
			info, err := cl.Agent(ctx)
			detail := ""
			if err == nil {
				detail = fmt.Sprintf("应用「%s」, 可见范围: %d user(s), %d department(s), %d tag(s)", info.Name, len(info.AllowUsers), len(info.AllowParties), len(info.AllowTags))
				if info.Closed {
					err = errors.New("the app is disabled (应用已停用): enable it in 应用管理")
				} else if len(info.AllowUsers)+len(info.AllowParties)+len(info.AllowTags) == 0 {
					err = errors.New("nobody is in the app's 可见范围, so no one can receive its messages: add members in 应用管理 → 应用 → 可见范围")
				}
			}
			add(ac.Name, "agent/get (can send)", err, detail)
		}
		bc := cfg.Backends[ac.Backend]
		be, err := llm.New(bc, hc, log)
		if err != nil {
			add(ac.Name, "backend "+ac.Backend, err, "")
			continue
		}
		if ch, isChecker := be.(llm.Checker); isChecker {
			info, err := ch.Check(ctx)
			detail := ""
			if err == nil {
				detail = strings.TrimSpace(fmt.Sprintf("%s %s %s", info.Name, info.Mode, info.Model))
			}
			if err != nil {
				err = fmt.Errorf("%s [config: backends.%s]", explain(err), ac.Backend)
			}
			add(ac.Name, "backend "+ac.Backend+" ("+bc.Type+")", err, detail)
		}
		// Is this daemon reachable at the callback URL? Only a warning: the
		// check may run before the daemon is started.
		rows = append(rows, probeCallback(ctx, hc, cfg, ac))
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
	return err.Error()
}

// probeCallback signs a URL-verification request with the app's own token
// and sends it to the public callback URL, as WeCom would when the admin
// saves the 接收消息 settings.
func probeCallback(ctx context.Context, hc *http.Client, cfg *Config, ac AppConfig) checkRow {
	target := strings.TrimRight(cfg.Server.PublicURL, "/") + "/wecom/" + ac.Name
	row := checkRow{ac.Name, "callback URL", "WARN", ""}
	q, err := wecomtest.VerifyURLQuery(ac.Token.Value(), ac.EncodingAESKey.Value(), cfg.WeCom.CorpID, "wecom-bridge-check")
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
		if errors.As(err, &ue) {
			err = ue.Err
		}
		row.detail = fmt.Sprintf("%s not reachable (%v): start the daemon, and check DNS, the reverse proxy and that the domain is 备案 by this company", target, err)
		return row
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode == http.StatusOK && string(body) == "wecom-bridge-check" {
		row.status, row.detail = "OK", target+" answers WeCom's URL verification"
		return row
	}
	row.detail = fmt.Sprintf("%s answered HTTP %d: is another program behind this URL, or do token/encoding_aes_key differ from the running daemon?", target, resp.StatusCode)
	return row
}
