// Package llmtest provides fakes of the services behind package llm, for
// tests and for the daemon's simulate and load tools (it does not import
// package testing).
//
// Dify and OpenAI are HTTP servers (wrapping net/http/httptest) that speak
// the streaming wire formats byte for byte as documented in
// ../shared/docs/LLM.md: Dify's `data: {...}` events in either the spaced,
// ASCII-escaped json.dumps style (the default, as in Dify's API docs) or the
// compact raw-UTF-8 orjson style (WithCompactJSON), bare `event: ping`
// lines, flask-restx error envelopes, and conversation scoping by `user`;
// and OpenAI's chat.completion.chunk lines laid out as in the spec example,
// `: keep-alive` comments, the include_usage chunk with empty choices, and
// `data: [DONE]`. Each question consumes the next queued Script, which
// shapes the answer: deltas and delays, pings, mid-stream errors, cut
// connections, HTTP errors with Retry-After, reasoning deltas, finish
// reasons, a slow first byte, or a hang.
//
// Attachments: the Dify fake serves POST /files/upload with Dify's 201
// shape and refusals (no_file_uploaded, too_many_files,
// filename_not_exists_error, 413 file_too_large by kind, 415 for blocked
// extensions), records uploads per user, and applies the app's FileUpload
// setting to a question's files as Dify's file factory does: dropped
// without a word when upload is off, 400 invalid_param for another user's
// upload id, a type not allowed, or too many files. GET /parameters
// reports the same setting. The OpenAI fake decodes array content (text
// and image_url parts, recorded per message), validates data: URIs like
// the API (WithoutVision refuses them as a text-only model does), and
// serves POST /audio/transcriptions with queued texts, refusing formats
// OpenAI refuses (AMR among them).
//
// Backend is an in-process llm.Backend following the same scripts, for
// tests of callers that do not need HTTP.
//
// # Caveats
//
//   - The fakes answer streaming requests only; blocking mode gets 400.
//   - Ids are random UUIDs; timestamps are the current time.
//   - Close ends running streams before shutting down, so a handler that
//     hangs cannot block it.
package llmtest
