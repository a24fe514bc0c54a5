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
// # Attachments
//
// Request.Files carries pictures, documents and audio, read by the caller
// from its own storage. Backends implement FileSupport, whose Capabilities
// says which kinds they take, with the operator setting that turns more
// on; FileCaps.Check refuses a file in advance with a *FileError (Reason
// for the user, Hint for the operator, never the name in its text).
//
//   - Dify: each file is uploaded with POST /files/upload (multipart file
//     and user, the same user as the question, since Dify lets only that
//     user reference it) and passed in "files" as {type, transfer_method:
//     "local_file", upload_file_id}. Stream first checks the app's
//     GET /parameters file_upload (re-read at most once a minute): Dify
//     itself drops files without a word when file upload is off.
//   - OpenAI-compatible: with vision = true pictures (PNG, JPEG, GIF,
//     WEBP, by their bytes) go as image_url content parts with data:
//     URIs, up to max_image_bytes; without vision they fail with
//     ErrNoVision. Plain-text files (txt, md, csv, json, log) are inlined
//     before the question up to max_file_text_bytes, with a note when cut;
//     other documents, audio and video fail with ErrUnsupportedFile.
//     History turns stay text.
//   - Speech: Transcriber (NewTranscriber, for an "openai" backend with
//     transcription_model) posts audio to {base_url}/audio/transcriptions.
//     WeCom's AMR must be converted first (ffmpeg), as OpenAI refuses it.
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
//   - Dify's upload size limits come from its environment (UPLOAD_*_FILE_
//     SIZE_LIMIT) and are reported only in whole megabytes; a smaller
//     limit shows up as a 413 from the upload (ErrFileTooLarge).
//   - Attachments are uploaded once per Stream call: retries of the
//     question inside the call reuse the upload ids, but a Stream call
//     repeated by the caller uploads them again.
//   - Plain-text attachments must be UTF-8: GBK files (common from Excel
//     on Chinese Windows) are refused with a request to save as UTF-8.
//   - Transcription has no idle timeout (a speech server answers only
//     when it has heard the whole file); timeout bounds it.
package llm
