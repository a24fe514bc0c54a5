package llm

import "context"

// Backend streams one answer from a language model. Implementations are safe
// for concurrent use by multiple goroutines.
type Backend interface {
	// Stream asks one question and streams the answer. emit is called for
	// each delta, in order, from the calling goroutine; an error returned by
	// emit aborts the stream and is returned wrapped.
	//
	// On success the returned Result holds the whole answer. On an error
	// after the first delta was emitted, Stream returns a non-nil Result
	// holding the partial answer together with the error, so the caller can
	// tell the user the answer was cut short. Before the first delta it
	// returns a nil Result.
	Stream(ctx context.Context, req Request, emit func(Delta) error) (*Result, error)
}

// Checker is implemented by backends that can verify their configuration
// against the remote service, for the daemon's `check` command.
type Checker interface {
	// Check contacts the service and reports what it found. It returns a
	// typed error (see APIError) that names the setting to fix.
	Check(ctx context.Context) (*Info, error)
}

// Delta is one piece of a streamed answer.
type Delta struct {
	// Text is the new text to append to the answer so far, or, when Replace
	// is set, the whole answer so far.
	Text string
	// Replace reports that Text replaces everything emitted before. Dify
	// sends this (message_replace) when output moderation rewrites an
	// answer, and workflow apps when the final output differs from the
	// streamed text.
	Replace bool
}

// Turn is one earlier question and its answer, used as conversation memory by
// backends that keep no server-side conversation (OpenAI-compatible APIs).
type Turn struct {
	Question string
	Answer   string
}

// Request is one question to a backend.
type Request struct {
	// App is the WeCom app name. Together with User it forms the stable end
	// user id sent to Dify (App + ":" + User), so the same person in two
	// apps has two separate Dify identities.
	App string
	// User is the WeCom userid of the asker. It is required.
	User string
	// ConversationID is the Dify conversation id from storage; "" starts a
	// new conversation. OpenAI-compatible backends ignore it.
	ConversationID string
	// Query is the question text. It is required.
	Query string
	// History holds recent turns, oldest first. OpenAI-compatible backends
	// trim it to their configured budget and send it before Query; Dify
	// ignores it because Dify keeps its own memory.
	History []Turn
	// Inputs are Dify app variables. They are always sent, as {} when nil.
	Inputs map[string]any
	// Files are the question's attachments (pictures, documents, audio),
	// in order. Dify uploads each with POST /files/upload under the same
	// user and references them in the question; OpenAI-compatible
	// backends send pictures as image_url parts (vision = true) and inline
	// plain-text files into the question. History turns stay text only.
	// A file the backend cannot take fails the call with a *FileError
	// before anything is sent; see FileSupport to check in advance.
	Files []File
}

// Usage counts tokens as reported by the service. Fields are zero when the
// service reported nothing.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
	TotalTokens      int
}

// Result is the outcome of one Stream call.
type Result struct {
	// Answer is the whole answer (or the partial answer when Stream also
	// returned an error). Reasoning text is never part of it.
	Answer string
	// ConversationID is the Dify conversation id to store for the next
	// question; "" for backends and app types without conversations.
	ConversationID string
	// MessageID is the service's id for this answer, when it sent one.
	MessageID string
	// Usage is the token usage, when the service reported it.
	Usage Usage
	// Truncated reports that the model stopped because it hit its token
	// limit (finish_reason "length"), so the answer is probably incomplete.
	Truncated bool
}

// Info describes what a backend found when checked.
type Info struct {
	// Name is the Dify app name, or the backend type for OpenAI.
	Name string
	// Mode is the Dify app mode (chat, agent-chat, advanced-chat, agent,
	// workflow, completion) or "openai".
	Mode string
	// Model is the configured model for OpenAI-compatible backends.
	Model string
}
