package bridge

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"runtime/debug"
	"strings"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// maxStoredTurns bounds the memory kept for OpenAI-compatible backends; the
// backend trims further to its own history_turns/history_chars budget.
const maxStoredTurns = 50

// maxPanics caps the runs of one job that end in a panic. The count is
// saved with the job, so a job that panics every time, in this process or
// after each restart, ends with an apology instead of coming back forever.
// Crashes and restarts of the daemon are not counted: they are not the
// job's fault, and the job resumes where it was.
const maxPanics = 3

// storageError marks a failure of our own store. From the job's point of
// view it is transient: the job is kept and retried once writes work again.
type storageError struct{ err error }

func (e *storageError) Error() string { return e.err.Error() }
func (e *storageError) Unwrap() error { return e.err }

// stored wraps an error of the store, or returns nil.
func stored(err error) error {
	if err == nil {
		return nil
	}
	return &storageError{err}
}

// transientError is a failure of something outside (downloading an
// attachment from WeCom) that a later try may not have: the job is kept and
// retried with back-off, like a storage error, without marking storage
// unhealthy.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// panicError is a panic recovered while answering.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("bridge: panic while answering: %v", e.value) }

// errPoison reports a job that has already panicked too often.
var errPoison = errors.New("bridge: the job has failed too many times")

// processRef loads a queued job and processes it. A job already finished
// (gone from the store) is skipped; a failing read is retried like a
// failing write.
//
// A question of attachments alone is held (its lane parked, see pool) for
// the text that usually follows; processRef then returns how long.
func (b *Bridge) processRef(ctx context.Context, r jobRef) time.Duration {
	for try := 0; ; try++ {
		j, err := b.store.Job(r.ID)
		switch {
		case errors.Is(err, kv.ErrNotFound):
			return 0
		case err == nil:
			if park := b.hold(ctx, j, r.Lane); park != 0 {
				return max(park, 0)
			}
			b.process(ctx, j)
			return 0
		}
		b.storageFailed(err)
		b.log.Error("cannot read a queued job; retrying", "job", r.ID, "err", err)
		if sleepCtx(ctx, retryWait(try, 30*time.Second)) != nil {
			return 0
		}
	}
}

// process runs one job to completion: it produces the reply (a command's
// answer, a fixed notice or the LLM's answer) and delivers it, resuming any
// progress saved by an earlier run. If ctx ends first, the job stays pending.
//
// Failures are sorted here, in one place: a storage error keeps the job and
// retries it with back-off (from what is on disk) until writes work again;
// a panic is retried up to maxPanics runs, then the user gets an apology
// with a reference id; a permanent delivery failure ends the job as failed,
// with a reference id in the log and the history.
func (b *Bridge) process(ctx context.Context, j *kv.Job) {
	log := b.log.With("app", j.App, "user", j.User, "job", j.ID)
	for try := 0; ; try++ {
		ep := b.endpoint(j.App)
		if ep == nil {
			log.Warn("job's app is no longer configured; it stays pending until the app is back")
			return
		}
		err := b.runOnce(ctx, ep, j, log)
		if err == nil {
			b.storageOK()
			return
		}
		if ctx.Err() != nil {
			log.Info("answer interrupted by shutdown; it stays pending and resumes at next start")
			return
		}
		var pe *panicError
		var se *storageError
		var te *transientError
		switch {
		case errors.As(err, &te):
			wait := retryWait(try, time.Minute)
			log.Warn("cannot fetch an attachment yet; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
			if sleepCtx(ctx, wait) != nil {
				return
			}
		case errors.As(err, &se):
			b.storageFailed(err)
			wait := retryWait(try, 30*time.Second)
			log.Error("storage error while answering; the job is kept and retried", "err", err, "retry_in", wait.Round(time.Millisecond))
			if sleepCtx(ctx, wait) != nil {
				return
			}
		case errors.As(err, &pe) || errors.Is(err, errPoison):
			ref := refID()
			if pe != nil {
				b.metrics.inc("wecom_bridge_errors_total", "bridge", "panic")
				log.Error("panic while answering", "ref", ref, "panics", j.Panics+1, "panic", fmt.Sprint(pe.value), "stack", string(pe.stack))
				j = b.countPanic(j, log)
			}
			if j.Panics >= maxPanics {
				b.poisoned(ctx, ep, j, log, ref)
				return
			}
			if sleepCtx(ctx, retryWait(try, 10*time.Second)) != nil {
				return
			}
		default:
			b.giveUp(ctx, j, log, err)
			return
		}
		// Start the next run from what is on disk: the failed run may have
		// changed the job in memory without saving it.
		fresh, err := b.store.Job(j.ID)
		switch {
		case errors.Is(err, kv.ErrNotFound):
			return // finished after all
		case err == nil:
			j = fresh
		}
	}
}

// countPanic records a panicked run in the job as saved before it (the
// run may have left the job in memory half-changed) and returns that job.
func (b *Bridge) countPanic(j *kv.Job, log *slog.Logger) *kv.Job {
	if fresh, err := b.store.Job(j.ID); err == nil {
		j = fresh
	}
	j.Panics++
	if err := b.store.SaveJob(j); err != nil {
		log.Error("cannot record the panic in the job", "err", err)
	}
	return j
}

// retryWait is a jittered exponential back-off from 500 ms up to limit.
func retryWait(try int, limit time.Duration) time.Duration {
	d := min(500*time.Millisecond<<min(try, 10), limit)
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

// runOnce is one run of a job. A panic inside becomes a *panicError.
func (b *Bridge) runOnce(ctx context.Context, ep endpoint, j *kv.Job, log *slog.Logger) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{value: v, stack: debug.Stack()}
		}
	}()
	if j.Panics >= maxPanics {
		return errPoison
	}
	r := ep.replier(b, j, log)
	status, err := b.produce(ctx, ep, r, j, log)
	if err != nil {
		return err
	}
	r.cleanup(ctx)
	if err := b.store.FinishJob(j, status); err != nil {
		return stored(err)
	}
	b.metrics.inc("wecom_bridge_answers_total", j.App, string(status))
	return nil
}

