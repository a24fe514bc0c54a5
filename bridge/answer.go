package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// maxStoredTurns bounds the memory kept for OpenAI-compatible backends; the
// backend trims further to its own history_turns/history_chars budget.
const maxStoredTurns = 50

// process runs one job to completion: it produces the reply (a command's
// answer, a fixed notice or the LLM's answer) and delivers it, resuming any
// progress saved by an earlier run. If ctx ends first, the job stays pending.
func (b *Bridge) process(ctx context.Context, j *kv.Job) {
	a := b.app(j.App)
	log := b.log.With("app", j.App, "user", j.User, "job", j.ID)
	if a == nil {
		log.Warn("job's app is no longer configured; it stays pending until the app is back")
		return
	}
	d := &delivery{b: b, a: a, j: j, log: log}
	status, err := b.produce(ctx, d)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("answer interrupted by shutdown; it stays pending and resumes at next start")
			return
		}
		log.Error("delivery failed; giving up on this job", "err", err)
		status = kv.StatusFailed
	}
	d.recallNotice(ctx)
	if err := b.store.FinishJob(j, status); err != nil {
		log.Error("cannot mark job done", "err", err)
		return
	}
	b.metrics.inc("wecom_bridge_answers_total", j.App, string(status))
}

// produce does the work of one job and returns its final history status.
func (b *Bridge) produce(ctx context.Context, d *delivery) (kv.Status, error) {
	j := d.j
	// A segment interrupted by a restart is finished first, exactly as it
	// was cut, so WeCom's duplicate check can drop a piece sent twice.
	if err := d.sendSegment(ctx); err != nil {
		return "", err
	}
	if j.AnswerDone {
		if err := d.offer(ctx, j.Answer, true); err != nil {
			return "", err
		}
		return finalStatus(j), nil
	}
	switch j.Kind {
	case kv.KindCommand:
		return kv.StatusDone, b.runCommand(ctx, d)
	case kv.KindNotice:
		text := d.a.texts.Unsupported
		if j.Event == "enter_agent" {
			text = d.a.cfg.Welcome
		}
		return kv.StatusDone, d.fixed(ctx, text, nil)
	default:
		return b.runQuestion(ctx, d)
	}
}

func finalStatus(j *kv.Job) kv.Status {
	if j.Failed {
		return kv.StatusFailed
	}
	return kv.StatusDone
}

func (b *Bridge) runCommand(ctx context.Context, d *delivery) error {
	j := d.j
	switch command(j.Text) {
	case "new":
		if _, err := b.store.ResetConversation(j.App, j.User); err != nil {
			return err
		}
		d.log.Info("conversation reset by the user")
		return d.fixed(ctx, d.a.texts.NewChat, nil)
	default:
		return d.fixed(ctx, d.a.texts.Help, nil)
	}
}

