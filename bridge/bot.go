package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
)

// The AI bot (智能机器人) channel. Intake: callbacks arrive over the bot's
// long connection (or, in webhook mode, as encrypted JSON POSTs); each is
// recorded with Store.Accept (msgid is the dedup key) before anything else,
// and answered at once with a "thinking" frame on its req_id, because WeCom
// refuses a req_id that got no reply within 5 s. Delivery: the answer
// streams into that one bubble (the whole Markdown text so far in each
// frame, the next frame only after WeCom acked the previous one); what does
// not fit the bubble (20,480 bytes, or WeCom's 6-minute stream window), and
// whatever is left after a dropped connection or a restart, follows as
// proactive markdown messages (aibot_send_msg) to the chat.

const (
	// botBubbleMax leaves room under WeCom's 20,480 bytes for the note that
	// the answer continues below.
	botBubbleMax = aibot.MaxContentBytes - 512
	// defaultBotWindow is how long after the user's message we still
	// update the bubble: WeCom closes streams after about 6 minutes (846608).
	defaultBotWindow = 5*time.Minute + 30*time.Second
	// botKeepAlive is how often the placeholder is refreshed while the
	// answer has not started.
	botKeepAlive = 3 * time.Second
	// botSaveEvery bounds how often the bubble's progress is saved while
	// it streams.
	botSaveEvery = time.Second
)

// bot is one configured [[bots]] entry.
type bot struct {
	cfg    BotConfig
	set    answerSettings
	access access
	conn   *botConn       // websocket mode
	hook   *aibot.Webhook // webhook mode
}

func (bt *bot) settings() *answerSettings { return &bt.set }

func (bt *bot) allowed(ctx context.Context, user string) (bool, error) {
	return bt.access.allows(ctx, user)
}

// botConn is a bot's long connection; it outlives reloads that leave the
// bot's credentials alone.
type botConn struct {
	key    botKey
	name   string
	client *aibot.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	live map[uint64]*botLive // jobs whose req_id this process can still answer on
	// stream window and placeholder text, from the current config
	welcome string
}

type botKey struct{ botID, secret, url string }

// botLive is a job's bubble while this process can still update it.
type botLive struct {
	mu       sync.Mutex
	stream   *aibot.Stream // websocket mode
	created  time.Time
	started  bool // the answer has begun: stop the placeholder
	keeper   *time.Timer
	dots     int
	text     string // webhook mode: what refresh callbacks get
	finished bool   // webhook mode: the final text is in text
}

// botWindow is the bubble's update window (shortened by tests).
func (b *Bridge) botWindow() time.Duration {
	if w := b.botWindowNS.Load(); w > 0 {
		return time.Duration(w)
	}
	return defaultBotWindow
}

func botStreamID(id uint64) string { return "wb" + strconv.FormatUint(id, 10) }

func botJobID(streamID string) (uint64, bool) {
	if !strings.HasPrefix(streamID, "wb") {
		return 0, false
	}
	id, err := strconv.ParseUint(streamID[2:], 10, 64)
	return id, err == nil
}

// botConnFor returns the long connection for a bot, reusing the running
// one when the credentials did not change. New connections start when the
// bridge starts (or at once, on a reload after Start).
func (b *Bridge) botConnFor(bc BotConfig) (*botConn, error) {
	k := botKey{botID: bc.BotID, secret: bc.Secret.Value(), url: bc.WSURL}
	b.clientsMu.Lock()
	defer b.clientsMu.Unlock()
	if c := b.bots[k]; c != nil && c.name == bc.Name {
		return c, nil
	}
	c := &botConn{key: k, name: bc.Name, live: map[uint64]*botLive{}}
	cl, err := aibot.New(aibot.Config{Name: bc.Name, BotID: bc.BotID, Secret: bc.Secret.Value(), URL: bc.WSURL}, aibot.Deps{
		Log:        b.log.With("bot", bc.Name),
		Handler:    func(ctx context.Context, cb *aibot.Callback) { b.botCallback(ctx, c, cb) },
		HTTPClient: b.wecomHC,
		Now:        b.now,
	})
	if err != nil {
		return nil, fmt.Errorf("bots.%s: %w", bc.Name, err)
	}
	c.client = cl
	b.bots[k] = c
	return c, nil
}

