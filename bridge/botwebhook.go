package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
)

// The AI bot in webhook mode: WeCom POSTs encrypted JSON to
// {public_url}/wecom/{name} and takes the reply from the HTTP response.
// A new message is recorded, then answered with the first stream frame (the
// placeholder); WeCom then keeps POSTing stream refresh callbacks for that
// stream id, each answered with the whole text so far, from memory while
// this process streams it and from the store (the history) otherwise, until
// one is answered with finish=true.

// botWebhook serves one webhook-mode bot's callback URL.
func (b *Bridge) botWebhook(ctx *fasthttp.RequestCtx, bt *bot) {
	q := url.Values{}
	ctx.QueryArgs().VisitAll(func(k, v []byte) { q.Add(string(k), string(v)) })
	name := bt.cfg.Name
	switch {
	case ctx.IsGet():
		echo, err := bt.hook.VerifyURL(q)
		if err != nil {
			b.rejectBot(ctx, name, err, "url verification")
			return
		}
		b.log.Info("bot callback URL verified by WeCom", "bot", name)
		b.metrics.inc("wecom_bridge_callbacks_total", name, "verified")
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBody(echo)
	case ctx.IsPost():
		if err := b.checkTimestamp(q.Get("timestamp")); err != nil {
			b.rejectBot(ctx, name, err, "callback")
			return
		}
		m, err := bt.hook.Open(q, ctx.PostBody())
		if err != nil {
			b.rejectBot(ctx, name, err, "callback")
			return
		}
		streamID, content, finish, ok := b.botWebhookMessage(bt, m)
		if !ok {
			if streamID == "busy" {
				ctx.Error("", fasthttp.StatusServiceUnavailable) // not stored: let WeCom retry
				return
			}
			ctx.SetStatusCode(fasthttp.StatusOK) // nothing to say: an empty reply
			return
		}
		feedback := ""
		if bt.set.bcfg.Type == "dify" && m.MsgType != aibot.MsgStream {
			feedback = streamID
		}
		reply, err := bt.hook.StreamReply(streamID, content, finish, feedback, q.Get("timestamp"), q.Get("nonce"))
		if err != nil {
			b.log.Error("cannot seal the bot reply", "bot", name, "err", err)
			ctx.SetStatusCode(fasthttp.StatusOK)
			return
		}
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBody(reply)
	default:
		ctx.Error("method not allowed", fasthttp.StatusMethodNotAllowed)
	}
}

// botWebhookMessage handles one decrypted webhook callback and returns the
// stream frame to answer with.
func (b *Bridge) botWebhookMessage(bt *bot, m *aibot.Message) (streamID, content string, finish, ok bool) {
	name := bt.cfg.Name
	if m.MsgType == aibot.MsgStream && m.Stream != nil {
		b.metrics.inc("wecom_bridge_callbacks_total", name, "refresh")
		content, finish = b.webhookRefresh(bt, m.Stream.ID, m.From.UserID)
		return m.Stream.ID, content, finish, true
	}
	if m.MsgType == aibot.MsgEvent {
		if m.Event != nil && m.Event.EventType == aibot.EventFeedback {
			b.botFeedback(b.root, bt, m, b.log.With("bot", name))
		}
		// enter_chat in webhook mode wants a text reply, not a stream:
		// the welcome goes by the long connection only.
		return "", "", false, false
	}
	q, okq := bt.classify(m, b.config().Media)
	if !okq {
		b.metrics.inc("wecom_bridge_callbacks_total", name, "ignored")
		return "", "", false, false
	}
	q.ReqID, q.Received = m.ResponseURL, b.now()
	job, dup, err := b.store.Accept(q)
	switch {
	case err != nil:
		b.storageFailed(err)
		b.metrics.inc("wecom_bridge_callbacks_total", name, "error")
		b.log.Error("cannot record bot callback; WeCom will retry", "bot", name, "err", err)
		return "busy", "", false, false
	case dup:
		b.metrics.inc("wecom_bridge_callbacks_total", name, "duplicate")
		return "", "", false, false
	}
	b.metrics.inc("wecom_bridge_callbacks_total", name, "accepted")
	first := bt.set.texts.Thinking
	l := &botLive{created: job.Received, text: first}
	b.hookMu.Lock()
	b.hookLive[job.ID] = l
	b.hookMu.Unlock()
	b.fetchSoon(job)
	b.pool.submit(b.root, job)
	return botStreamID(job.ID), first, false, true
}