// poisoned ends a job that panicked maxPanics times: the user gets an
// apology with the reference id (after whatever part of the answer was
// already shown), the history entry is marked failed with it, and the job
// is removed. If even the apology cannot be delivered, the job is finished
// as failed all the same, so that it does not come back.
func (b *Bridge) poisoned(ctx context.Context, ep endpoint, j *kv.Job, log *slog.Logger, ref string) {
	log.Error("job failed too many times; giving up with an apology", "ref", ref, "panics", j.Panics)
	texts := ep.settings().texts
	j.RefID, j.Failed = ref, true
	err := func() (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = &panicError{value: v, stack: debug.Stack()}
			}
		}()
		if j.Delivered < 0 || j.Delivered > len(j.Answer) {
			j.Delivered, j.Segment = 0, nil // a damaged record: start over
		}
		final := fmt.Sprintf(texts.Failed, ref)
		if j.Delivered > 0 {
			final = j.Answer[:j.Delivered] + "\n\n" + fmt.Sprintf(texts.Interrupted, ref)
		}
		j.AnswerDone = false
		r := ep.replier(b, j, log)
		if err := r.finish(ctx, final, kv.AnswerUpdate{Job: j, Entry: &kv.EntryUpdate{
			Answer: final, Status: kv.StatusFailed, RefID: ref,
		}}); err != nil {
			return err
		}
		r.cleanup(ctx)
		return nil
	}()
	if err != nil {
		log.Error("cannot deliver the apology either", "ref", ref, "err", err)
	}
	b.finishFailed(ctx, j, log, ref)
}

// giveUp ends a job whose reply cannot be delivered (WeCom refuses the user,
// or kept failing for longer than send_retry_for).
func (b *Bridge) giveUp(ctx context.Context, j *kv.Job, log *slog.Logger, err error) {
	ref := refID()
	level := slog.LevelError
	if errors.Is(err, errUndeliverable) {
		level = slog.LevelWarn
	}
	log.Log(ctx, level, "cannot deliver the reply; giving up on this job, which ends as failed", "ref", ref, "err", err)
	b.finishFailed(ctx, j, log, ref)
}

// finishFailed records the job as failed with ref and removes it, retrying
// while the store fails.
func (b *Bridge) finishFailed(ctx context.Context, j *kv.Job, log *slog.Logger, ref string) {
	j.RefID, j.Failed = ref, true
	for try := 0; ; try++ {
		err := b.store.CompleteAnswer(kv.AnswerUpdate{Job: j, Entry: &kv.EntryUpdate{Status: kv.StatusFailed, RefID: ref}})
		if err == nil || errors.Is(err, kv.ErrNotFound) {
			err = b.store.FinishJob(j, kv.StatusFailed)
		}
		if err == nil || errors.Is(err, kv.ErrNotFound) {
			b.storageOK()
			b.metrics.inc("wecom_bridge_answers_total", j.App, string(kv.StatusFailed))
			return
		}
		b.storageFailed(err)
		log.Error("cannot record the failed job; retrying", "ref", ref, "err", err)
		if sleepCtx(ctx, retryWait(try, 30*time.Second)) != nil {
			return
		}
	}
}

