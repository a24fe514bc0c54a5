package llm_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
)

func openAIConfig(f *llmtest.OpenAI) llm.Config {
	return llm.Config{Type: llm.TypeOpenAI, BaseURL: f.URL(), APIKey: "sk-llmtest", Model: "gpt-4o-mini"}
}

func TestOpenAIStream(t *testing.T) {
	f := llmtest.NewOpenAI()
	defer f.Close()
	cfg := openAIConfig(f)
	cfg.SystemPrompt = "You are helpful."
	temp := float32(0.3)
	cfg.Temperature = &temp
	cfg.MaxTokens = 512
	b, _ := newBackend(t, cfg)
	f.Push(llmtest.Script{Answer: "Paris is the capital.", Deltas: 3, PromptTokens: 20, CompletionTokens: 6})

	var c collector
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "Capital of France?",
		History: []llm.Turn{{Question: "hi", Answer: "hello"}}}, c.emit)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	text, n := c.got()
	if res.Answer != "Paris is the capital." || text != res.Answer || n != 3 {
		t.Errorf("answer %q, emitted %q in %d deltas", res.Answer, text, n)
	}
	if res.Usage != (llm.Usage{PromptTokens: 20, CompletionTokens: 6, TotalTokens: 26}) {
		t.Errorf("usage %+v (the usage chunk has empty choices)", res.Usage)
	}
	if res.Truncated || res.ConversationID != "" || !strings.HasPrefix(res.MessageID, "chatcmpl-") {
		t.Errorf("result %+v", res)
	}
	r := f.Requests()[0]
	want := []llmtest.Message{{Role: "system", Content: "You are helpful."}, {Role: "user", Content: "hi"},
		{Role: "assistant", Content: "hello"}, {Role: "user", Content: "Capital of France?"}}
	if fmt.Sprint(r.Messages) != fmt.Sprint(want) {
		t.Errorf("messages %v, want %v", r.Messages, want)
	}
	if !r.Stream || !r.IncludeUsage || r.Model != "gpt-4o-mini" || r.Temperature == nil || *r.Temperature < 0.29 ||
		*r.Temperature > 0.31 || r.MaxTokens == nil || *r.MaxTokens != 512 {
		t.Errorf("request %+v", r)
	}
}

func TestOpenAIZeroTemperatureIsSent(t *testing.T) {
	f := llmtest.NewOpenAI()
	defer f.Close()
	cfg := openAIConfig(f)
	zero := float32(0)
	cfg.Temperature = &zero
	b, _ := newBackend(t, cfg)
	if _, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit); err != nil {
		t.Fatal(err)
	}
	r := f.Requests()[0]
	if r.Temperature == nil || *r.Temperature > 1e-6 {
		t.Errorf("temperature %v: want (nearly) 0, present", r.Temperature)
	}
	if r.MaxTokens != nil {
		t.Errorf("max_tokens sent though unset")
	}
}

func TestOpenAIReasoningModelUsesMaxCompletionTokens(t *testing.T) {
	f := llmtest.NewOpenAI(llmtest.WithModels("o3-mini"))
	defer f.Close()
	cfg := openAIConfig(f)
	cfg.Model = "o3-mini"
	cfg.MaxTokens = 100
	b, _ := newBackend(t, cfg)
	if _, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit); err != nil {
		t.Fatal(err)
	}
	r := f.Requests()[0]
	if r.MaxTokens != nil || r.MaxCompletionTokens == nil || *r.MaxCompletionTokens != 100 {
		t.Errorf("max_tokens %v, max_completion_tokens %v", r.MaxTokens, r.MaxCompletionTokens)
	}
}

