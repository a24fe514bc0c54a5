package bridge

import (
	"context"
	"log/slog"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm"
)

// How a channel plugs in
//
// A channel is a WeCom surface users write to: the self-built app (this
// file's neighbour app.go: XML callbacks in, message/send pieces out) and,
// next to it, the AI bot. Each channel brings two things:
//
//   - its intake, which verifies what WeCom delivers and records it with
//     Store.Accept (durable and deduplicated) before acknowledging, then
//     hands the job to the pool; and
//   - its delivery, a replier, which shows one job's reply to the user and
//     records how far it got, so that a restart resumes exactly there.
//
// Between the two, the answer loop (answer.go) is shared: access and quota,
// the conversation, the LLM stream, apologies, retries and the poison-job
// cap know nothing about how a channel talks to WeCom.

// endpoint is what the answer loop needs from one configured app or bot.
type endpoint interface {
	// settings are the channel-neutral parts of its config.
	settings() *answerSettings
	// allowed reports whether the user may ask (allow_users and
	// allow_departments).
	allowed(ctx context.Context, user string) (bool, error)
	// replier starts the delivery of job j.
	replier(b *Bridge, j *kv.Job, log *slog.Logger) replier
}

// answerSettings are the parts of an app's or bot's config the answer loop
// reads.
type answerSettings struct {
	name         string
	backend      llm.Backend
	bcfg         llm.Config
	texts        Texts
	inputs       map[string]any
	idleRollover time.Duration
	perMinute    int
	perDay       int
	welcome      string
}

// replier shows one job's reply to its user on one channel. Every method
// records progress in the job (and the store) before it returns, so that
// the next run after a crash continues where this one stopped, and never
// shows the user a piece twice.
type replier interface {
	// resume finishes whatever an earlier run of the job left half-done;
	// when the answer was already complete (j.AnswerDone) it delivers the
	// rest of it.
	resume(ctx context.Context) error
	// progress shows the answer streamed so far (the whole text).
	progress(ctx context.Context, full string) error
	// finish records the final answer together with u (one write: the
	// conversation and history) and delivers what is left of it.
	finish(ctx context.Context, final string, u kv.AnswerUpdate) error
	// thinking shows a "thinking" notice if the answer is slow to start;
	// the returned func stops it.
	thinking(ctx context.Context) (stop func())
	// cleanup runs after the answer is delivered (recalling the notice).
	cleanup(ctx context.Context)
}
