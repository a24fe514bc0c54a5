package bridge

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/wecom-bridge/wecom-bridge/bridge/plaintext"
	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// The self-built app channel: encrypted XML callbacks in (server.go), and
// the answer out as message/send pieces, each within WeCom's 2048 bytes and
// the member's send budget.

// app is one configured WeCom app with its clients.
type app struct {
	cfg     AppConfig
	crypto  *wecom.Crypto
	client  *wecom.Client
	backend llm.Backend
	bcfg    llm.Config
	texts   Texts
	wc      WeComConfig
	depts   *deptCache
	access  access
	set     answerSettings
}

func (a *app) settings() *answerSettings { return &a.set }

// allowed reports whether the user may use the app (allow_users,
// allow_departments).
func (a *app) allowed(ctx context.Context, user string) (bool, error) {
	return a.access.allows(ctx, user)
}

func (a *app) replier(b *Bridge, j *kv.Job, log *slog.Logger) replier {
	return &appReply{b: b, a: a, j: j, log: log}
}

// Piece sizes while streaming: the first piece goes early, later ones are
// bigger, so the user sees progress without a flood of bubbles.
var pieceThresholds = [...]int{60, 600, 1200}

const (
	// flushAfterQuiet sends a complete paragraph below the size threshold
	// when nothing has been sent for this long.
	flushAfterQuiet = 8 * time.Second
	// longRun is where a paragraph-less run (a long list) is cut at a line.
	longRun = 1600
)

// appReply delivers one job's reply in message/send pieces and records its
// progress.
//
// Exactly once, without swallowing repeats. Every message goes out with
// WeCom's duplicate check, which drops a request whose whole JSON equals
// one received within its duplicate_check_interval. Each message to a
// member gets its own number from a durable per-member counter, and the
// number picks the interval (dupInterval), so two messages with the same
// text still differ as requests, while a piece re-sent after a crash is the
// same request byte for byte (its number is saved with its segment before
// the first send) and is dropped by WeCom.
type appReply struct {
	b   *Bridge
	a   *app
	j   *kv.Job
	log *slog.Logger

	mu        sync.Mutex // serialises the pieces and the job's progress
	flushes   int        // segments sent in this run
	lastFlush time.Time
	sentAny   bool // a piece (not the notice) has been delivered in this run
}

func (d *appReply) resume(ctx context.Context) error {
	// A segment interrupted by a restart is finished first, exactly as it
	// was cut, so WeCom's duplicate check can drop a piece sent twice.
	if err := d.sendSegment(ctx); err != nil {
		return err
	}
	if d.j.AnswerDone {
		return d.offer(ctx, d.j.Answer, true)
	}
	return nil
}

func (d *appReply) progress(ctx context.Context, full string) error {
	return d.offer(ctx, full, false)
}

func (d *appReply) finish(ctx context.Context, final string, u kv.AnswerUpdate) error {
	// If the final text does not start with what was already delivered
	// (message_replace, or a resumed job whose new answer differs), say so
	// and deliver it whole.
	if err := d.reconcile(ctx, final); err != nil {
		return err
	}
	j := d.j
	j.Answer, j.AnswerDone = final, true
	if err := d.stageFinal(); err != nil {
		return err
	}
	if err := d.b.store.CompleteAnswer(u); err != nil {
		return stored(err)
	}
	if err := d.sendSegment(ctx); err != nil {
		return err
	}
	return d.offer(ctx, j.Answer, true)
}

func (d *appReply) cleanup(ctx context.Context) { d.recallNotice(ctx) }

// offer delivers what is ready of the answer text full: complete paragraphs
// past the delivered offset while streaming, everything when final.
func (d *appReply) offer(ctx context.Context, full string, final bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	j := d.j
	if wait, err := d.continues(ctx, full, final); wait || err != nil {
		return err
	}
	cut := len(full)
	if !final {
		if d.a.cfg.Delivery == "whole" {
			return nil
		}
		cut = d.cutPoint(full, j.Delivered)
	}
	if cut <= j.Delivered {
		return nil
	}
	return d.flush(ctx, full, cut)
}

