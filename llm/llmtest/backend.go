package llmtest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm"
)

// Backend is an in-process llm.Backend for tests of code that uses one
// (the bridge), with no HTTP in between. It follows the same scripts as the
// HTTP fakes: Status fails before any delta with an *llm.APIError,
// ErrorAfter and CutAfter fail after some deltas with the partial Result,
// Hang blocks until the context ends. Conversations are scoped by
// App + ":" + User as with Dify: an unknown or foreign ConversationID fails
// with an error matching llm.ErrConversationNotFound.
type Backend struct {
	q queue

	mu       sync.Mutex
	requests []llm.Request
	convs    map[string]string
	info     llm.Info
	checkErr error
	caps     *llm.FileCaps
	capsErr  error
}

var (
	_ llm.Backend     = (*Backend)(nil)
	_ llm.Checker     = (*Backend)(nil)
	_ llm.FileSupport = (*Backend)(nil)
)

// SetCapabilities sets what Capabilities returns. With caps set, Stream
// refuses Request.Files that caps.Check refuses, as the real backends do;
// with nil caps (the default) every file is accepted.
func (b *Backend) SetCapabilities(caps *llm.FileCaps, err error) {
	b.mu.Lock()
	b.caps, b.capsErr = caps, err
	b.mu.Unlock()
}

// Capabilities implements llm.FileSupport.
func (b *Backend) Capabilities(ctx context.Context) (*llm.FileCaps, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.caps == nil {
		return &llm.FileCaps{Backend: "llmtest", Enabled: true,
			Kinds: []llm.FileKind{llm.FileImage, llm.FileDocument, llm.FileAudio, llm.FileVideo}}, b.capsErr
	}
	c := *b.caps
	return &c, b.capsErr
}

// NewBackend returns an empty in-process fake backend.
func NewBackend() *Backend {
	return &Backend{convs: map[string]string{}, info: llm.Info{Name: "llmtest", Mode: "chat"}}
}

// Push queues scripts; each Stream call consumes the next one.
func (b *Backend) Push(scripts ...Script) { b.q.push(scripts...) }

// Requests returns the requests received so far, in order.
func (b *Backend) Requests() []llm.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]llm.Request(nil), b.requests...)
}

// DeleteConversation forgets a conversation.
func (b *Backend) DeleteConversation(id string) {
	b.mu.Lock()
	delete(b.convs, id)
	b.mu.Unlock()
}

// SetCheck sets what Check returns.
func (b *Backend) SetCheck(info llm.Info, err error) {
	b.mu.Lock()
	b.info, b.checkErr = info, err
	b.mu.Unlock()
}

// Check implements llm.Checker.
func (b *Backend) Check(ctx context.Context) (*llm.Info, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	info := b.info
	return &info, b.checkErr
}

// Stream implements llm.Backend.
func (b *Backend) Stream(ctx context.Context, req llm.Request, emit func(llm.Delta) error) (*llm.Result, error) {
	user := req.User
	if req.App != "" {
		user = req.App + ":" + user
	}
	b.mu.Lock()
	b.requests = append(b.requests, req)
	owner, known := b.convs[req.ConversationID]
	caps := b.caps
	b.mu.Unlock()
	if err := caps.Check(req.Files...); err != nil {
		return nil, err
	}
	if req.ConversationID != "" && (!known || owner != user) {
		return nil, fmt.Errorf("llmtest: %w", llm.ErrConversationNotFound)
	}
	sc := b.q.pop()
	if sc.Status != 0 {
		status, code, msg := difyErrorFor(sc.Status, sc.Code)
		return nil, &llm.APIError{Backend: "llmtest", Status: status, Code: code, Message: msg}
	}
	if !sleep(ctx, sc.FirstByteDelay) {
		return nil, ctx.Err()
	}
	if sc.Hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	res := &llm.Result{ConversationID: req.ConversationID, MessageID: newUUID(),
		Truncated: sc.FinishReason == "length"}
	if res.ConversationID == "" {
		res.ConversationID = newUUID()
		b.mu.Lock()
		b.convs[res.ConversationID] = user
		b.mu.Unlock()
	}
	answer := sc.Answer
	if answer == "" {
		answer = "You asked: " + req.Query
	}
	parts := sc.parts(answer)
	for i, p := range parts {
		if sc.CutAfter != 0 && (sc.CutAfter < 0 || i == sc.CutAfter) {
			return partial(res, i), fmt.Errorf("llmtest: %w", llm.ErrIncompleteStream)
		}
		if sc.ErrorAfter != 0 && (sc.ErrorAfter < 0 || i == sc.ErrorAfter) {
			return partial(res, i), &llm.APIError{Backend: "llmtest", Status: 400, Code: "completion_request_error",
				Message: "Completion request failed.", MidStream: true}
		}
		res.Answer += p
		if err := emit(llm.Delta{Text: p}); err != nil {
			return res, fmt.Errorf("llmtest: emit: %w", err)
		}
		if !sleep(ctx, sc.DeltaDelay) {
			return res, ctx.Err()
		}
	}
	if sc.Replace != "" {
		res.Answer = sc.Replace
		if err := emit(llm.Delta{Text: sc.Replace, Replace: true}); err != nil {
			return res, fmt.Errorf("llmtest: emit: %w", err)
		}
	}
	res.Usage = llm.Usage{PromptTokens: estimateTokens(req.Query), CompletionTokens: estimateTokens(res.Answer)}
	res.Usage.TotalTokens = res.Usage.PromptTokens + res.Usage.CompletionTokens
	return res, nil
}

// partial returns res for an error after i deltas: nil before the first.
func partial(res *llm.Result, i int) *llm.Result {
	if i == 0 {
		return nil
	}
	return res
}

func sleep(ctx context.Context, d time.Duration) bool {
	return wait(ctx, nil, d)
}
