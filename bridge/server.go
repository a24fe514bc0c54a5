package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// newServer builds the fasthttp server with explicit limits and timeouts.
func (b *Bridge) newServer() *fasthttp.Server {
	cfg := b.config()
	b.metrics.gauge("wecom_bridge_queue_depth", "Jobs waiting for a worker.", func() float64 { return float64(b.pool.queued.Load()) })
	b.metrics.gauge("wecom_bridge_answers_in_flight", "Jobs being answered now.", func() float64 { return float64(b.pool.active.Load()) })
	return &fasthttp.Server{
		Handler:               b.route,
		Name:                  "",
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		ReadTimeout:           cfg.Server.ReadTimeout,
		WriteTimeout:          cfg.Server.WriteTimeout,
		IdleTimeout:           cfg.Server.IdleTimeout,
		// The largest legitimate body is a callback; the history page only
		// posts small forms.
		MaxRequestBodySize: cfg.Server.MaxBodyBytes,
		ReadBufferSize:     8 << 10,
		// Each connection may hold a body of up to max_body_bytes while a
		// slow client trickles it in (read_timeout bounds how long), so
		// the connection cap bounds that memory: 1024 × (64 KiB + 8 KiB)
		// is about 74 MB at worst. A callback is acknowledged in
		// milliseconds, so 1024 connections carry thousands a second; a
		// buffering reverse proxy in front removes slow clients entirely.
		Concurrency: maxConns,
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			status := fasthttp.StatusBadRequest
			if errors.Is(err, fasthttp.ErrBodyTooLarge) {
				status = fasthttp.StatusRequestEntityTooLarge
			}
			b.log.Warn("bad request", "status", status, "remote", ctx.RemoteIP().String(), "err", err)
			b.metrics.inc("wecom_bridge_callbacks_total", "-", "bad_request")
			ctx.Error(fasthttp.StatusMessage(status), status)
		},
		Logger:                        fasthttpLogger{b.log},
		DisablePreParseMultipartForm:  true,
		ReduceMemoryUsage:             false,
		StreamRequestBody:             false,
		DisableHeaderNamesNormalizing: false,
	}
}

// maxConns caps the connections served at once (see newServer).
const maxConns = 1024

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp", "msg", strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (b *Bridge) route(ctx *fasthttp.RequestCtx) {
	// Set last: ctx.Error resets the response headers.
	defer b.securityHeaders(ctx)
	path := ctx.Path()
	switch {
	case bytes.HasPrefix(path, []byte("/wecom/")):
		b.callback(ctx, string(path[len("/wecom/"):]))
	case string(path) == "/healthz":
		b.healthz(ctx)
	case string(path) == "/metrics" && b.config().Server.metrics():
		ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
		b.metrics.write(ctx)
		writeCommitMetrics(ctx, b.store.CommitStats())
		b.writeBotMetrics(ctx)
	case bytes.HasPrefix(path, []byte("/WW_verify_")):
		b.verifyFile(ctx, string(path[1:]))
	case b.web != nil && b.web.Handles(path):
		b.web.Serve(ctx)
	default:
		ctx.Error("not found", fasthttp.StatusNotFound)
	}
}