// reconcile makes sure the final text continues what was delivered.
func (d *appReply) reconcile(ctx context.Context, final string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, err := d.continues(ctx, final, true)
	return err
}

// continues checks that full starts with what the user has already read.
// A stream that is still shorter than that (a resumed job catching up)
// reports wait; text that differs is handled by diverge. Call with d.mu held.
func (d *appReply) continues(ctx context.Context, full string, final bool) (wait bool, err error) {
	delivered := d.j.Answer[:d.j.Delivered]
	switch {
	case strings.HasPrefix(full, delivered):
		return false, nil
	case !final && strings.HasPrefix(delivered, full):
		return true, nil
	}
	return false, d.diverge(ctx)
}

// diverge handles an answer that no longer continues what the user has
// already read: it says so, then delivery starts again from the top.
func (d *appReply) diverge(ctx context.Context) error {
	d.log.Info("answer differs from what was already delivered; resending it whole")
	seq, err := d.b.dupSeq.take(d.j.App, d.j.User, 1)
	if err != nil {
		return stored(err)
	}
	if _, err := d.send(ctx, d.a.texts.Resend, "text", seq); err != nil {
		return err
	}
	d.j.Answer, d.j.Delivered = "", 0
	return stored(d.b.store.SaveJob(d.j))
}

// cutPoint finds where the next streamed piece should end, or returns from
// when nothing is ready. It cuts after a paragraph outside code fences once
// enough text has built up.
func (d *appReply) cutPoint(full string, from int) int {
	pending := full[from:]
	threshold := pieceThresholds[min(d.flushes, len(pieceThresholds)-1)]
	quiet := d.flushes > 0 && d.b.now().Sub(d.lastFlush) >= flushAfterQuiet
	para, line := -1, -1
	inFence := false
	prevTable := false
	for i := 0; i < len(pending); {
		nl := strings.IndexByte(pending[i:], '\n')
		if nl < 0 {
			break // the last line is still being written
		}
		lineText := pending[i : i+nl]
		end := i + nl + 1
		trimmed := strings.TrimSpace(lineText)
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			inFence = !inFence
		}
		isTable := strings.HasPrefix(trimmed, "|")
		if !inFence {
			if trimmed == "" && end > 1 {
				para = end
			} else if !isTable && !prevTable {
				line = end
			}
			if isTable {
				line = -1 // never cut a table in two
			}
		}
		prevTable = isTable
		i = end
	}
	switch {
	case para >= threshold || (para > 0 && quiet):
		return from + para
	case len(pending) >= longRun && line >= threshold:
		return from + line
	}
	return from
}

// flush records and sends the segment full[Delivered:cut].
func (d *appReply) flush(ctx context.Context, full string, cut int) error {
	staged, err := d.stage(full, cut)
	if err != nil || !staged {
		return err
	}
	if err := d.b.store.SaveJob(d.j); err != nil {
		return stored(err)
	}
	return d.sendSegmentLocked(ctx)
}

// stage cuts full[Delivered:cut] into the job's next segment, numbered for
// the duplicate check, without saving it. It reports whether there is
// anything to send.
func (d *appReply) stage(full string, cut int) (bool, error) {
	j := d.j
	pieces := wecom.Split(d.format(full[j.Delivered:cut]), wecom.MaxContentBytes)
	if len(pieces) == 0 {
		j.Answer = full[:cut]
		j.Delivered = cut
		return false, nil
	}
	seq, err := d.b.dupSeq.take(j.App, j.User, len(pieces))
	if err != nil {
		return false, stored(err)
	}
	j.Answer = full[:cut]
	j.Segment = &kv.Segment{RawEnd: cut, Pieces: pieces, Dup: seq}
	d.flushes++
	d.lastFlush = d.b.now()
	return true, nil
}

