package llmtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Message is one chat message received by the OpenAI fake. Content is
// the text: the string content, or the text parts joined by newlines when
// content was an array of parts, which are then in Parts.
type Message struct {
	Role    string
	Content string
	Parts   []ContentPart
}

// ContentPart is one element of an array content: {"type":"text","text"}
// or {"type":"image_url","image_url":{"url","detail"}}.
type ContentPart struct {
	Type     string
	Text     string
	ImageURL string
	Detail   string
}

// UnmarshalJSON accepts content as a string, null, or an array of parts,
// as the chat completions API does.
func (m *Message) UnmarshalJSON(b []byte) error {
	var in struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	m.Role, m.Content, m.Parts = in.Role, "", nil
	c := bytes.TrimSpace(in.Content)
	switch {
	case len(c) == 0 || string(c) == "null":
		return nil
	case c[0] == '"':
		return json.Unmarshal(c, &m.Content)
	}
	var parts []struct {
		Type     string `json:"type"`
		Text     string `json:"text"`
		ImageURL *struct {
			URL    string `json:"url"`
			Detail string `json:"detail"`
		} `json:"image_url"`
	}
	if err := json.Unmarshal(c, &parts); err != nil {
		return err
	}
	var texts []string
	for _, p := range parts {
		cp := ContentPart{Type: p.Type, Text: p.Text}
		if p.ImageURL != nil {
			cp.ImageURL, cp.Detail = p.ImageURL.URL, p.ImageURL.Detail
		}
		if p.Type == "text" {
			texts = append(texts, p.Text)
		}
		m.Parts = append(m.Parts, cp)
	}
	m.Content = strings.Join(texts, "\n")
	return nil
}

// Images returns the image_url parts of m.
func (m Message) Images() []ContentPart {
	var out []ContentPart
	for _, p := range m.Parts {
		if p.Type == "image_url" {
			out = append(out, p)
		}
	}
	return out
}

// DataURI decodes an image_url holding a base64 data: URI into its media
// type and bytes; ok is false for any other URL.
func (p ContentPart) DataURI() (mediaType string, data []byte, ok bool) {
	rest, found := strings.CutPrefix(p.ImageURL, "data:")
	if !found {
		return "", nil, false
	}
	meta, payload, found := strings.Cut(rest, ",")
	mediaType, isB64 := strings.CutSuffix(meta, ";base64")
	if !found || !isB64 {
		return "", nil, false
	}
	data, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		return "", nil, false
	}
	return mediaType, data, true
}

// OpenAIRequest is one chat completion request received by the OpenAI
// fake. Optional numbers are nil when the field was absent.
type OpenAIRequest struct {
	Model               string
	Messages            []Message
	Stream              bool
	IncludeUsage        bool
	Temperature         *float64
	MaxTokens           *int
	MaxCompletionTokens *int
	// Body is the raw request body.
	Body []byte
}

// OpenAI is a fake OpenAI-compatible chat completions server. It checks
// the bearer key and the model, streams chat.completion.chunk lines in the
// shape of the OpenAI spec example, and records what it received.
type OpenAI struct {
	srv  *httptest.Server
	q    queue
	done chan struct{}
	once sync.Once

	mu             sync.Mutex
	o              options
	requests       []OpenAIRequest
	seq            int
	transcriptions []TranscriptionRequest
	transcripts    []transcript
}

// NewOpenAI starts a fake OpenAI-compatible server. Call Close when done.
func NewOpenAI(opts ...Option) *OpenAI {
	o := newOptions(opts)
	if o.apiKey == "" {
		o.apiKey = "sk-llmtest"
	}
	f := &OpenAI{o: o, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", f.serveChat)
	mux.HandleFunc("GET /v1/models", f.serveModels)
	mux.HandleFunc("POST /v1/audio/transcriptions", f.serveTranscription)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		openAIError(w, 404, "Invalid URL ("+r.Method+" "+r.URL.Path+")", "invalid_request_error", "", "")
	})
	f.srv = httptest.NewServer(mux)
	return f
}

// URL returns the API base URL, ending in /v1.
func (f *OpenAI) URL() string { return f.srv.URL + "/v1" }