// securityHeaders go on every response: no MIME sniffing, and HSTS when
// the daemon is published over https.
func (b *Bridge) securityHeaders(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.Set("X-Content-Type-Options", "nosniff")
	if strings.HasPrefix(b.config().Server.PublicURL, "https://") {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
}

func (b *Bridge) healthz(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/plain; charset=utf-8")
	if rt := b.rt.Load(); len(rt.apps) == 0 && len(rt.bots) == 0 {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.WriteString("no apps or bots configured\n")
		return
	}
	if bad := b.botHealth(); len(bad) > 0 {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.WriteString(strings.Join(bad, "\n") + "\n")
		return
	}
	// The store's own view (its last commit failed) and the answer loop's
	// (a job is waiting for writes to work again): either is unhealthy,
	// whatever a tiny probe write might say.
	if err := b.store.WriteErr(); err != nil || b.writeFailing.Load() != 0 {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.WriteString("database writes failing (disk full or read-only?); accepted questions wait and are answered once writes work\n")
		b.log.Error("healthz: database writes failing", "err", err)
		return
	}
	if err := b.store.Ping(); err != nil {
		b.log.Error("healthz: database not writable", "err", err)
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.WriteString("database not writable\n")
		return
	}
	ctx.WriteString("ok\n")
}

func (b *Bridge) verifyFile(ctx *fasthttp.RequestCtx, name string) {
	content, ok := b.config().Server.VerifyFiles[name]
	if !ok {
		ctx.Error("not found", fasthttp.StatusNotFound)
		return
	}
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.WriteString(content)
}

// callback is the intake: verify, decrypt, persist, ack. It never waits on
// the LLM or WeCom.
func (b *Bridge) callback(ctx *fasthttp.RequestCtx, name string) {
	start := time.Now()
	a := b.app(name)
	if a == nil {
		if bt := b.rt.Load().bots[name]; bt != nil && bt.hook != nil {
			b.botWebhook(ctx, bt)
			return
		}
		b.metrics.inc("wecom_bridge_callbacks_total", "-", "unknown_app")
		ctx.Error("not found", fasthttp.StatusNotFound)
		return
	}
	args := ctx.QueryArgs()
	sig := string(args.Peek("msg_signature"))
	ts := string(args.Peek("timestamp"))
	nonce := string(args.Peek("nonce"))
	switch {
	case ctx.IsGet():
		echo, err := a.crypto.VerifyURL(sig, ts, nonce, string(args.Peek("echostr")))
		if err != nil {
			b.reject(ctx, a, err, "url verification")
			return
		}
		b.log.Info("callback URL verified by WeCom", "app", name)
		b.metrics.inc("wecom_bridge_callbacks_total", name, "verified")
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBody(echo)
	case ctx.IsPost():
		if err := b.checkTimestamp(ts); err != nil {
			b.reject(ctx, a, err, "callback")
			return
		}
		msg, err := a.crypto.Open(sig, ts, nonce, ctx.PostBody())
		if err != nil {
			b.reject(ctx, a, err, "callback")
			return
		}
		if msg.AgentID != 0 && msg.AgentID != a.cfg.AgentID {
			b.reject(ctx, a, errAgentMismatch, "callback")
			return
		}
		if !validSender(msg.FromUserName) {
			// Never storable, so never worth a retry: 4xx, not 503.
			b.reject(ctx, a, errBadUser, "callback")
			return
		}
		result := b.accept(a, msg)
		b.metrics.inc("wecom_bridge_callbacks_total", name, result)
		if result == "error" {
			// Not stored: let WeCom retry rather than lose the question.
			ctx.Error("", fasthttp.StatusServiceUnavailable)
			return
		}
		b.metrics.observe("wecom_bridge_ack_seconds", time.Since(start))
		ctx.SetStatusCode(fasthttp.StatusOK)
	default:
		ctx.Error("method not allowed", fasthttp.StatusMethodNotAllowed)
	}
}

// validSender reports whether a sender id can be a WeCom userid (or open
// userid): 1–128 bytes of printable UTF-8. WeCom's own are at most 64.
func validSender(s string) bool {
	if s == "" || len(s) > 128 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

var (
	errBadUser       = errors.New("bridge: the sender (FromUserName) is not a valid WeCom userid")
	errAgentMismatch = errors.New("bridge: the message's AgentID is not this app's agent_id")
	errStale         = errors.New("bridge: callback timestamp outside the accepted window (replay?)")
	errNoTimestamp   = errors.New("bridge: callback timestamp missing or not a number")
)

// checkTimestamp refuses replays of old callbacks: their signed timestamp is
// older than max_callback_age, whose dedup marks may already be pruned.
func (b *Bridge) checkTimestamp(ts string) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return errNoTimestamp
	}
	age := b.now().Sub(time.Unix(sec, 0))
	if age > b.config().WeCom.MaxCallbackAge || age < -time.Hour {
		return errStale
	}
	return nil
}

// reject answers a bad callback with a 4xx and logs it once with the reason.
func (b *Bridge) reject(ctx *fasthttp.RequestCtx, a *app, err error, what string) {
	status, reason := rejectStatus(err)
	attrs := []any{"app", a.cfg.Name, "reason", reason, "status", status, "remote", ctx.RemoteIP().String(), "err", err}
	if reason == "bad_signature" && what == "url verification" {
		attrs = append(attrs, "hint", "检查 apps.token 与 apps.encoding_aes_key 是否与企业微信后台「接收消息」设置一致 / check apps.token and apps.encoding_aes_key against the admin console")
	}
	if reason == "wrong_receiver" {
		attrs = append(attrs, "hint", "wecom.corp_id 与回调的企业ID不一致 / wecom.corp_id does not match the corp that sent the callback")
	}
	b.log.Warn("rejected "+what, attrs...)
	b.metrics.inc("wecom_bridge_callbacks_total", a.cfg.Name, reason)
	ctx.Error(fasthttp.StatusMessage(status), status)
}