// webhookRefresh answers a stream refresh: the text so far while the
// answer streams here, the final answer from the history once it is done.
func (b *Bridge) webhookRefresh(bt *bot, streamID, user string) (string, bool) {
	id, ok := botJobID(streamID)
	if !ok {
		return "", true
	}
	b.hookMu.Lock()
	l := b.hookLive[id]
	b.hookMu.Unlock()
	if l != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.finished {
			b.hookMu.Lock()
			delete(b.hookLive, id)
			b.hookMu.Unlock()
		}
		return l.text, l.finished
	}
	// Not streaming here (a restart): the job, if still pending, or its
	// history entry.
	if j, err := b.store.Job(id); err == nil {
		if j.AnswerDone {
			return bubbleOf(j.Answer), true
		}
		return bt.set.texts.Thinking, false
	}
	if e, err := b.store.Entry(user, id); err == nil && e.Answer != "" {
		return bubbleOf(e.Answer), true
	}
	return bt.set.texts.Thinking, false
}

// bubbleOf is the part of an answer that fits one bubble.
func bubbleOf(answer string) string {
	if len(answer) <= botBubbleMax {
		return answer
	}
	return answer[:cutAt(answer, botBubbleMax)] + "\n\n（内容较长，后续部分见下一条消息。）"
}

// webhookLive returns the live bubble of a webhook-mode job, if this
// process has one, and a func that forgets it once WeCom has it all.
func (b *Bridge) webhookLive(bt *bot, j *kv.Job) (*botLive, func()) {
	b.hookMu.Lock()
	l := b.hookLive[j.ID]
	b.hookMu.Unlock()
	if l == nil {
		return nil, nil
	}
	return l, func() {
		// Kept until WeCom fetched the final text (webhookRefresh), or a
		// while after the stream window if it never does.
		time.AfterFunc(b.botWindow()+time.Minute, func() {
			b.hookMu.Lock()
			delete(b.hookLive, j.ID)
			b.hookMu.Unlock()
		})
	}
}

// respondURL posts a proactive markdown message to a webhook-mode bot's
// response_url.
func (b *Bridge) respondURL(ctx context.Context, target, text string) error {
	if target == "" {
		return fmt.Errorf("bridge: no response_url to continue on")
	}
	body, err := json.Marshal(map[string]any{"msgtype": "markdown", "markdown": map[string]string{"content": text}})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("bridge: response_url: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.wecomHC.Do(req)
	if err != nil {
		return fmt.Errorf("bridge: response_url: %w", err)
	}
	defer resp.Body.Close()
	var st struct {
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bridge: response_url: HTTP %d", resp.StatusCode)
	}
	if json.Unmarshal(data, &st) == nil && st.ErrCode != 0 {
		return fmt.Errorf("bridge: response_url: errcode %d: %s", st.ErrCode, st.ErrMsg)
	}
	return nil
}

// rejectBot answers a bad bot callback with a 4xx and logs it once.
func (b *Bridge) rejectBot(ctx *fasthttp.RequestCtx, name string, err error, what string) {
	status, reason := rejectStatus(err)
	b.log.Warn("rejected bot "+what, "bot", name, "reason", reason, "status", status, "remote", ctx.RemoteIP().String(), "err", err)
	b.metrics.inc("wecom_bridge_callbacks_total", name, reason)
	ctx.Error(fasthttp.StatusMessage(status), status)
}