func TestOpenAIHistoryBudget(t *testing.T) {
	var hist []llm.Turn
	for i := 1; i <= 15; i++ {
		hist = append(hist, llm.Turn{Question: fmt.Sprintf("q%02d", i), Answer: fmt.Sprintf("a%02d", i)})
	}
	hist[13].Answer = "" // a failed answer is not sent
	tests := []struct {
		name         string
		turns, chars int
		want         []string // questions sent, oldest first
	}{
		{"defaults keep last 10", 0, 0, []string{"q05", "q06", "q07", "q08", "q09", "q10", "q11", "q12", "q13", "q15"}},
		{"turn budget", 3, 0, []string{"q12", "q13", "q15"}},
		{"char budget", 0, 20, []string{"q12", "q13", "q15"}}, // 6 runes per turn
		{"char budget exact", 0, 18, []string{"q12", "q13", "q15"}},
		{"char budget tight", 0, 17, []string{"q13", "q15"}},
		{"disabled", -1, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := llmtest.NewOpenAI()
			defer f.Close()
			cfg := openAIConfig(f)
			cfg.SystemPrompt = "sys"
			cfg.HistoryTurns, cfg.HistoryChars = tt.turns, tt.chars
			b, _ := newBackend(t, cfg)
			if _, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "now", History: hist}, (&collector{}).emit); err != nil {
				t.Fatal(err)
			}
			msgs := f.Requests()[0].Messages
			if msgs[0].Role != "system" || msgs[len(msgs)-1].Content != "now" {
				t.Fatalf("messages %v", msgs)
			}
			var got []string
			for i := 1; i < len(msgs)-1; i += 2 {
				if msgs[i].Role != "user" || msgs[i+1].Role != "assistant" || "a"+msgs[i].Content[1:] != msgs[i+1].Content {
					t.Fatalf("bad pair %v %v", msgs[i], msgs[i+1])
				}
				got = append(got, msgs[i].Content)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("history %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOpenAIReasoningNeverEmitted(t *testing.T) {
	for _, field := range []string{"reasoning_content", "reasoning"} {
		t.Run(field, func(t *testing.T) {
			f := llmtest.NewOpenAI(llmtest.WithReasoningField(field))
			defer f.Close()
			b, _ := newBackend(t, openAIConfig(f))
			f.Push(llmtest.Script{Reasoning: "SECRET-THOUGHTS let me think", Answer: "42", Deltas: 2, Pings: true})
			var c collector
			res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, c.emit)
			if err != nil {
				t.Fatal(err)
			}
			text, _ := c.got()
			if res.Answer != "42" || text != "42" {
				t.Errorf("answer %q, emitted %q", res.Answer, text)
			}
		})
	}
}

func TestOpenAITruncated(t *testing.T) {
	f := llmtest.NewOpenAI()
	defer f.Close()
	b, _ := newBackend(t, openAIConfig(f))
	f.Push(llmtest.Script{Answer: "long answer that got cut", FinishReason: "length"}, llmtest.Script{Answer: "short"})
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if err != nil || !res.Truncated {
		t.Fatalf("res %+v, err %v", res, err)
	}
	res, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if err != nil || res.Truncated {
		t.Fatalf("res %+v, err %v", res, err)
	}
}

// TestOpenAIKeepAlives sends far more comment lines than go-openai's
// default empty-message limit (300) before and between chunks, then a
// mid-stream error, which must still arrive as a typed error.
func TestOpenAIKeepAlives(t *testing.T) {
	keepAlives := strings.Repeat(": keep-alive\n\n", 400)
	chunk := func(s string) string {
		return `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"` + s + `"},"finish_reason":null}]}` + "\n\n"
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		_, _ = w.Write([]byte(keepAlives + chunk("Hel") + keepAlives + ": OPENROUTER PROCESSING\r\n\r\n" + chunk("lo")))
		if r.Header.Get("X-Test") == "error" {
			_, _ = w.Write([]byte(keepAlives + `data: {"error":{"message":"The server had an error while processing your request. Sorry about that!", "type":"server_ error", "param":null,"code":null}}` + "\n\n"))
			return
		}
		_, _ = w.Write([]byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n" + keepAlives + "data: [DONE]\n\n"))
		fl.Flush()
	}))
	defer srv.Close()
	cfg := llm.Config{Type: llm.TypeOpenAI, BaseURL: srv.URL, Model: "m", MaxRetries: -1}
	b, _ := newBackend(t, cfg)
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if err != nil || res.Answer != "Hello" {
		t.Fatalf("res %+v, err %v", res, err)
	}

	// The same with an error at the end, through a client that marks it.
	hc := &http.Client{Transport: headerTransport{"X-Test", "error"}}
	b2, err := llm.New(cfg, hc, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err = b2.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	var apiErr *llm.APIError
	if !errors.As(err, &apiErr) || !apiErr.MidStream || !strings.Contains(apiErr.Message, "server had an error") {
		t.Fatalf("err = %#v", err)
	}
	if res == nil || res.Answer != "Hello" {
		t.Fatalf("partial %+v", res)
	}
}

type headerTransport struct{ k, v string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.k, h.v)
	return http.DefaultTransport.RoundTrip(r)
}

