package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	openai "github.com/sashabaranov/go-openai"
)

// openAIEmptyLimit replaces go-openai's default of 300 non-data lines per
// Recv. Providers that queue requests (DeepSeek) or think for a long time
// send blank lines and comments for minutes; the idle and overall timeouts
// bound the wait instead.
const openAIEmptyLimit = 1 << 20

// openAI talks to an OpenAI-compatible chat completions API through
// go-openai.
type openAI struct {
	cfg    Config
	client *openai.Client
	log    *slog.Logger
	base   openai.ChatCompletionRequest // model, temperature and limits
}

var (
	_ Backend = (*openAI)(nil)
	_ Checker = (*openAI)(nil)
)

func newOpenAI(cfg Config, hc *http.Client, log *slog.Logger) (*openAI, error) {
	oc := openai.DefaultConfig(cfg.APIKey)
	oc.BaseURL = cfg.BaseURL
	oc.HTTPClient = &openAIDoer{hc: hc, secret: cfg.APIKey}
	oc.EmptyMessagesLimit = openAIEmptyLimit

	base := openai.ChatCompletionRequest{
		Model:         cfg.Model,
		StreamOptions: &openai.StreamOptions{IncludeUsage: true},
	}
	if cfg.Temperature != nil {
		base.Temperature = *cfg.Temperature
		if base.Temperature == 0 {
			// go-openai drops a zero temperature (omitempty); the smallest
			// positive float32 is the documented way to ask for 0.
			base.Temperature = math.SmallestNonzeroFloat32
		}
	}
	base.MaxTokens = cfg.MaxTokens
	v := openai.NewReasoningValidator()
	if err := v.Validate(base); errors.Is(err, openai.ErrReasoningModelMaxTokensDeprecated) {
		// Reasoning models (o1, o3, o4, gpt-5...) take max_completion_tokens.
		base.MaxTokens, base.MaxCompletionTokens = 0, cfg.MaxTokens
	}
	if err := v.Validate(base); err != nil {
		return nil, fmt.Errorf("llm: invalid config: model %q: %w (check temperature and max_tokens)", cfg.Model, err)
	}
	return &openAI{cfg: cfg, client: openai.NewClientWithConfig(oc), log: log, base: base}, nil
}

// messages builds the chat: system prompt, trimmed history (text only),
// question with its attachments.
func (o *openAI) messages(req Request) ([]openai.ChatCompletionMessage, error) {
	user, err := o.userMessage(req)
	if err != nil {
		return nil, err
	}
	hist := trimHistory(req.History, o.cfg.HistoryTurns, o.cfg.HistoryChars)
	msgs := make([]openai.ChatCompletionMessage, 0, 2+2*len(hist))
	if o.cfg.SystemPrompt != "" {
		msgs = append(msgs, openai.ChatCompletionMessage{Role: openai.ChatMessageRoleSystem, Content: o.cfg.SystemPrompt})
	}
	for _, t := range hist {
		msgs = append(msgs,
			openai.ChatCompletionMessage{Role: openai.ChatMessageRoleUser, Content: t.Question},
			openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant, Content: t.Answer})
	}
	return append(msgs, user), nil
}

// trimHistory keeps the newest turns that fit both budgets, in their
// original order. Turns without a question or an answer are skipped. A
// negative budget sends no history.
func trimHistory(h []Turn, turns, chars int) []Turn {
	if turns <= 0 || chars <= 0 {
		return nil
	}
	used, n := 0, 0
	first := len(h)
	for i := len(h) - 1; i >= 0 && n < turns; i-- {
		t := h[i]
		if t.Question == "" || t.Answer == "" {
			continue
		}
		size := utf8.RuneCountInString(t.Question) + utf8.RuneCountInString(t.Answer)
		if used+size > chars {
			break
		}
		used += size
		n++
		first = i
	}
	out := make([]Turn, 0, n)
	for _, t := range h[first:] {
		if t.Question != "" && t.Answer != "" {
			out = append(out, t)
		}
	}
	return out
}