// stageFinal stages the rest of the finished answer (j.Answer) as the next
// segment without saving it, so that the caller records the answer and the
// segment in one write (CompleteAnswer) and then calls sendSegment. Under
// load this saves a write per answer.
func (d *appReply) stageFinal() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	j := d.j
	if j.Segment != nil || len(j.Answer) <= j.Delivered {
		return nil
	}
	_, err := d.stage(j.Answer, len(j.Answer))
	return err
}

// sendSegment finishes a segment left open by an earlier run.
func (d *appReply) sendSegment(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sendSegmentLocked(ctx)
}

func (d *appReply) sendSegmentLocked(ctx context.Context) error {
	j := d.j
	seg := j.Segment
	if seg == nil {
		return nil
	}
	if seg.Dup == 0 {
		// Saved by an older release, without numbers: number what is
		// left now.
		seq, err := d.b.dupSeq.take(j.App, j.User, len(seg.Pieces))
		if err != nil {
			return stored(err)
		}
		seg.Dup = seq
	}
	msgType := "text"
	if d.a.cfg.Format == "markdown" {
		msgType = "markdown"
	}
	for seg.Sent < len(seg.Pieces) {
		if _, err := d.send(ctx, seg.Pieces[seg.Sent], msgType, seg.Dup+uint64(seg.Sent)); err != nil {
			return err
		}
		if !d.sentAny {
			d.sentAny = true
			d.b.metrics.observe("wecom_bridge_first_message_seconds", d.b.now().Sub(j.Received))
		}
		seg.Sent++
		if seg.Sent == len(seg.Pieces) {
			j.Delivered = seg.RawEnd
			j.Segment = nil
			if j.AnswerDone && j.Delivered == len(j.Answer) {
				// The whole answer is delivered and FinishJob comes
				// next, so this progress is not saved: after a crash
				// before FinishJob the last piece goes again, and
				// WeCom's duplicate check drops it, as it does for a
				// crash between any send and its save.
				return nil
			}
		}
		if err := d.b.store.SaveJob(j); err != nil {
			return stored(err)
		}
	}
	return nil
}

// format renders raw answer text for the app's message format.
func (d *appReply) format(raw string) string {
	if d.j.Kind != kv.KindQuestion || d.j.Failed {
		return raw // fixed texts are written as plain text already
	}
	if d.a.cfg.Format == "markdown" {
		return plaintext.ToWeComMarkdown(raw)
	}
	return plaintext.FromMarkdown(raw)
}

var errUndeliverable = errors.New("bridge: WeCom refuses messages to this user")

// dupInterval is the duplicate_check_interval, in seconds, of the message
// numbered seq for a member. Consecutive numbers give distinct intervals,
// and a number's interval comes back only every base+spread messages: at
// WeCom's 30 messages a minute per member that takes at least
// 2·(base+spread) seconds, longer than any interval used, so no two
// different messages to a member are ever the same request within the
// window. base (duplicate_check_interval) is the shortest window: a piece
// re-sent after a crash within it is dropped.
func dupInterval(base time.Duration, seq uint64) int {
	b := max(int(base/time.Second), 60)
	const spread = 120
	return b + int(seq%uint64(b+spread))
}

// send delivers one message to the job's user, within the member's send
// budget, retrying what may succeed later for up to send_retry_for. seq is
// the message's duplicate-check number.
func (d *appReply) send(ctx context.Context, content, msgType string, seq uint64) (string, error) {
	deadline := d.b.now().Add(d.a.wc.SendRetryFor)
	for attempt := 0; ; attempt++ {
		id, err := d.sendAttempt(ctx, content, msgType, seq)
		if err == nil || errors.Is(err, errUndeliverable) || ctx.Err() != nil {
			return id, err
		}
		// What a code means is the wecom package's call: it says whether
		// the failure may heal and how long to wait.
		r := wecom.Classify(err)
		wait, retry := r.Backoff(attempt), r.Heal
		if r.Class == wecom.ClassRateLimited {
			wait = d.a.wc.RateLimitWait // wecom.rate_limit_wait, 60 s by default
		}
		var ae *wecom.APIError
		if errors.As(err, &ae) {
			d.log.Error("message/send failed", "errcode", ae.Code, "hint", ae.Hint(), "retry", retry)
		} else {
			d.log.Warn("message/send failed", "err", err, "retry", retry)
		}
		if !retry || d.b.now().Add(wait).After(deadline) {
			return "", err
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return "", err
		}
	}
}