// runBot keeps a bot's connection up until the bridge stops.
func (b *Bridge) runBot(c *botConn) {
	if c.done != nil {
		return
	}
	ctx, cancel := context.WithCancel(b.root)
	c.cancel, c.done = cancel, make(chan struct{})
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		defer close(c.done)
		for ctx.Err() == nil {
			err := c.client.Run(ctx)
			var ae *aibot.AuthError
			switch {
			case err == nil:
			case errors.As(err, &ae):
				b.log.Error("bot cannot subscribe; check bots."+c.name+".bot_id and bots."+c.name+".secret", "bot", c.name, "err", err)
			case errors.Is(err, aibot.ErrDisplaced):
				b.log.Warn("another connection took over this bot (a second wecom-bridge, or the same bot in another tool); not fighting for it", "bot", c.name)
			default:
				b.log.Warn("bot connection ended", "bot", c.name, "err", err)
			}
			if sleepCtx(ctx, 30*time.Second) != nil {
				return
			}
		}
	}()
}

// stopBots ends the bot connections that the current config no longer uses.
func (b *Bridge) pruneBots(used map[botKey]bool) {
	for k, c := range b.bots {
		if !used[k] {
			if c.cancel != nil {
				c.cancel()
			}
			delete(b.bots, k)
		}
	}
}

// botCallback is the long-connection intake.
func (b *Bridge) botCallback(ctx context.Context, c *botConn, cb *aibot.Callback) {
	bt, _ := b.endpoint(c.name).(*bot)
	if bt == nil || cb.Message == nil {
		return
	}
	m := cb.Message
	log := b.log.With("bot", c.name)
	if m.MsgType == aibot.MsgEvent && m.Event != nil {
		b.botEvent(ctx, bt, c, cb, log)
		return
	}
	q, ok := bt.classify(m, b.config().Media)
	if !ok {
		b.metrics.inc("wecom_bridge_callbacks_total", c.name, "ignored")
		return
	}
	q.ReqID, q.Received = cb.ReqID, b.now()
	job, dup, err := b.acceptRetrying(ctx, q)
	switch {
	case err != nil:
		// The long connection has no retry: say so rather than lose it
		// without a word.
		b.metrics.inc("wecom_bridge_callbacks_total", c.name, "error")
		log.Error("cannot record a bot message; the user is asked to send it again", "err", err)
		rctx, cancel := context.WithTimeout(ctx, 4*time.Second)
		_ = c.client.RespondStream(rctx, cb.ReqID, "err-"+m.MsgID, "抱歉，系统暂时繁忙，请稍后重新发送这条消息。", true, "")
		cancel()
		return
	case dup:
		b.metrics.inc("wecom_bridge_callbacks_total", c.name, "duplicate")
		log.Debug("duplicate bot callback", "msgid", m.MsgID)
		return
	}
	b.metrics.inc("wecom_bridge_callbacks_total", c.name, "accepted")
	log.Debug("bot question accepted", "user", q.User, "job", job.ID, "kind", q.Kind, "text", q.Text)
	c.hold(b, bt, job)
	b.fetchSoon(job)
	b.pool.submit(b.root, job)
}

// acceptRetrying records a question, retrying a failing store for a few
// seconds (the long connection cannot ask WeCom to resend).
func (b *Bridge) acceptRetrying(ctx context.Context, q kv.Question) (*kv.Job, bool, error) {
	var err error
	for try := 0; try < 6; try++ {
		var job *kv.Job
		var dup bool
		if job, dup, err = b.store.Accept(q); err == nil {
			return job, dup, nil
		}
		b.storageFailed(err)
		if sleepCtx(ctx, retryWait(try, time.Second)) != nil {
			break
		}
	}
	return nil, false, err
}