// Close ends any stream still running and shuts the server down.
func (f *OpenAI) Close() {
	f.once.Do(func() {
		close(f.done)
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
}

// SetAPIKey changes the accepted API key.
func (f *OpenAI) SetAPIKey(key string) {
	f.mu.Lock()
	f.o.apiKey = key
	f.mu.Unlock()
}

// SetModels changes the served models.
func (f *OpenAI) SetModels(ids ...string) {
	f.mu.Lock()
	f.o.models = ids
	f.mu.Unlock()
}

// Push queues scripts; each chat request consumes the next one.
func (f *OpenAI) Push(scripts ...Script) { f.q.push(scripts...) }

// Requests returns the chat requests received so far, in order, including
// rejected ones.
func (f *OpenAI) Requests() []OpenAIRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]OpenAIRequest(nil), f.requests...)
}

func (f *OpenAI) opts() options {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.o
}

// openAIError writes the OpenAI error body in the spaced shape used by
// go-openai's tests.
func openAIError(w http.ResponseWriter, status int, message, typ, code, retryAfter string) {
	c := "null"
	if code != "" {
		c = strconv.Quote(code)
	}
	body := fmt.Sprintf(`{"error": {"message": %s, "type": %q, "param": null, "code": %s}}`, strconv.Quote(message), typ, c) + "\n"
	writeJSON(w, status, body, retryAfter)
}

func (f *OpenAI) authorized(w http.ResponseWriter, r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case !ok || token == "":
		openAIError(w, 401, "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", "invalid_request_error", "", "")
		return false
	case token != f.opts().apiKey:
		openAIError(w, 401, "Incorrect API key provided: sk-***... You can find your API key at https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key", "")
		return false
	}
	return true
}

func (f *OpenAI) serveModels(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	var data []any
	for _, id := range f.opts().models {
		data = append(data, object{{"id", id}, {"object", "model"}, {"created", 1686935002}, {"owned_by", "llmtest"}})
	}
	if data == nil {
		data = []any{}
	}
	writeJSON(w, 200, render(styleCompact, object{{"object", "list"}, {"data", data}})+"\n", "")
}

func scriptedOpenAIError(w http.ResponseWriter, sc Script) {
	status, code := sc.Status, sc.Code
	if code == "" {
		switch {
		case status == 429:
			code = "rate_limit_exceeded"
		case status >= 500:
			code = "server_error"
		}
	}
	switch code {
	case "insufficient_quota":
		openAIError(w, status, "You exceeded your current quota, please check your plan and billing details.", "insufficient_quota", code, sc.RetryAfter)
	case "rate_limit_exceeded":
		openAIError(w, status, "Rate limit reached for requests", "requests", code, sc.RetryAfter)
	case "model_not_found":
		openAIError(w, status, "The model `x` does not exist or you do not have access to it.", "invalid_request_error", code, sc.RetryAfter)
	case "server_error":
		if status == 503 {
			openAIError(w, status, "The engine is currently overloaded, please try again later", "server_error", "", sc.RetryAfter)
			return
		}
		openAIError(w, status, "The server had an error while processing your request. Sorry about that!", "server_error", "", sc.RetryAfter)
	default:
		openAIError(w, status, "llmtest: scripted error", "invalid_request_error", code, sc.RetryAfter)
	}
}