// Stream implements Backend.
func (o *openAI) Stream(ctx context.Context, req Request, emit func(Delta) error) (*Result, error) {
	if err := checkRequest(req); err != nil {
		return nil, err
	}
	creq := o.base
	msgs, err := o.messages(req)
	if err != nil {
		return nil, err
	}
	creq.Messages = msgs
	res, err := retryLoop(ctx, o.cfg, o.log, func(ctx context.Context) (*Result, bool, error) {
		return o.once(ctx, creq, emit)
	})
	return res, scrub(err, o.cfg.APIKey)
}

// openAIChunk is the part of a chat.completion.chunk we read. Decoding it
// ourselves (through RecvRaw) lets us see delta.reasoning, used by servers
// that go-openai's struct does not cover, and a top-level error object.
type openAIChunk struct {
	ID      string `json:"id"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
			Reasoning        string `json:"reasoning"`
		} `json:"delta"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	Error json.RawMessage `json:"error"`
}

type watchKey struct{}

func (o *openAI) once(ctx context.Context, creq openai.ChatCompletionRequest, emit func(Delta) error) (*Result, bool, error) {
	actx, watch := newIdleWatch(ctx, o.cfg.IdleTimeout)
	defer watch.stop()
	state := &streamState{}
	actx = context.WithValue(actx, watchKey{}, &doerHooks{watch: watch, state: state})

	stream, err := o.client.CreateChatCompletionStream(actx, creq)
	if err != nil {
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			return nil, false, apiErr
		}
		if actx.Err() == nil && !isTransport(err) {
			return nil, false, fmt.Errorf("llm: openai: %w", err)
		}
		return nil, false, attemptError(TypeOpenAI, actx, err)
	}
	defer stream.Close()

	var (
		res     Result
		answer  strings.Builder
		emitted bool
		finish  string
	)
	for {
		raw, err := stream.RecvRaw()
		if err != nil {
			res.Answer = answer.String()
			switch {
			case errors.Is(err, io.EOF) && actx.Err() == nil:
				if finish == "" && !state.done {
					return &res, emitted, wrap(TypeOpenAI, ErrIncompleteStream)
				}
				return &res, emitted, nil
			case actx.Err() != nil:
				return &res, emitted, attemptError(TypeOpenAI, actx, err)
			}
			var oe *openai.APIError
			if errors.As(err, &oe) {
				return &res, emitted, fromOpenAIError(oe, o.cfg.APIKey, true)
			}
			return &res, emitted, &connError{backend: TypeOpenAI, err: err}
		}
		if len(raw) == 0 {
			continue
		}
		var c openAIChunk
		if err := json.Unmarshal(raw, &c); err != nil {
			o.log.Debug("openai: skipping undecodable chunk", "err", err, "bytes", len(raw))
			continue
		}
		if len(c.Error) > 0 && string(c.Error) != "null" {
			res.Answer = answer.String()
			e := parseErrorBody(TypeOpenAI, 0, raw, o.cfg.APIKey)
			e.MidStream = true
			e.classify(false)
			return &res, emitted, e
		}
		if c.ID != "" {
			res.MessageID = c.ID
		}
		if c.Usage != nil {
			res.Usage = Usage{PromptTokens: c.Usage.PromptTokens, CompletionTokens: c.Usage.CompletionTokens, TotalTokens: c.Usage.TotalTokens}
		}
		for _, ch := range c.Choices {
			if ch.Index != 0 {
				continue
			}
			if ch.FinishReason != "" {
				finish = ch.FinishReason
				res.Truncated = finish == "length"
			}
			// Reasoning (reasoning_content / reasoning) is deliberately
			// dropped: it is neither shown nor stored.
			if ch.Delta.Content == "" {
				continue
			}
			answer.WriteString(ch.Delta.Content)
			emitted = true
			watch.pause()
			err := emit(Delta{Text: ch.Delta.Content})
			watch.kick()
			if err != nil {
				res.Answer = answer.String()
				return &res, true, &emitError{err: err}
			}
		}
	}
}

// fromOpenAIError converts go-openai's error type into ours.
func fromOpenAIError(oe *openai.APIError, secret string, midStream bool) *APIError {
	e := &APIError{Backend: TypeOpenAI, Status: oe.HTTPStatusCode, MidStream: midStream,
		Message: redact(oe.Message, secret)}
	switch c := oe.Code.(type) {
	case string:
		e.Code = c
	case nil:
	default:
		e.Code = fmt.Sprint(c)
	}
	if (e.Code == "" || isDigits(e.Code)) && oe.Type != "" {
		e.Code = oe.Type
	}
	e.classify(false)
	return e
}