// botEvent handles enter_chat (the welcome, within WeCom's 5 s) and
// feedback_event.
func (b *Bridge) botEvent(ctx context.Context, bt *bot, c *botConn, cb *aibot.Callback, log *slog.Logger) {
	m := cb.Message
	switch m.Event.EventType {
	case aibot.EventEnterChat:
		if bt.cfg.Welcome == "" {
			return
		}
		if _, dup, err := b.store.Accept(kv.Question{App: bt.cfg.Name, User: m.From.UserID, DedupKey: "ev:" + m.MsgID}); err != nil || dup {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 4*time.Second)
		defer cancel()
		if err := c.client.RespondWelcome(rctx, cb.ReqID, bt.cfg.Welcome); err != nil {
			log.Warn("cannot send the welcome", "err", err)
		}
		b.metrics.inc("wecom_bridge_callbacks_total", bt.cfg.Name, "welcome")
	case aibot.EventFeedback:
		b.botFeedback(ctx, bt, m, log)
	}
}

// botFeedback turns a 👍/👎 on an answer into Dify message feedback and
// records it in the history.
func (b *Bridge) botFeedback(ctx context.Context, bt *bot, m *aibot.Message, log *slog.Logger) {
	fb := m.Event.Feedback
	if fb == nil {
		return
	}
	id, ok := botJobID(fb.ID)
	if !ok {
		return
	}
	rating := ""
	switch fb.Type {
	case 1:
		rating = "like"
	case 2:
		rating = "dislike"
	}
	user := m.From.UserID
	e, err := b.store.Entry(user, id)
	if err != nil {
		log.Info("feedback on an answer not in the history", "job", id, "err", err)
		return
	}
	if err := b.store.SetEntryFeedback(user, id, rating, fb.Content); err != nil {
		log.Warn("cannot record feedback", "err", err)
	}
	fbk, ok := bt.set.backend.(llm.Feedbacker)
	if !ok || e.MessageID == "" {
		return
	}
	// The answer belongs to the Dify user the question was asked as: the
	// conversation's owner (the group, with group_memory = "group").
	owner := user
	if m.ChatType == aibot.ChatGroup && m.ChatID != "" && bt.cfg.GroupMemory == GroupMemoryGroup {
		owner = groupOwner(m.ChatID)
	}
	if err := fbk.Feedback(ctx, llm.FeedbackRequest{MessageID: e.MessageID, App: bt.cfg.Name, User: owner, Rating: rating, Content: fb.Content}); err != nil {
		log.Warn("cannot send feedback to the backend", "err", err)
	}
}

// classify turns a bot message into a question.
func (bt *bot) classify(m *aibot.Message, media MediaConfig) (kv.Question, bool) {
	q := kv.Question{App: bt.cfg.Name, User: m.From.UserID, DedupKey: "msg:" + m.MsgID, MsgType: m.MsgType}
	if m.CreateTime > 0 {
		q.MsgTime = time.Unix(m.CreateTime, 0)
	}
	if q.User == "" || m.MsgID == "" || !validSender(q.User) {
		return q, false
	}
	if m.ChatType == aibot.ChatGroup {
		q.Chat = m.ChatID
		if bt.cfg.GroupMemory == GroupMemoryGroup && m.ChatID != "" {
			q.ConvOwner = groupOwner(m.ChatID)
		}
	}
	switch m.MsgType {
	case aibot.MsgText, aibot.MsgVoice, aibot.MsgMixed:
		text := strings.TrimSpace(m.Question())
		if m.ChatType == aibot.ChatGroup {
			text = stripMention(text)
		}
		if m.MsgType == aibot.MsgMixed && m.Mixed != nil && media.allows("image") {
			for _, it := range m.Mixed.Items {
				if it.Image != nil && it.Image.URL != "" {
					q.Attachments = append(q.Attachments, kv.Attachment{Kind: "image", URL: it.Image.URL, AESKey: it.Image.AESKey})
				}
			}
		}
		if text == "" && len(q.Attachments) == 0 {
			return q, false
		}
		if command(text) != "" && len(q.Attachments) == 0 {
			q.Kind, q.Text = kv.KindCommand, text
			return q, true
		}
		if qt := quoted(m.Quote); qt != "" {
			text = "（引用的消息：" + qt + "）\n\n" + text
		}
		q.Kind, q.Text = kv.KindQuestion, text
	case aibot.MsgImage, aibot.MsgFile, aibot.MsgVideo:
		kind := map[string]string{aibot.MsgImage: "image", aibot.MsgFile: "file", aibot.MsgVideo: "video"}[m.MsgType]
		md := map[string]*aibot.Media{aibot.MsgImage: m.Image, aibot.MsgFile: m.File, aibot.MsgVideo: m.Video}[m.MsgType]
		if !media.allows(kind) || md == nil || md.URL == "" {
			q.Kind = kv.KindNotice
			return q, true
		}
		// The URL is valid for five minutes: fetched right after intake.
		q.Kind = kv.KindQuestion
		q.Attachments = []kv.Attachment{{Kind: kind, URL: md.URL, AESKey: md.AESKey}}
	default: // anything new
		q.Kind = kv.KindNotice
	}
	return q, true
}