func (f *OpenAI) serveChat(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	var in struct {
		Model         string    `json:"model"`
		Messages      []Message `json:"messages"`
		Stream        bool      `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
		Temperature         *float64 `json:"temperature"`
		MaxTokens           *int     `json:"max_tokens"`
		MaxCompletionTokens *int     `json:"max_completion_tokens"`
	}
	decErr := json.Unmarshal(body, &in)
	rec := OpenAIRequest{Model: in.Model, Messages: in.Messages, Stream: in.Stream, Temperature: in.Temperature,
		MaxTokens: in.MaxTokens, MaxCompletionTokens: in.MaxCompletionTokens, Body: body}
	rec.IncludeUsage = in.StreamOptions != nil && in.StreamOptions.IncludeUsage
	f.mu.Lock()
	f.requests = append(f.requests, rec)
	f.seq++
	seq := f.seq
	f.mu.Unlock()

	if !f.authorized(w, r) {
		return
	}
	o := f.opts()
	known := false
	for _, m := range o.models {
		known = known || m == in.Model
	}
	switch {
	case decErr != nil:
		openAIError(w, 400, "We could not parse the JSON body of your request.", "invalid_request_error", "", "")
		return
	case !known:
		openAIError(w, 404, "The model `"+in.Model+"` does not exist or you do not have access to it.", "invalid_request_error", "model_not_found", "")
		return
	case len(in.Messages) == 0:
		openAIError(w, 400, "[] is too short - 'messages'", "invalid_request_error", "", "")
		return
	case !in.Stream:
		openAIError(w, 400, "llmtest: only streaming is faked", "invalid_request_error", "", "")
		return
	}
	if msg := checkParts(in.Messages, o.noVision); msg != "" {
		openAIError(w, 400, msg, "invalid_request_error", "", "")
		return
	}
	sc := f.q.pop()
	if sc.Status != 0 {
		scriptedOpenAIError(w, sc)
		return
	}
	if !wait(r.Context(), f.done, sc.FirstByteDelay) {
		return
	}
	if sc.Hang {
		select {
		case <-r.Context().Done():
		case <-f.done:
		}
		return
	}
	answer := sc.Answer
	if answer == "" {
		answer = "You asked: " + in.Messages[len(in.Messages)-1].Content
	}
	st := &openAIStream{
		w:  newSSEWriter(w, "text/event-stream; charset=utf-8"),
		id: fmt.Sprintf("chatcmpl-%d", seq), created: time.Now().Unix(), model: in.Model,
		usage: rec.IncludeUsage, reasoningField: o.reasoningField,
	}
	st.run(r, f.done, sc, answer, in.Messages)
}

// openAIStream writes one scripted answer as chat.completion.chunk lines.
type openAIStream struct {
	w              *sseWriter
	id             string
	created        int64
	model          string
	usage          bool
	reasoningField string
}

// chunk renders one chunk the way the OpenAI spec example is laid out
// (compact, except for the spaced system_fingerprint pair).
func (s *openAIStream) chunk(choices string, usage string) string {
	line := `{"id":` + strconv.Quote(s.id) + `,"object":"chat.completion.chunk","created":` + strconv.FormatInt(s.created, 10) +
		`,"model":` + strconv.Quote(s.model) + `, "system_fingerprint": "fp_44709d6fcb", "choices":[` + choices + `]`
	if usage != "" {
		line += `,"usage":` + usage
	} else if s.usage {
		line += `,"usage":null`
	}
	return line + "}"
}

func choice(delta, finish string) string {
	fr := "null"
	if finish != "" {
		fr = strconv.Quote(finish)
	}
	return `{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":` + fr + `}`
}

func (s *openAIStream) run(r *http.Request, done <-chan struct{}, sc Script, answer string, msgs []Message) {
	ctx := r.Context()
	if sc.CutAfter < 0 {
		cut()
	}
	errLine := `{"error":{"message":"The server had an error while processing your request. Sorry about that!", "type":"server_ error", "param":null,"code":null}}`
	if sc.ErrorAfter < 0 {
		s.w.data(errLine)
		return
	}
	s.w.data(s.chunk(choice(`{"role":"assistant","content":""}`, ""), ""))
	pause := func() bool {
		if sc.Pings {
			s.w.rawLine(": keep-alive\n\n")
		}
		return wait(ctx, done, sc.DeltaDelay)
	}
	for _, p := range sc.parts(sc.Reasoning) {
		s.w.data(s.chunk(choice(`{"content":null,"`+s.reasoningField+`":`+render(styleCompact, p)+`}`, ""), ""))
		if !pause() {
			return
		}
	}
	parts := sc.parts(answer)
	for i, p := range parts {
		if sc.CutAfter > 0 && i == sc.CutAfter {
			cut()
		}
		if sc.ErrorAfter > 0 && i == sc.ErrorAfter {
			s.w.data(errLine)
			return
		}
		s.w.data(s.chunk(choice(`{"content":`+render(styleCompact, p)+`}`, ""), ""))
		if !pause() {
			return
		}
	}
	if sc.CutAfter > 0 && sc.CutAfter >= len(parts) {
		cut()
	}
	if sc.ErrorAfter > 0 && sc.ErrorAfter >= len(parts) {
		s.w.data(errLine)
		return
	}
	finish := sc.FinishReason
	if finish == "" {
		finish = "stop"
	}
	s.w.data(s.chunk(choice(`{}`, finish), ""))
	if s.usage {
		prompt, completion := sc.PromptTokens, sc.CompletionTokens
		if prompt == 0 {
			for _, m := range msgs {
				prompt += estimateTokens(m.Content) + 3
			}
		}
		if completion == 0 {
			completion = estimateTokens(sc.Reasoning) + estimateTokens(answer)
		}
		s.w.data(s.chunk("", fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`,
			prompt, completion, prompt+completion)))
	}
	s.w.data("[DONE]")
}
