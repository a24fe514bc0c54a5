package bridge

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/wecom-bridge/wecom-bridge/bridge/plaintext"
	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// Piece sizes while streaming: the first piece goes early, later ones are
// bigger, so the user sees progress without a flood of bubbles.
var pieceThresholds = []int{DefaultFirstPieceBytes, DefaultPieceBytes, 1200}

const (
	// flushAfterQuiet sends a complete paragraph below the size threshold
	// when nothing has been sent for this long.
	flushAfterQuiet = 8 * time.Second
	// longRun is where a paragraph-less run (a long list) is cut at a line.
	longRun = 1600
)

// offer delivers what is ready of the answer text full: complete paragraphs
// past the delivered offset while streaming, everything when final.
func (d *delivery) offer(ctx context.Context, full string, final bool) error {
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
func (d *delivery) reconcile(ctx context.Context, final string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, err := d.continues(ctx, final, true)
	return err
}

// continues checks that full starts with what the user has already read.
// A stream that is still shorter than that (a resumed job catching up)
// reports wait; text that differs is handled by diverge. Call with d.mu held.
func (d *delivery) continues(ctx context.Context, full string, final bool) (wait bool, err error) {
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
func (d *delivery) diverge(ctx context.Context) error {
	d.log.Info("answer differs from what was already delivered; resending it whole")
	if _, err := d.send(ctx, d.a.texts.Resend, false, "text"); err != nil {
		return err
	}
	d.j.Answer, d.j.Delivered = "", 0
	return d.b.store.SaveJob(d.j)
}

// cutPoint finds where the next streamed piece should end, or returns from
// when nothing is ready. It cuts after a paragraph outside code fences once
// enough text has built up.
func (d *delivery) cutPoint(full string, from int) int {
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
func (d *delivery) flush(ctx context.Context, full string, cut int) error {
	if !d.stage(full, cut) {
		return nil
	}
	if err := d.b.store.SaveJob(d.j); err != nil {
		return err
	}
	return d.sendSegmentLocked(ctx)
}

// stage cuts full[Delivered:cut] into the job's next segment without
// saving it. It reports whether there is anything to send.
func (d *delivery) stage(full string, cut int) bool {
	j := d.j
	pieces := wecom.Split(d.format(full[j.Delivered:cut]), wecom.MaxContentBytes)
	j.Answer = full[:cut]
	if len(pieces) == 0 {
		j.Delivered = cut
		return false
	}
	j.Segment = &kv.Segment{RawEnd: cut, Pieces: pieces}
	d.flushes++
	d.lastFlush = d.b.now()
	return true
}

// stageFinal stages the rest of the finished answer (j.Answer) as the next
// segment without saving it, so that the caller records the answer and the
// segment in one write (CompleteAnswer) and then calls sendSegment. Under
// load this saves a write per answer.
func (d *delivery) stageFinal() {
	d.mu.Lock()
	defer d.mu.Unlock()
	j := d.j
	if j.Segment != nil || len(j.Answer) <= j.Delivered {
		return
	}
	d.stage(j.Answer, len(j.Answer))
}

// sendSegment finishes a segment left open by an earlier run.
func (d *delivery) sendSegment(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sendSegmentLocked(ctx)
}

func (d *delivery) sendSegmentLocked(ctx context.Context) error {
	j := d.j
	seg := j.Segment
	if seg == nil {
		return nil
	}
	msgType := "text"
	if d.a.cfg.Format == "markdown" {
		msgType = "markdown"
	}
	// LLM answers are protected by WeCom's duplicate check (a piece re-sent
	// after a crash is dropped); fixed texts are not, since a user may
	// legitimately get the same one twice within the window.
	dup := j.Kind == kv.KindQuestion && !j.Failed
	for seg.Sent < len(seg.Pieces) {
		if _, err := d.send(ctx, seg.Pieces[seg.Sent], dup, msgType); err != nil {
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
			if dup && j.AnswerDone && j.Delivered == len(j.Answer) {
				// The whole answer is delivered and FinishJob comes
				// next, so this progress is not saved: after a crash
				// before FinishJob the last piece goes again, and
				// WeCom's duplicate check drops it, as it does for a
				// crash between any send and its save.
				return nil
			}
		}
		if err := d.b.store.SaveJob(j); err != nil {
			return err
		}
	}
	return nil
}

// format renders raw answer text for the app's message format.
func (d *delivery) format(raw string) string {
	if d.j.Kind != kv.KindQuestion {
		return raw // fixed texts are written as plain text already
	}
	if d.a.cfg.Format == "markdown" {
		return plaintext.ToWeComMarkdown(raw)
	}
	return plaintext.FromMarkdown(raw)
}

var errUndeliverable = errors.New("bridge: WeCom refuses messages to this user")

// send delivers one message to the job's user, within the member's send
// budget, retrying what may succeed later for up to send_retry_for.
func (d *delivery) send(ctx context.Context, content string, dupCheck bool, msgType string) (string, error) {
	j, a, b := d.j, d.a, d.b
	deadline := b.now().Add(a.wc.SendRetryFor)
	for attempt := 0; ; attempt++ {
		if err := b.budget.take(ctx, laneKey(j.App, j.User)); err != nil {
			return "", err
		}
		res, err := a.client.Send(ctx, wecom.OutMessage{
			ToUser: j.User, MsgType: msgType, Content: content,
			EnableDuplicateCheck: dupCheck, DuplicateCheckInterval: a.wc.DuplicateCheckInterval,
		})
		var pe *wecom.PartialError
		if errors.As(err, &pe) {
			b.metrics.inc("wecom_bridge_sends_total", j.App, "invalid_user")
			d.log.Error("WeCom did not deliver to this user (not in the app's 可见范围, or no licence)",
				"invaliduser", pe.InvalidUser, "unlicenseduser", pe.UnlicensedUser)
			return "", errUndeliverable
		}
		if err == nil {
			b.metrics.inc("wecom_bridge_sends_total", j.App, "ok")
			d.log.Debug("piece delivered", "bytes", len(content), "msgid", res.MsgID)
			return res.MsgID, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		b.metrics.inc("wecom_bridge_sends_total", j.App, "error")
		b.noteErr("wecom", err)
		wait, retry := sendBackoff(err, attempt, a.wc.RateLimitWait)
		var ae *wecom.APIError
		if errors.As(err, &ae) {
			d.log.Error("message/send failed", "errcode", ae.Code, "hint", ae.Hint(), "retry", retry)
		} else {
			d.log.Warn("message/send failed", "err", err, "retry", retry)
		}
		if !retry || b.now().Add(wait).After(deadline) {
			return "", err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
	}
}

// sendBackoff decides whether a failed send is worth another try, and when.
// Problems with the user (81013, not in the app's visibility) or the content
// never heal; configuration problems (60020 trusted IP, 40001 secret) may be
// fixed by the admin while we wait, so they are retried slowly until
// send_retry_for runs out.
func sendBackoff(err error, attempt int, rateWait time.Duration) (time.Duration, bool) {
	step := time.Second << min(attempt, 6) // 1s … 64s
	jitter := time.Duration(rand.Int64N(int64(step/2) + 1))
	var ae *wecom.APIError
	if !errors.As(err, &ae) {
		return step/2 + jitter, true // network error or HTTP 5xx
	}
	switch ae.Code {
	case 45009, 45033:
		return rateWait, true
	case 81013, 40003, 45002, 40008, 82001, 301002:
		return 0, false
	}
	if ae.Temporary() || wecom.IsTokenError(err) {
		return step/2 + jitter, true
	}
	return max(step, 15*time.Second) + jitter, true
}

// startNotice sends the "thinking" notice if no piece has gone out after
// thinking_after. The returned function stops the timer and waits for a
// notice being sent. It uses a timer rather than a waiting goroutine: with
// a thousand answers streaming at once, a parked goroutine each costs 8 MB
// of stacks.
func (d *delivery) startNotice(ctx context.Context) func() {
	after := d.a.cfg.ThinkingAfter
	if after <= 0 || d.j.NoticeMsgID != "" || d.j.Delivered > 0 {
		return func() {}
	}
	done := make(chan struct{})
	t := time.AfterFunc(after, func() {
		defer close(done)
		if ctx.Err() != nil {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.sentAny || d.j.Delivered > 0 || d.j.Segment != nil {
			return
		}
		id, err := d.send(ctx, d.a.texts.Thinking, false, "text")
		if err != nil {
			d.log.Warn("cannot send the thinking notice", "err", err)
			return
		}
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
func (d *delivery) recallNotice(ctx context.Context) {
	id := d.j.NoticeMsgID
	if id == "" || !d.a.cfg.recallThinking() {
		return
	}
	if err := d.a.client.Recall(ctx, id); err != nil {
		d.log.Warn("cannot recall the thinking notice", "err", err)
	}
}