// sendAttempt makes one message/send call, within the member's budget.
func (d *appReply) sendAttempt(ctx context.Context, content, msgType string, seq uint64) (string, error) {
	j, b := d.j, d.b
	key := laneKey(j.App, strings.ToLower(j.User)) // WeCom ids ignore case
	sl, err := b.budget.take(ctx, key)
	if err != nil {
		return "", err
	}
	res, err := d.a.client.Send(ctx, wecom.OutMessage{
		ToUser: j.User, MsgType: msgType, Content: content,
		EnableDuplicateCheck: true, DuplicateCheckInterval: time.Duration(dupInterval(d.a.wc.DuplicateCheckInterval, seq)) * time.Second,
	})
	b.noteSent(j.App, j.User, sl.done())
	var pe *wecom.PartialError
	switch {
	case errors.As(err, &pe):
		b.metrics.inc("wecom_bridge_sends_total", j.App, "invalid_user")
		d.log.Error("WeCom did not deliver to this user (not in the app's 可见范围, or no licence)",
			"invaliduser", pe.InvalidUser, "unlicenseduser", pe.UnlicensedUser)
		return "", errUndeliverable
	case err == nil:
		b.metrics.inc("wecom_bridge_sends_total", j.App, "ok")
		d.log.Debug("piece delivered", "bytes", len(content), "msgid", res.MsgID)
		return res.MsgID, nil
	}
	if ctx.Err() == nil {
		b.metrics.inc("wecom_bridge_sends_total", j.App, "error")
		b.noteErr("wecom", err)
	}
	return "", err
}

// thinking sends the "thinking" notice if no piece has gone out after
// thinking_after. The returned function stops the timer and waits for a
// notice being sent. It uses a timer rather than a waiting goroutine: with
// a thousand answers streaming at once, a parked goroutine each costs 8 MB
// of stacks. The notice is sent once, without retries and without holding
// the delivery lock, so that a slow or failing WeCom never holds up the
// answer behind it.
func (d *appReply) thinking(ctx context.Context) func() {
	after := d.a.cfg.ThinkingAfter
	if after <= 0 || d.j.NoticeMsgID != "" || d.j.Delivered > 0 {
		return func() {}
	}
	done := make(chan struct{})
	t := time.AfterFunc(after, func() {
		defer close(done)
		d.mu.Lock()
		busy := ctx.Err() != nil || d.sentAny || d.j.Delivered > 0 || d.j.Segment != nil
		d.mu.Unlock()
		if busy {
			return
		}
		seq, err := d.b.dupSeq.take(d.j.App, d.j.User, 1)
		if err != nil {
			d.log.Warn("cannot number the thinking notice", "err", err)
			return
		}
		id, err := d.sendAttempt(ctx, d.a.texts.Thinking, "text", seq)
		if err != nil {
			d.log.Warn("cannot send the thinking notice", "err", err)
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.j.NoticeMsgID = id
		if err := d.b.store.SaveJob(d.j); err != nil {
			d.log.Warn("cannot record the thinking notice", "err", err)
		}
	})
	return func() {
		if !t.Stop() {
			<-done // it fired: wait for the notice to be sent
		}
	}
}

// recallNotice withdraws the thinking notice once the answer is delivered
// (WeCom client only; the WeChat plugin keeps it).
func (d *appReply) recallNotice(ctx context.Context) {
	id := d.j.NoticeMsgID
	if id == "" || !d.a.cfg.recallThinking() {
		return
	}
	if err := d.a.client.Recall(ctx, id); err != nil {
		d.log.Warn("cannot recall the thinking notice", "err", err)
	}
}