// produce does the work of one job and returns its final history status.
func (b *Bridge) produce(ctx context.Context, ep endpoint, r replier, j *kv.Job, log *slog.Logger) (kv.Status, error) {
	if err := r.resume(ctx); err != nil {
		return "", err
	}
	if j.AnswerDone {
		return finalStatus(j), nil
	}
	s := ep.settings()
	switch j.Kind {
	case kv.KindCommand:
		return kv.StatusDone, b.runCommand(ctx, s, r, j, log)
	case kv.KindNotice:
		text := s.texts.Unsupported
		if j.Event == "enter_agent" || j.Event == "enter_chat" {
			text = s.welcome
		}
		return kv.StatusDone, fixed(ctx, r, j, text, nil)
	default:
		return b.runQuestion(ctx, ep, r, j, log)
	}
}

func finalStatus(j *kv.Job) kv.Status {
	if j.Failed {
		return kv.StatusFailed
	}
	return kv.StatusDone
}

// fixed delivers a fixed reply (command answer, notice, refusal) and records
// it as the job's answer.
func fixed(ctx context.Context, r replier, j *kv.Job, text string, entry *kv.EntryUpdate) error {
	return r.finish(ctx, text, kv.AnswerUpdate{Job: j, Entry: entry})
}

func (b *Bridge) runCommand(ctx context.Context, s *answerSettings, r replier, j *kv.Job, log *slog.Logger) error {
	switch command(j.Text) {
	case "new":
		if _, err := b.store.ResetConversation(j.App, j.Owner()); err != nil {
			return stored(err)
		}
		log.Info("conversation reset by the user")
		return fixed(ctx, r, j, s.texts.NewChat, nil)
	default:
		return fixed(ctx, r, j, s.texts.Help, nil)
	}
}