func TestOpenAIErrors(t *testing.T) {
	tests := []struct {
		name     string
		model    string
		scripts  []llmtest.Script
		wantErr  error
		wantHint string
		requests int
	}{
		{"model not found", "gpt-9", nil, llm.ErrModelNotFound, "check model", 1},
		{"insufficient quota is final", "", []llmtest.Script{{Status: 429, Code: "insufficient_quota"}}, llm.ErrQuotaExceeded, "quota", 1},
		{"rate limit exhausts retries", "", []llmtest.Script{{Status: 429}, {Status: 429}, {Status: 429}, {Status: 429}}, llm.ErrRateLimited, "", 4},
		{"503 then ok", "", []llmtest.Script{{Status: 503}, {Answer: "ok"}}, nil, "", 2},
		{"500 then ok", "", []llmtest.Script{{Status: 500}, {Answer: "ok"}}, nil, "", 2},
		{"wrong base url", "", nil, llm.ErrEndpointNotFound, "base_url", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := llmtest.NewOpenAI()
			defer f.Close()
			cfg := openAIConfig(f)
			if tt.model != "" {
				cfg.Model = tt.model
			}
			if tt.name == "wrong base url" {
				cfg.BaseURL = strings.TrimSuffix(f.URL(), "/v1")
			}
			b, _ := newBackend(t, cfg)
			f.Push(tt.scripts...)
			res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
			if n := len(f.Requests()); n != tt.requests {
				t.Errorf("%d requests, want %d", n, tt.requests)
			}
			if tt.wantErr == nil {
				if err != nil || res.Answer != "ok" {
					t.Fatalf("res %+v, err %v", res, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || res != nil {
				t.Fatalf("res %+v, err %v, want %v", res, err, tt.wantErr)
			}
			mustContain(t, err.Error(), tt.wantHint)
		})
	}
}

func TestOpenAIUnauthorizedAndCheck(t *testing.T) {
	f := llmtest.NewOpenAI(llmtest.WithModels("gpt-4o-mini", "deepseek-chat"))
	defer f.Close()
	cfg := openAIConfig(f)
	b, _ := newBackend(t, cfg)
	info, err := b.(llm.Checker).Check(ctxT(t))
	if err != nil || info.Model != "gpt-4o-mini" || info.Mode != "openai" {
		t.Fatalf("Check %+v, %v", info, err)
	}
	cfg.Model = "gpt-5-nano"
	b, _ = newBackend(t, cfg)
	if _, err = b.(llm.Checker).Check(ctxT(t)); !errors.Is(err, llm.ErrModelNotFound) {
		t.Fatalf("Check missing model: %v", err)
	}
	mustContain(t, err.Error(), "check model")

	cfg = openAIConfig(f)
	cfg.APIKey = "sk-wrong-0123456789"
	b, lb := newBackend(t, cfg)
	_, err = b.(llm.Checker).Check(ctxT(t))
	if !errors.Is(err, llm.ErrUnauthorized) {
		t.Fatalf("Check: %v", err)
	}
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	var apiErr *llm.APIError
	if !errors.Is(err, llm.ErrUnauthorized) || !errors.As(err, &apiErr) || apiErr.Code != "invalid_api_key" {
		t.Fatalf("Stream: %v", err)
	}
	mustContain(t, err.Error(), "check api_key")
	if strings.Contains(err.Error(), cfg.APIKey) || strings.Contains(lb.String(), cfg.APIKey) {
		t.Error("api key leaked")
	}
}

func TestOpenAIMidStreamErrorAndCut(t *testing.T) {
	f := llmtest.NewOpenAI()
	defer f.Close()
	b, _ := newBackend(t, openAIConfig(f))
	f.Push(llmtest.Script{Answer: "aaaabbbbcccc", Deltas: 3, ErrorAfter: 2, Pings: true})
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	var apiErr *llm.APIError
	if !errors.As(err, &apiErr) || !apiErr.MidStream || res == nil || res.Answer != "aaaabbbb" {
		t.Fatalf("error: res %+v, err %v", res, err)
	}
	f.Push(llmtest.Script{Answer: "aaaabbbbcccc", Deltas: 3, CutAfter: 1})
	res, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if err == nil || res == nil || res.Answer != "aaaa" {
		t.Fatalf("cut: res %+v, err %v", res, err)
	}
	// Before the first delta both are retried.
	f.Push(llmtest.Script{CutAfter: -1}, llmtest.Script{ErrorAfter: -1}, llmtest.Script{Answer: "ok"})
	before := len(f.Requests())
	res, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if err != nil || res.Answer != "ok" || len(f.Requests())-before != 3 {
		t.Fatalf("retry: res %+v, err %v, %d requests", res, err, len(f.Requests())-before)
	}
}

func TestOpenAIEndsWithoutDone(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte(`data: {"choices":[{"index":0,"delta":{"content":"partial"}}]}` + "\n\n"))
	}))
	defer srv.Close()
	b, _ := newBackend(t, llm.Config{Type: llm.TypeOpenAI, BaseURL: srv.URL, Model: "m", MaxRetries: -1,
		IdleTimeout: time.Second})
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if !errors.Is(err, llm.ErrIncompleteStream) || res == nil || res.Answer != "partial" {
		t.Fatalf("res %+v, err %v", res, err)
	}
}