// rejectStatus maps why a callback was refused to the HTTP status and the
// reason label: 403 for what is not WeCom's, 413 for too large, 400 for the
// rest; never 5xx, since a retry of it would fail the same way.
func rejectStatus(err error) (int, string) {
	status, reason := fasthttp.StatusBadRequest, "malformed"
	switch {
	case errors.Is(err, wecom.ErrInvalidSignature):
		status, reason = fasthttp.StatusForbidden, "bad_signature"
	case errors.Is(err, wecom.ErrReceiverMismatch):
		status, reason = fasthttp.StatusForbidden, "wrong_receiver"
	case errors.Is(err, errAgentMismatch):
		status, reason = fasthttp.StatusForbidden, "wrong_agent"
	case errors.Is(err, wecom.ErrTooLarge):
		status, reason = fasthttp.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, errStale), errors.Is(err, errNoTimestamp):
		status, reason = fasthttp.StatusForbidden, "stale"
	case errors.Is(err, errBadUser):
		reason = "bad_user"
	}
	return status, reason
}

// accept classifies a decrypted message and makes it durable. It returns the
// result label for metrics: "accepted", "duplicate", "ignored" or "error".
func (b *Bridge) accept(a *app, msg *wecom.Message) string {
	q, ok := classify(a, msg, b.config().Media)
	if !ok {
		return "ignored"
	}
	q.Received = b.now()
	job, dup, err := b.store.Accept(q)
	if err != nil {
		b.log.Error("cannot record callback; WeCom will retry", "app", a.cfg.Name, "err", err)
		return "error"
	}
	// Debug's arguments are boxed whether or not it logs: on the hot path
	// ask first.
	debug := b.log.Enabled(context.Background(), slog.LevelDebug)
	if dup {
		if debug {
			b.log.Debug("duplicate callback (WeCom retry)", "app", a.cfg.Name, "key", q.DedupKey)
		}
		return "duplicate"
	}
	if debug {
		b.log.Debug("question accepted", "app", a.cfg.Name, "user", q.User, "job", job.ID, "kind", q.Kind, "text", q.Text)
	}
	b.fetchSoon(job)
	b.pool.submit(b.root, job)
	return "accepted"
}

// classify turns a message into a job, or reports that nothing is to be done.
func classify(a *app, m *wecom.Message, media MediaConfig) (kv.Question, bool) {
	q := kv.Question{App: a.cfg.Name, User: m.FromUserName, DedupKey: m.DedupKey(), MsgType: m.MsgType}
	if m.CreateTime > 0 {
		// The message's own time, the same in every retry: the store
		// files its dedup mark by it (appending instead of rewriting).
		q.MsgTime = time.Unix(m.CreateTime, 0)
	}
	if q.User == "" {
		return q, false
	}
	switch m.MsgType {
	case "text":
		text := strings.TrimSpace(m.Content)
		if text == "" {
			return q, false
		}
		q.Text = text
		if command(text) != "" {
			q.Kind = kv.KindCommand
		} else {
			q.Kind = kv.KindQuestion
		}
	case "event":
		q.Event = m.Event
		if m.Event == "enter_agent" && a.cfg.Welcome != "" {
			q.Kind = kv.KindNotice
			return q, true
		}
		return q, false
	case "image", "voice", "video", "file":
		kind := m.MsgType
		if !media.allows(kind) || m.MediaID == "" {
			q.Kind = kv.KindNotice
			return q, true
		}
		// Fetched right after the ack (media/get), then asked about; a
		// picture alone waits for the text that usually follows.
		a := kv.Attachment{Kind: kind, MediaID: m.MediaID}
		if kind == "voice" {
			a.MIME = "audio/" + strings.ToLower(m.Format)
		}
		q.Kind, q.Attachments = kv.KindQuestion, []kv.Attachment{a}
	default: // location, link, and anything new
		q.Kind = kv.KindNotice
	}
	return q, true
}

// command recognises the chat commands.
func command(text string) string {
	switch strings.ToLower(strings.TrimSpace(text)) {
	case "/new", "新对话", "/reset", "新会话":
		return "new"
	case "/help", "帮助", "/?", "help":
		return "help"
	}
	return ""
}