// runQuestion checks access and quota, asks the backend and delivers the
// answer as it streams.
func (b *Bridge) runQuestion(ctx context.Context, d *delivery) (kv.Status, error) {
	j, a := d.j, d.a
	if j.Attempts == 0 {
		// Access and quota are decided once; a resumed job has passed them.
		ok, err := a.allowed(ctx, j.User)
		if err != nil {
			d.log.Warn("cannot look up the user's departments; refusing for now", "err", err)
			b.noteErr("wecom", err)
		}
		if !ok {
			d.log.Info("user not in the app's allowlist")
			return kv.StatusRefused, d.fixed(ctx, a.texts.NotAllowed, &kv.EntryUpdate{Answer: a.texts.NotAllowed, Status: kv.StatusRefused})
		}
		verdict, err := b.store.TakeQuota(j.App, j.User, kv.Limits{PerMinute: a.cfg.PerMinute, PerDay: a.cfg.PerDay}, b.now())
		if err != nil {
			return "", err
		}
		if verdict != kv.QuotaOK {
			text := a.texts.OverMinute
			if verdict == kv.QuotaOverDay {
				text = a.texts.OverDay
			}
			d.log.Info("user over quota", "verdict", verdict)
			return kv.StatusRefused, d.fixed(ctx, text, &kv.EntryUpdate{Answer: text, Status: kv.StatusRefused})
		}
	}
	j.Attempts++
	if err := b.store.StartAttempt(j); err != nil {
		return "", err
	}

	conv, err := b.store.Conversation(j.App, j.User)
	if err != nil {
		return "", err
	}
	newConv := conv.Fresh || (conv.Seq == 0 && conv.LastActive.IsZero())
	if r := a.cfg.IdleRollover; r > 0 && !conv.LastActive.IsZero() && b.now().Sub(conv.LastActive) > r {
		d.log.Info("idle rollover: starting a new conversation", "idle", b.now().Sub(conv.LastActive).Round(time.Minute))
		conv = kv.Conversation{Seq: conv.Seq + 1}
		newConv = true
	}

	res, full, err := d.ask(ctx, conv)
	if errors.Is(err, llm.ErrConversationNotFound) && full == "" && conv.DifyID != "" {
		// Deleted in Dify, or not this user's: start afresh, once.
		d.log.Info("Dify conversation not found; asking again in a new conversation")
		conv = kv.Conversation{Seq: conv.Seq + 1}
		newConv = true
		res, full, err = d.ask(ctx, conv)
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if d.sendErr != nil {
		return "", d.sendErr
	}

	var final string
	status := kv.StatusDone
	// fail marks the job failed and returns the reference id the user and
	// the log share.
	fail := func() string {
		j.RefID, j.Failed = refID(), true
		status = kv.StatusFailed
		return j.RefID
	}
	switch {
	case err != nil:
		b.noteErr("llm", err)
		ref := fail()
		if full == "" {
			d.log.Error("LLM failed; the user gets an apology", "ref", ref, "err", err)
			final = fmt.Sprintf(a.texts.Failed, ref)
		} else {
			d.log.Error("LLM failed mid-answer; the partial answer is marked as interrupted", "ref", ref, "err", err)
			final = full + "\n\n" + fmt.Sprintf(a.texts.Interrupted, ref)
		}
	case strings.TrimSpace(res.Answer) == "" && strings.TrimSpace(full) == "":
		ref := fail()
		d.log.Error("LLM returned an empty answer", "ref", ref)
		final = fmt.Sprintf(a.texts.Failed, ref)
	default:
		final = res.Answer
		if strings.TrimSpace(final) == "" {
			final = full
		}
		if res.Truncated {
			final += "\n\n" + a.texts.Truncated
		}
	}

	// Record the answer, the conversation it leads to and the history entry
	// together, before delivering the rest: a restart from here on never
	// asks the LLM again.
	upd := kv.AnswerUpdate{Job: j, Entry: &kv.EntryUpdate{
		Answer: final, Status: kv.StatusAnswering, ConvSeq: conv.Seq, NewConv: newConv, RefID: j.RefID,
		Truncated: res != nil && res.Truncated,
	}}
	if res != nil && (err == nil || res.ConversationID != "") {
		next := conv
		next.Fresh = false
		next.LastActive = b.now()
		if res.ConversationID != "" {
			next.DifyID = res.ConversationID
		}
		if err == nil && a.bcfg.Type == llm.TypeOpenAI {
			next.Turns = append(next.Turns, kv.Turn{Q: j.Text, A: res.Answer})
			if len(next.Turns) > maxStoredTurns {
				next.Turns = next.Turns[len(next.Turns)-maxStoredTurns:]
			}
		}
		upd.Conversation = &next
	}
	// If the final text does not start with what was already delivered
	// (message_replace, or a resumed job whose new answer differs), say so
	// and deliver it whole.
	if err := d.reconcile(ctx, final); err != nil {
		return "", err
	}
	j.Answer, j.AnswerDone = final, true
	d.stageFinal()
	if err := b.store.CompleteAnswer(upd); err != nil {
		return "", err
	}
	if err := d.deliverRest(ctx); err != nil {
		return "", err
	}
	return status, nil
}

// ask streams one answer, delivering pieces as they become ready. It
// returns the backend's result, the text streamed so far and the error.
func (d *delivery) ask(ctx context.Context, conv kv.Conversation) (*llm.Result, string, error) {
	j, a, b := d.j, d.a, d.b
	req := llm.Request{
		App: j.App, User: j.User, ConversationID: conv.DifyID, Query: j.Text, Inputs: a.cfg.Inputs,
	}
	for _, t := range conv.Turns {
		req.History = append(req.History, llm.Turn{Question: t.Q, Answer: t.A})
	}
	stopNotice := d.startNotice(ctx)
	defer stopNotice()
	start := b.now()
	var full string
	first := true
	res, err := a.backend.Stream(ctx, req, func(dl llm.Delta) error {
		if first {
			first = false
			b.metrics.observe("wecom_bridge_llm_first_delta_seconds", b.now().Sub(start))
		}
		if dl.Replace {
			full = dl.Text
		} else {
			full += dl.Text
		}
		d.log.Debug("delta", "bytes", len(dl.Text), "replace", dl.Replace)
		if err := d.offer(ctx, full, false); err != nil {
			d.sendErr = err
			return err
		}
		return nil
	})
	b.metrics.observe("wecom_bridge_llm_total_seconds", b.now().Sub(start))
	return res, full, err
}

// noteErr counts an error by its source and code.
func (b *Bridge) noteErr(source string, err error) {
	b.metrics.inc("wecom_bridge_errors_total", source, errCode(err))
}

func refID() string {
	var buf [4]byte
	_, _ = rand.Read(buf[:])
	return strings.ToUpper(hex.EncodeToString(buf[:]))
}

// delivery sends one job's reply in pieces and records its progress.
type delivery struct {
	b   *Bridge
	a   *app
	j   *kv.Job
	log *slog.Logger

	mu        sync.Mutex // serialises sends: pieces and the thinking notice
	flushes   int        // segments sent in this run
	lastFlush time.Time
	sentAny   bool  // a piece (not the notice) has been delivered in this run
	sendErr   error // a permanent send failure seen inside the stream
}

// fixed delivers a fixed reply (command answer, notice, refusal) and records
// it as the job's answer.
func (d *delivery) fixed(ctx context.Context, text string, entry *kv.EntryUpdate) error {
	d.j.Answer, d.j.AnswerDone, d.j.Delivered = text, true, 0
	d.stageFinal()
	if err := d.b.store.CompleteAnswer(kv.AnswerUpdate{Job: d.j, Entry: entry}); err != nil {
		return err
	}
	return d.deliverRest(ctx)
}

// deliverRest sends the segment staged with the finished answer, then
// anything still undelivered (nothing, normally).
func (d *delivery) deliverRest(ctx context.Context) error {
	if err := d.sendSegment(ctx); err != nil {
		return err
	}
	return d.offer(ctx, d.j.Answer, true)
}

// errCode labels an error for metrics: the WeCom errcode, the LLM status or
// code, or a coarse kind.
func errCode(err error) string {
	var we *wecom.APIError
	if errors.As(err, &we) {
		return fmt.Sprint(we.Code)
	}
	var le *llm.APIError
	if errors.As(err, &le) {
		if le.Code != "" {
			return le.Code
		}
		return fmt.Sprint(le.Status)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, llm.ErrTimeout), errors.Is(err, llm.ErrIdleTimeout):
		return "timeout"
	case errors.Is(err, llm.ErrIncompleteStream):
		return "incomplete_stream"
	}
	return "other"
}
