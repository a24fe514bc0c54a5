package llmtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Script describes how a fake answers one request. Fakes consume one Script
// per question (stop calls, /info and /models do not consume scripts); when
// the queue is empty they use the zero Script, which echoes the question.
type Script struct {
	// Answer is the answer text; "" echoes the question.
	Answer string
	// Deltas is how many pieces Answer is streamed in (default 3, never
	// more than its characters).
	Deltas int
	// DeltaDelay is the pause after each delta.
	DeltaDelay time.Duration
	// FirstByteDelay is the pause before the response headers are sent.
	FirstByteDelay time.Duration
	// Pings adds keep-alives after each delta: a bare `event: ping` for
	// Dify, a `: keep-alive` comment for OpenAI.
	Pings bool
	// ErrorAfter sends a mid-stream error event after that many deltas
	// and ends the stream; negative sends it before any delta; 0 never.
	ErrorAfter int
	// CutAfter drops the connection after that many deltas; negative drops
	// it right after the headers; 0 never.
	CutAfter int
	// Status, when not 0, answers with that HTTP error before any stream.
	Status int
	// RetryAfter is sent as the Retry-After header with Status.
	RetryAfter string
	// Code is the error code for Status or ErrorAfter, e.g.
	// "provider_quota_exceeded", "insufficient_quota", "model_not_found".
	// "" picks the usual code for the status.
	Code string
	// Reasoning is streamed as reasoning deltas before the answer
	// (OpenAI only).
	Reasoning string
	// FinishReason is the OpenAI finish_reason of the last chunk (default
	// "stop"; "length" marks a truncated answer).
	FinishReason string
	// Replace, when not "", is sent as a Dify message_replace after the
	// deltas; it becomes the final answer.
	Replace string
	// Hang accepts the request and sends nothing until the client goes
	// away or the fake is closed.
	Hang bool
	// Outputs are the Dify workflow outputs, in order. nil means a single
	// output "result" holding Answer.
	Outputs []Output
	// PromptTokens and CompletionTokens are reported as usage (defaults
	// derived from the text lengths).
	PromptTokens, CompletionTokens int
}

// Output is one Dify workflow output variable.
type Output struct {
	Name  string
	Value any // string, number, bool, nil or []string
}

func (s Script) parts(answer string) []string {
	n := s.Deltas
	if n <= 0 {
		n = 3
	}
	return splitRunes(answer, n)
}

// Option configures a fake server.
type Option func(*options)

type options struct {
	apiKey         string
	compact        bool
	appName        string
	appMode        string
	models         []string
	reasoningField string
	noVision       bool
	speechModels   []string
}

// WithoutVision makes the OpenAI fake refuse image_url content parts with
// the 400 a text-only model gives.
func WithoutVision() Option { return func(o *options) { o.noVision = true } }

// WithTranscriptionModels sets the models POST /audio/transcriptions
// accepts (default "whisper-1").
func WithTranscriptionModels(ids ...string) Option { return func(o *options) { o.speechModels = ids } }

// WithAPIKey sets the API key the fake accepts (default "app-llmtest" for
// Dify, "sk-llmtest" for OpenAI).
func WithAPIKey(key string) Option { return func(o *options) { o.apiKey = key } }

// WithCompactJSON makes the Dify fake write compact JSON with raw UTF-8, as
// current Dify (orjson) does, instead of Python json.dumps' spaced output
// with \u escapes used by older releases and in the API docs.
func WithCompactJSON() Option { return func(o *options) { o.compact = true } }

// WithApp sets the Dify app name and mode reported by GET /info. The mode
// also shapes the stream: "agent-chat" sends agent_thought and
// agent_message events, "advanced-chat" (chatflow) wraps the answer in
// workflow and node events, "workflow" and "completion" only answer on their
// own endpoints. Default: "llmtest", "chat".
func WithApp(name, mode string) Option {
	return func(o *options) { o.appName, o.appMode = name, mode }
}

// WithModels sets the models the OpenAI fake serves (default
// "gpt-4o-mini"). Requests for any other model get 404 model_not_found.
func WithModels(ids ...string) Option { return func(o *options) { o.models = ids } }

// WithReasoningField sets the delta field the OpenAI fake streams reasoning
// in: "reasoning_content" (default; DeepSeek, Qwen) or "reasoning" (newer
// vLLM, Ollama, OpenRouter).
func WithReasoningField(name string) Option { return func(o *options) { o.reasoningField = name } }

func newOptions(opts []Option) options {
	o := options{appName: "llmtest", appMode: "chat", models: []string{"gpt-4o-mini"}, reasoningField: "reasoning_content",
		speechModels: []string{"whisper-1"}}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// newUUID returns a random version 4 UUID, the form Dify uses for ids.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// isUUID reports whether s has the canonical 8-4-4-4-12 hex form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// queue is the script queue shared by the fakes.
type queue struct {
	mu      sync.Mutex
	scripts []Script
}

func (q *queue) push(s ...Script) {
	q.mu.Lock()
	q.scripts = append(q.scripts, s...)
	q.mu.Unlock()
}

func (q *queue) pop() Script {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.scripts) == 0 {
		return Script{}
	}
	s := q.scripts[0]
	q.scripts = q.scripts[1:]
	return s
}

// wait pauses for d. It returns false early when ctx ends or stop closes.
func wait(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-ctx.Done():
			return false
		case <-stop:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

// sseWriter writes and flushes stream lines.
type sseWriter struct {
	w http.ResponseWriter
	f http.Flusher
}

func newSSEWriter(w http.ResponseWriter, contentType string) *sseWriter {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	s := &sseWriter{w: w, f: f}
	s.flush()
	return s
}

func (s *sseWriter) data(line string) {
	_, _ = s.w.Write([]byte("data: " + line + "\n\n"))
	s.flush()
}

func (s *sseWriter) rawLine(text string) {
	_, _ = s.w.Write([]byte(text))
	s.flush()
}

func (s *sseWriter) flush() {
	if s.f != nil {
		s.f.Flush()
	}
}

// cut drops the connection mid-response, the way a crashed upstream or a
// proxy timeout does. The client sees an unexpected EOF.
func cut() { panic(http.ErrAbortHandler) }

func writeJSON(w http.ResponseWriter, status int, body string, retryAfter string) {
	w.Header().Set("Content-Type", "application/json")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func estimateTokens(s string) int {
	n := len([]rune(s))/2 + 1
	return n
}