// groupOwner is the conversation owner of a group that shares one
// conversation (group_memory = "group").
func groupOwner(chatID string) string { return "群:" + chatID }

// stripMention removes the leading @bot mention of a group message.
func stripMention(s string) string {
	if !strings.HasPrefix(s, "@") {
		return s
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return r == ' ' || r == '\u3000' || r == '\n' || r == '\t' }); i > 0 {
		return strings.TrimSpace(s[i:])
	}
	return ""
}

// quoted is the text of a quoted message, shortened.
func quoted(q *aibot.Quote) string {
	if q == nil {
		return ""
	}
	var t string
	switch {
	case q.Text != nil:
		t = q.Text.Content
	case q.Voice != nil:
		t = q.Voice.Content
	case q.Mixed != nil:
		var parts []string
		for _, it := range q.Mixed.Items {
			if it.Text != nil {
				parts = append(parts, it.Text.Content)
			}
		}
		t = strings.Join(parts, "\n")
	}
	t = strings.TrimSpace(t)
	if len(t) > 1500 {
		t = t[:runeStart(t, 1500)] + "…"
	}
	return t
}

// runeStart backs i off to the start of a UTF-8 character.
func runeStart(s string, i int) int {
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return i
}

// hold answers a new job's req_id at once with the placeholder (WeCom
// refuses a req_id not answered within 5 s) and refreshes it until the
// answer begins. Queued questions of a busy user are held the same way.
func (c *botConn) hold(b *Bridge, bt *bot, j *kv.Job) {
	feedback := ""
	if bt.set.bcfg.Type == llm.TypeDify && j.Kind == kv.KindQuestion {
		feedback = botStreamID(j.ID)
	}
	l := &botLive{created: j.Received}
	l.stream = c.client.NewStream(b.root, j.ReqID, botStreamID(j.ID), feedback)
	c.mu.Lock()
	c.live[j.ID] = l
	c.mu.Unlock()
	thinking := bt.set.texts.Thinking
	if len(j.Attachments) > 0 && strings.TrimSpace(j.Text) == "" && j.Attachments[0].Kind != "voice" {
		// Held for the question that usually follows (media.hold).
		thinking = "已收到，请接着发送你的问题；没有的话我稍后直接看图回答。"
	}
	_ = l.stream.Update(thinking)
	var tick func()
	tick = func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.started || l.stream.Err() != nil || b.now().Sub(l.created) > b.botWindow() {
			return
		}
		l.dots = (l.dots + 1) % 3
		_ = l.stream.Update(thinking + strings.Repeat(".", l.dots+1))
		l.keeper = time.AfterFunc(botKeepAlive, tick)
	}
	l.mu.Lock()
	l.keeper = time.AfterFunc(botKeepAlive, tick)
	l.mu.Unlock()
}

// take removes and returns a job's live bubble, if this process has one.
func (c *botConn) take(id uint64) *botLive {
	l := c.remove(id)
	if l != nil {
		l.close()
	}
	return l
}

// remove forgets a job's live bubble without closing it.
func (c *botConn) remove(id uint64) *botLive {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.live[id]
	delete(c.live, id)
	return l
}

// quiet stops the placeholder's refreshes.
func (l *botLive) quiet() {
	l.mu.Lock()
	l.started = true
	if l.keeper != nil {
		l.keeper.Stop()
	}
	l.mu.Unlock()
}