// runQuestion checks access and quota, asks the backend and delivers the
// answer as it streams.
func (b *Bridge) runQuestion(ctx context.Context, ep endpoint, r replier, j *kv.Job, log *slog.Logger) (kv.Status, error) {
	s := ep.settings()
	if j.Attempts == 0 {
		// Access and quota are decided once; a resumed job has passed them.
		ok, err := ep.allowed(ctx, j.User)
		if err != nil {
			log.Warn("cannot look up the user's departments; refusing for now", "err", err)
			b.noteErr("wecom", err)
		}
		if !ok {
			log.Info("user not in the allowlist")
			return kv.StatusRefused, fixed(ctx, r, j, s.texts.NotAllowed, &kv.EntryUpdate{Answer: s.texts.NotAllowed, Status: kv.StatusRefused})
		}
		verdict, err := b.store.TakeQuota(j.App, j.User, kv.Limits{PerMinute: s.perMinute, PerDay: s.perDay}, b.now())
		if err != nil {
			return "", stored(err)
		}
		if verdict != kv.QuotaOK {
			text := s.texts.OverMinute
			if verdict == kv.QuotaOverDay {
				text = s.texts.OverDay
			}
			log.Info("user over quota", "verdict", verdict)
			return kv.StatusRefused, fixed(ctx, r, j, text, &kv.EntryUpdate{Answer: text, Status: kv.StatusRefused})
		}
	}
	j.Attempts++
	if err := b.store.StartAttempt(j); err != nil {
		return "", stored(err)
	}

	// Pictures, files and voice: read (or, after a restart, fetched) now.
	q, done, err := b.prepareQuestion(ctx, ep, r, j, log)
	if err != nil || done != "" {
		return done, err
	}

	conv, err := b.store.Conversation(j.App, j.Owner())
	if err != nil {
		return "", stored(err)
	}
	newConv := conv.Fresh || (conv.Seq == 0 && conv.LastActive.IsZero())
	if ro := s.idleRollover; ro > 0 && !conv.LastActive.IsZero() && b.now().Sub(conv.LastActive) > ro {
		log.Info("idle rollover: starting a new conversation", "idle", b.now().Sub(conv.LastActive).Round(time.Minute))
		conv = kv.Conversation{Seq: conv.Seq + 1}
		newConv = true
	}

	res, full, err, derr := b.ask(ctx, s, r, j, log, conv, q)
	if derr == nil && errors.Is(err, llm.ErrConversationNotFound) && full == "" && conv.DifyID != "" {
		// Deleted in Dify, or not this user's: start afresh, once.
		log.Info("Dify conversation not found; asking again in a new conversation")
		conv = kv.Conversation{Seq: conv.Seq + 1}
		newConv = true
		res, full, err, derr = b.ask(ctx, s, r, j, log, conv, q)
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if derr != nil {
		return "", derr
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
	var fe *llm.FileError
	switch {
	case errors.As(err, &fe) && full == "":
		log.Warn("the backend refused an attachment", "kind", fe.Kind, "reason", fe.Reason, "fix", fe.Hint)
		final = fe.Reason
		status = kv.StatusRefused
	case err != nil:
		b.noteErr("llm", err)
		ref := fail()
		if full == "" {
			log.Error("LLM failed; the user gets an apology", "ref", ref, "err", err)
			final = fmt.Sprintf(s.texts.Failed, ref)
		} else {
			log.Error("LLM failed mid-answer; the partial answer is marked as interrupted", "ref", ref, "err", err)
			final = full + "\n\n" + fmt.Sprintf(s.texts.Interrupted, ref)
		}
	case strings.TrimSpace(res.Answer) == "" && strings.TrimSpace(full) == "":
		ref := fail()
		log.Error("LLM returned an empty answer", "ref", ref)
		final = fmt.Sprintf(s.texts.Failed, ref)
	default:
		final = res.Answer
		if strings.TrimSpace(final) == "" {
			final = full
		}
		if res.Truncated {
			final += "\n\n" + s.texts.Truncated
		}
		final = q.prefix + final
	}

	// Record the answer, the conversation it leads to and the history entry
	// together, before delivering the rest: a restart from here on never
	// asks the LLM again.
	upd := kv.AnswerUpdate{Job: j, Entry: &kv.EntryUpdate{
		Answer: final, Status: kv.StatusAnswering, ConvSeq: conv.Seq, NewConv: newConv, RefID: j.RefID,
		Truncated: res != nil && res.Truncated,
	}}
	if res != nil {
		upd.Entry.MessageID = res.MessageID
	}
	if res != nil && (err == nil || res.ConversationID != "") {
		next := conv
		next.Fresh = false
		next.LastActive = b.now()
		if res.ConversationID != "" {
			next.DifyID = res.ConversationID
		}
		if err == nil && s.bcfg.Type == llm.TypeOpenAI {
			next.Turns = append(next.Turns, kv.Turn{Q: j.Text, A: res.Answer})
			if len(next.Turns) > maxStoredTurns {
				next.Turns = next.Turns[len(next.Turns)-maxStoredTurns:]
			}
		}
		upd.Conversation = &next
	}
	if err := r.finish(ctx, final, upd); err != nil {
		return "", err
	}
	return status, nil
}

// ask streams one answer, showing it to the user as it grows. It returns
// the backend's result, the text streamed so far, the backend's error, and
// the delivery error that stopped the stream, if any.
func (b *Bridge) ask(ctx context.Context, s *answerSettings, r replier, j *kv.Job, log *slog.Logger, conv kv.Conversation, q question) (*llm.Result, string, error, error) {
	req := llm.Request{
		App: j.App, User: j.Owner(), ConversationID: conv.DifyID, Query: q.query, Inputs: s.inputs, Files: q.files,
	}
	for _, t := range conv.Turns {
		req.History = append(req.History, llm.Turn{Question: t.Q, Answer: t.A})
	}
	stopNotice := r.thinking(ctx)
	defer stopNotice()
	start := b.now()
	var full string
	var derr error
	first := true
	res, err := s.backend.Stream(ctx, req, func(dl llm.Delta) error {
		if first {
			first = false
			b.metrics.observe("wecom_bridge_llm_first_delta_seconds", b.now().Sub(start))
		}
		if dl.Replace {
			full = dl.Text
		} else {
			full += dl.Text
		}
		log.Debug("delta", "bytes", len(dl.Text), "replace", dl.Replace)
		if err := r.progress(ctx, full); err != nil {
			derr = err
			return err
		}
		return nil
	})
	b.metrics.observe("wecom_bridge_llm_total_seconds", b.now().Sub(start))
	return res, full, err, derr
}

// noteErr counts an error by its source and code.
func (b *Bridge) noteErr(source string, err error) {
	b.metrics.inc("wecom_bridge_errors_total", source, errCode(err))
}

func refID() string {
	var buf [4]byte
	_, _ = crand.Read(buf[:])
	return strings.ToUpper(hex.EncodeToString(buf[:]))
}

// errCode labels an error for metrics with a bounded set of values: the
// WeCom errcode (WeCom's codes are a documented, finite list), the LLM's
// HTTP status class, or a coarse kind. An LLM's own error code is free text
// from a remote server, so it is never a label.
func errCode(err error) string {
	var we *wecom.APIError
	if errors.As(err, &we) {
		return fmt.Sprint(we.Code)
	}
	var le *llm.APIError
	if errors.As(err, &le) {
		switch {
		case le.Status == 401 || le.Status == 403:
			return "auth"
		case le.Status == 404:
			return "not_found"
		case le.Status == 429:
			return "rate_limited"
		case le.Status >= 500:
			return "5xx"
		case le.Status >= 400:
			return "4xx"
		}
		return "api"
	}
	var se *storageError
	switch {
	case errors.As(err, &se):
		return "storage"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, llm.ErrTimeout), errors.Is(err, llm.ErrIdleTimeout):
		return "timeout"
	case errors.As(err, new(*transientError)):
		return "transient"
	case errors.Is(err, llm.ErrIncompleteStream):
		return "incomplete_stream"
	}
	return "other"
}