func isTransport(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue)
}

// Check implements Checker: it lists the server's models (GET /models) and
// confirms the configured model is among them.
func (o *openAI) Check(ctx context.Context) (*Info, error) {
	info, err := o.check(ctx)
	return info, scrub(err, o.cfg.APIKey)
}

func (o *openAI) check(ctx context.Context) (*Info, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, o.cfg.IdleTimeout, &timeoutError{sentinel: ErrTimeout, after: o.cfg.IdleTimeout})
	defer cancel()
	name := o.cfg.BaseURL
	if u, err := url.Parse(o.cfg.BaseURL); err == nil {
		name = u.Host
	}
	info := &Info{Name: name, Mode: TypeOpenAI, Model: o.cfg.Model}
	list, err := o.client.ListModels(ctx)
	if err != nil {
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			return info, apiErr
		}
		var oe *openai.APIError
		if errors.As(err, &oe) {
			return info, fromOpenAIError(oe, o.cfg.APIKey, false)
		}
		if ctx.Err() != nil || isTransport(err) {
			return info, attemptError(TypeOpenAI, ctx, err)
		}
		return info, fmt.Errorf("llm: openai: list models: %w (check base_url)", err)
	}
	for _, m := range list.Models {
		if m.ID == o.cfg.Model {
			return info, nil
		}
	}
	return info, &APIError{Backend: TypeOpenAI, Code: "model_not_found",
		Message: fmt.Sprintf("model %q is not among the %d models the server lists", o.cfg.Model, len(list.Models)),
		Hint:    "check model", kind: ErrModelNotFound}
}

// streamState is what the transport learns about one stream.
type streamState struct {
	done bool // a "data: [DONE]" line was seen
}

// doerHooks travel in the request context from once to openAIDoer.
type doerHooks struct {
	watch *idleWatch
	state *streamState
}

// openAIDoer sits between go-openai and net/http. It turns HTTP errors into
// *APIError with Retry-After (go-openai drops the headers), feeds the idle
// watchdog, and strips SSE comment lines, which go-openai would otherwise
// count as empty messages and mix into mid-stream error payloads.
type openAIDoer struct {
	hc     *http.Client
	secret string
}

func (d *openAIDoer) Do(req *http.Request) (*http.Response, error) {
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, apiErrorFromResponse(TypeOpenAI, resp, d.secret, false)
	}
	hooks, _ := req.Context().Value(watchKey{}).(*doerHooks)
	if hooks != nil {
		hooks.watch.kick()
		resp.Body = &filteredBody{
			rc:    &activityBody{ReadCloser: resp.Body, w: hooks.watch},
			state: hooks.state,
			start: true,
		}
	}
	return resp, nil
}

// filteredBody removes SSE comment lines (": keep-alive") from a stream and
// notes the "data: [DONE]" terminator.
type filteredBody struct {
	rc       io.ReadCloser
	state    *streamState
	start    bool     // at the start of a line
	skipping bool     // inside a comment line
	line     [16]byte // the start of the current line
	lineLen  int
	long     bool // the current line is longer than line
}

func (b *filteredBody) Read(p []byte) (int, error) {
	for {
		n, err := b.rc.Read(p)
		out := 0
		for _, c := range p[:n] {
			if b.skipping {
				if c == '\n' {
					b.skipping, b.start = false, true
				}
				continue
			}
			if b.start && c == ':' {
				b.skipping, b.start = true, false
				continue
			}
			p[out] = c
			out++
			if c == '\n' || c == '\r' {
				if l := strings.TrimSpace(string(b.line[:b.lineLen])); !b.long && (l == "data: [DONE]" || l == "data:[DONE]") {
					b.state.done = true
				}
				b.start, b.lineLen, b.long = true, 0, false
				continue
			}
			b.start = false
			if b.lineLen < len(b.line) {
				b.line[b.lineLen] = c
				b.lineLen++
			} else {
				b.long = true
			}
		}
		if out > 0 || err != nil || n == 0 {
			return out, err
		}
	}
}

func (b *filteredBody) Close() error { return b.rc.Close() }
