// Package llm streams answers from language-model backends for the bridge:
// Dify apps (chat, agent, chatflow, workflow and completion) and any
// OpenAI-compatible chat completions API.
//
// A Backend is built from a Config with New and answers one Request at a
// time through Stream, which calls back with each Delta as it arrives and
// returns the final Result: the whole answer, the Dify conversation id to
// store, the message id and token usage. Backends also implement Checker,
// used by the daemon's check command to confirm the base URL, API key, app
// type and model before serving.
//
// # Dify
//
// The client is written over net/http. Looking for a Go SDK turned up
// several community clients covering part of the API, and one from the Dify
// team, github.com/langgenius/dify-go-sdk: standard library only, streaming
// for chat, workflow and completion apps, stop, typed errors. Its first
// release, v0.0.1, is dated 2026-09-28 and its changelog warns the API may
// change before 1.0. It is not in go.mod, and this package was built under
// a no-new-dependencies rule, so it is not used here; it is worth
// re-evaluating once it has settled.
//
// Questions go to POST /chat-messages, /workflows/run or
// /completion-messages with response_mode "streaming", always with inputs
// (at least {}) and with user set to Request.App + ":" + Request.User, which
// keeps each person's conversations apart per WeCom app. The stream parser
// follows the server-sent events rules and Dify's event catalogue; see
// ../shared/docs/LLM.md for the wire facts it relies on.
//
// # OpenAI-compatible APIs
//
// These go through github.com/sashabaranov/go-openai. The API is stateless,
// so memory is the caller's: Request.History is trimmed to the configured
// number of turns and characters, oldest first, and sent after the system
// prompt.
//
// # Errors
//
// Remote failures are *APIError values with a Hint naming the setting to
// fix; they also match sentinels such as ErrUnauthorized, ErrQuotaExceeded,
// ErrModelNotFound and ErrConversationNotFound through errors.Is. Requests
// are retried with exponential backoff and jitter on 429, 5xx and
// connection errors, but only until the first delta has been emitted; after
// that Stream returns the partial Result together with the error.
//
// # Caveats
//
//   - Do not give New an *http.Client with Timeout set: in net/http that
//     timeout covers reading the whole body and will cut long answers. The
//     idle and overall timeouts in Config are applied per request instead.
//   - The API key never appears in errors or logs: messages echoed by the
//     server are scrubbed of it, and Config formats and logs redacted.
//   - Dify "New Agent" apps repeat the whole answer in a closing message
//     event. A message delta equal to the whole answer so far (after at
//     least two deltas) is therefore treated as that repeat and dropped.
//   - Reasoning text (delta.reasoning_content, and delta.reasoning used by
//     newer vLLM, Ollama and OpenRouter) is never emitted nor stored.
//     Reasoning that a model writes inline inside <think> tags in the
//     content is ordinary content to this package.
//   - go-openai counts every non-data line (comments, blank lines) against
//     an empty-message limit and folds comment bytes into the next
//     mid-stream error payload. Comment lines are therefore removed from the
//     body before go-openai reads it, and the limit is raised as well.
//   - The stream parser rejects any single event larger than 8 MiB with
//     ErrEventTooLarge rather than buffering without bound.
//   - The idle clock is paused while emit runs, so a slow consumer is not
//     taken for a silent server; the overall timeout still counts that time.
//   - When a Dify stream is abandoned (cancelled, timed out, idle, cut, or
//     emit failed) the task's stop endpoint is called with a separate
//     5-second deadline, so Stream may return up to that much later.
//   - A Dify answer that finishes without any text is returned as a
//     successful empty Result; what to tell the user is the caller's choice.
//   - Usage is requested with stream_options.include_usage; a few old
//     OpenAI-compatible servers reject that field.
package llm