// closeWith finishes a bubble with text, if it is still open.
func (l *botLive) closeWith(text string) {
	l.quiet()
	if l.stream == nil {
		l.mu.Lock()
		l.text, l.finished = text, true
		l.mu.Unlock()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	_ = l.stream.Finish(ctx, text)
}

// close ends a bubble that was never finished (its answer went by
// proactive messages): its stream goroutine stops, and WeCom stops
// waiting for the req_id.
func (l *botLive) close() {
	l.quiet()
	if l.stream == nil {
		return
	}
	select {
	case <-l.stream.Done():
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	text := l.stream.Shown()
	if text == "" {
		text = "（回答见下方消息。）"
	}
	_ = l.stream.Finish(ctx, text) // refused past the window: the stream ends either way
}

// sweep closes the bubbles of jobs that ended without cleanup (a job given
// up, or finished elsewhere) once their window is over.
func (c *botConn) sweep(now time.Time, window time.Duration) {
	c.mu.Lock()
	var old []*botLive
	for id, l := range c.live {
		if now.Sub(l.created) > window+time.Minute {
			old = append(old, l)
			delete(c.live, id)
		}
	}
	c.mu.Unlock()
	for _, l := range old {
		l.close()
	}
}

func (bt *bot) replier(b *Bridge, j *kv.Job, log *slog.Logger) replier {
	r := &botReply{b: b, bt: bt, j: j, log: log}
	if bt.conn != nil {
		c := bt.conn
		c.mu.Lock()
		r.live = c.live[j.ID]
		c.mu.Unlock()
		r.release = func() { c.take(j.ID) }
	}
	if bt.hook != nil {
		r.live, r.release = b.webhookLive(bt, j)
	}
	return r
}

// botReply delivers one job's answer in its bubble, then by proactive
// messages. Job.Delivered is how much of Job.Answer the user has seen,
// saved as frames are acked.
type botReply struct {
	b       *Bridge
	bt      *bot
	j       *kv.Job
	log     *slog.Logger
	live    *botLive // nil: the req_id is gone; deliver proactively
	release func()
	over    bool // the answer outgrew the bubble or its window

	// While the answer streams, each acked frame is saved as the job's
	// progress (acked), from the Stream's goroutine; mu guards the job
	// against the worker meanwhile, and attached says whether the answer
	// loop is streaming (between thinking and its stop).
	mu       sync.Mutex
	attached bool
	full     string // the text last given to the bubble
}

// open reports whether the bubble can still take frames: this process
// has its req_id, WeCom has not refused it, and its window is not over.
func (r *botReply) open() bool {
	l := r.live
	if l == nil {
		return false
	}
	if l.stream != nil && l.stream.Err() != nil {
		return false
	}
	return r.b.now().Sub(l.created) < r.b.botWindow()
}

// usable reports whether the bubble can still take streamed updates.
func (r *botReply) usable() bool { return !r.over && r.open() }

func (r *botReply) begin() { r.live.quiet() }

func (r *botReply) resume(ctx context.Context) error {
	if r.j.AnswerDone {
		return r.deliver(ctx)
	}
	return nil
}

func (r *botReply) progress(ctx context.Context, full string) error {
	if !r.usable() {
		return nil // delivered whole at the end
	}
	if len(full) > botBubbleMax {
		r.over = true
		return nil
	}
	r.begin()
	r.mu.Lock()
	r.full = full
	r.mu.Unlock()
	if r.live.stream != nil {
		if err := r.live.stream.Update(full); err != nil {
			r.log.Info("bubble closed while streaming; the rest follows as messages", "err", err)
		}
		return nil
	}
	r.live.mu.Lock()
	r.live.text = full
	r.live.mu.Unlock()
	return nil
}

// acked records a frame WeCom acked while the answer streams: as for the
// app channel, Job.Answer then holds what the user has read, so that after
// a crash the answer is asked again and continues after it (or says the
// new answer differs) instead of repeating it.
func (r *botReply) acked(content string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.j
	if !r.attached || content == "" || len(content) <= j.Delivered || !strings.HasPrefix(r.full, content) {
		return
	}
	j.Answer, j.Delivered = content, len(content)
	if err := r.b.store.SaveJob(j); err != nil {
		r.log.Warn("cannot record the bubble's progress", "err", err)
	}
}

// shown is how much of the answer text the bubble shows for sure.
func (r *botReply) shown(answer string) int {
	if r.live == nil {
		return 0
	}
	if r.live.stream == nil {
		return 0 // webhook: the user sees what WeCom fetched; counted at finish
	}
	st := r.live.stream
	s := st.Shown()
	if err := st.Err(); errors.Is(err, aibot.ErrConnectionLost) || errors.Is(err, aibot.ErrAckTimeout) {
		// The ack of the last frame was lost with the connection: WeCom
		// most likely showed it, so it is not sent again.
		s = st.Sent()
	}
	if s != "" && strings.HasPrefix(answer, s) {
		return len(s)
	}
	return 0
}

// thinking attaches the progress recording for one LLM stream (the
// placeholder itself was started at intake); its stop detaches it, so that
// the worker owns the job again.
func (r *botReply) thinking(context.Context) func() {
	if r.live == nil || r.live.stream == nil {
		return func() {}
	}
	r.mu.Lock()
	r.attached = true
	r.mu.Unlock()
	r.live.stream.OnAck(r.acked)
	return func() {
		r.live.stream.OnAck(nil)
		r.mu.Lock()
		r.attached = false
		r.mu.Unlock()
	}
}

func (r *botReply) cleanup(context.Context) {
	if r.release != nil {
		r.release()
	}
}

func (r *botReply) finish(ctx context.Context, final string, u kv.AnswerUpdate) error {
	j := r.j
	if j.Delivered > 0 && !strings.HasPrefix(final, j.Answer[:j.Delivered]) {
		// A resumed job whose new answer differs from what was shown.
		if err := r.proactive(ctx, r.bt.set.texts.Resend); err != nil {
			return err
		}
		j.Delivered = 0
	}
	j.Answer, j.AnswerDone = final, true
	if err := r.b.store.CompleteAnswer(u); err != nil {
		return stored(err)
	}
	return r.deliver(ctx)
}

// deliver shows the rest of the finished answer: it finishes the bubble if
// it can, then sends what is left as proactive messages, saving progress
// after each.
func (r *botReply) deliver(ctx context.Context) error {
	j := r.j
	final := j.Answer
	if n := r.shown(final); n > j.Delivered {
		j.Delivered = n // shown in this process, maybe not saved yet
	}
	if r.open() && j.Delivered == r.shown(final) {
		r.begin()
		head, note := final, ""
		if len(final) > botBubbleMax {
			head = final[:cutAt(final, botBubbleMax)]
			note = "\n\n（内容较长，后续部分见下一条消息。）"
		}
		if r.live.stream != nil {
			err := r.live.stream.Finish(ctx, head+note)
			if err == nil {
				j.Delivered = len(head)
			} else {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.log.Info("cannot finish the bubble; the rest follows as messages", "err", err)
				j.Delivered = max(j.Delivered, r.shown(final))
			}
		} else {
			r.live.mu.Lock()
			r.live.text, r.live.finished = head+note, true
			r.live.mu.Unlock()
			j.Delivered = len(head)
		}
		if j.Delivered < len(final) {
			if err := r.b.store.SaveJob(j); err != nil {
				return stored(err)
			}
		}
	}
	for j.Delivered < len(final) {
		rest := final[j.Delivered:]
		cut := cutAt(rest, aibot.MaxContentBytes)
		if piece := strings.TrimSpace(rest[:cut]); piece != "" {
			if err := r.proactive(ctx, piece); err != nil {
				return err
			}
		}
		j.Delivered += cut
		if j.Delivered < len(final) {
			if err := r.b.store.SaveJob(j); err != nil {
				return stored(err)
			}
		}
	}
	return nil
}

// proactive sends one markdown message to the job's chat, retrying what
// may heal for up to send_retry_for.
func (r *botReply) proactive(ctx context.Context, text string) error {
	chat := r.j.Chat
	if chat == "" {
		chat = r.j.User
	}
	deadline := r.b.now().Add(r.b.config().WeCom.SendRetryFor)
	for try := 0; ; try++ {
		var err error
		switch {
		case r.bt.conn != nil:
			if err = r.bt.conn.client.WaitOnline(ctx); err == nil {
				err = r.bt.conn.client.SendMarkdown(ctx, chat, text)
			}
		default:
			err = r.b.respondURL(ctx, r.j.ReqID, text)
		}
		if err == nil {
			r.b.metrics.inc("wecom_bridge_sends_total", r.j.App, "ok")
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.b.metrics.inc("wecom_bridge_sends_total", r.j.App, "error")
		r.log.Warn("proactive bot message failed", "err", err, "try", try)
		wait := retryWait(try, 30*time.Second)
		if r.b.now().Add(wait).After(deadline) {
			return fmt.Errorf("bridge: bot message not delivered: %w", err)
		}
		if sleepCtx(ctx, wait) != nil {
			return ctx.Err()
		}
	}
}

// cutAt returns where to cut s so that s[:cut] is at most max bytes:
// after a paragraph, else a line, else a sentence, else a character.
func cutAt(s string, max int) int {
	if len(s) <= max {
		return len(s)
	}
	w := s[:runeStart(s, max)]
	for _, sep := range []string{"\n\n", "\n", "。", ". ", " "} {
		if i := strings.LastIndex(w, sep); i > len(w)/2 {
			return i + len(sep)
		}
	}
	return len(w)
}

// writeBotMetrics adds the bots' connection counters to /metrics.
func (b *Bridge) writeBotMetrics(w io.Writer) {
	b.clientsMu.Lock()
	conns := make([]*botConn, 0, len(b.bots))
	for _, c := range b.bots {
		conns = append(conns, c)
	}
	b.clientsMu.Unlock()
	if len(conns) == 0 {
		return
	}
	type row struct {
		name, help string
		val        func(aibot.Stats) int64
	}
	rows := []row{
		{"wecom_bridge_bot_online", "1 when the bot's long connection is subscribed.", func(s aibot.Stats) int64 {
			if s.State == aibot.StateOnline {
				return 1
			}
			return 0
		}},
		{"wecom_bridge_bot_reconnects_total", "Reconnections of the bot's long connection.", func(s aibot.Stats) int64 { return s.Reconnects }},
		{"wecom_bridge_bot_auth_failures_total", "Refused subscriptions (wrong bot_id or secret).", func(s aibot.Stats) int64 { return s.AuthFailures }},
		{"wecom_bridge_bot_frames_in_total", "Frames read from WeCom.", func(s aibot.Stats) int64 { return s.FramesIn }},
		{"wecom_bridge_bot_frames_out_total", "Frames written to WeCom.", func(s aibot.Stats) int64 { return s.FramesOut }},
		{"wecom_bridge_bot_acks_total", "Reply frames acked by WeCom.", func(s aibot.Stats) int64 { return s.Acks }},
		{"wecom_bridge_bot_ack_errors_total", "Reply frames refused or not acked in time.", func(s aibot.Stats) int64 { return s.AckErrors + s.AckTimeouts }},
		{"wecom_bridge_bot_errors_total", "Connection errors and unparsable frames.", func(s aibot.Stats) int64 { return s.Errors }},
	}
	stats := make([]aibot.Stats, len(conns))
	for i, c := range conns {
		stats[i] = c.client.Stats()
	}
	for _, rw := range rows {
		kind := "counter"
		if rw.name == "wecom_bridge_bot_online" {
			kind = "gauge"
		}
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", rw.name, rw.help, rw.name, kind)
		for i, c := range conns {
			fmt.Fprintf(w, "%s{bot=%q} %d\n", rw.name, c.name, rw.val(stats[i]))
		}
	}
}

// botHealth reports bots whose connection is down for a reason an operator
// must fix (refused, or taken over by another process).
func (b *Bridge) botHealth() []string {
	b.clientsMu.Lock()
	defer b.clientsMu.Unlock()
	var bad []string
	for _, c := range b.bots {
		switch c.client.State() {
		case aibot.StateAuthFailed:
			bad = append(bad, "bot "+c.name+" cannot subscribe: check bots."+c.name+".bot_id and secret")
		case aibot.StateDisplaced:
			bad = append(bad, "bot "+c.name+" was taken over by another connection")
		}
	}
	return bad
}

var _ = wecom.MaxContentBytes
