package llm_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
)

func difyConfig(f *llmtest.Dify) llm.Config {
	return llm.Config{Type: llm.TypeDify, BaseURL: f.URL(), APIKey: "app-llmtest"}
}

func TestDifyStreamNewConversation(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	b, _ := newBackend(t, difyConfig(f))
	f.Push(llmtest.Script{Answer: "Hello there, 你好！", Deltas: 4, PromptTokens: 11, CompletionTokens: 7})

	var c collector
	res, err := b.Stream(ctxT(t), llm.Request{App: "kb", User: "zhangsan", Query: "hi"}, c.emit)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	text, n := c.got()
	if res.Answer != "Hello there, 你好！" || text != res.Answer || n != 4 {
		t.Errorf("answer %q, emitted %q in %d deltas", res.Answer, text, n)
	}
	if res.ConversationID == "" || res.MessageID == "" {
		t.Errorf("missing ids: %+v", res)
	}
	if res.Usage != (llm.Usage{PromptTokens: 11, CompletionTokens: 7, TotalTokens: 18}) {
		t.Errorf("usage %+v", res.Usage)
	}
	reqs := f.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	if r.Path != "/v1/chat-messages" || r.User != "kb:zhangsan" || r.Query != "hi" || r.ResponseMode != "streaming" ||
		!r.HasInputs || len(r.Inputs) != 0 || r.ConversationID != "" {
		t.Errorf("request %+v", r)
	}
	mustContain(t, string(r.Body), `"inputs":{}`)
	if got := f.Conversations("kb:zhangsan"); len(got) != 1 || got[0] != res.ConversationID {
		t.Errorf("conversations %v, result %q", got, res.ConversationID)
	}

	// The second question continues the conversation.
	res2, err := b.Stream(ctxT(t), llm.Request{App: "kb", User: "zhangsan", ConversationID: res.ConversationID,
		Query: "again", Inputs: map[string]any{"dept": "sales"}}, (&collector{}).emit)
	if err != nil {
		t.Fatalf("second Stream: %v", err)
	}
	if res2.ConversationID != res.ConversationID || res2.Answer != "You asked: again" {
		t.Errorf("second result %+v", res2)
	}
	r = f.Requests()[1]
	if r.ConversationID != res.ConversationID || r.Inputs["dept"] != "sales" {
		t.Errorf("second request %+v", r)
	}
}

func TestDifyConversationScoping(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	b, _ := newBackend(t, difyConfig(f))
	ctx := ctxT(t)
	res, err := b.Stream(ctx, llm.Request{App: "kb", User: "alice", Query: "hi"}, (&collector{}).emit)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  llm.Request
		prep func()
	}{
		{"other user", llm.Request{App: "kb", User: "bob", ConversationID: res.ConversationID, Query: "x"}, nil},
		{"same user, other app", llm.Request{App: "hr", User: "alice", ConversationID: res.ConversationID, Query: "x"}, nil},
		{"unknown id", llm.Request{App: "kb", User: "alice", ConversationID: "8d6e7c1a-1111-4bbb-8ccc-123456789abc", Query: "x"}, nil},
		{"deleted", llm.Request{App: "kb", User: "alice", ConversationID: res.ConversationID, Query: "x"},
			func() { f.DeleteConversation(res.ConversationID) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.prep != nil {
				tt.prep()
			}
			before := len(f.Requests())
			var c collector
			got, err := b.Stream(ctx, tt.req, c.emit)
			if !errors.Is(err, llm.ErrConversationNotFound) {
				t.Fatalf("err = %v, want ErrConversationNotFound", err)
			}
			var apiErr *llm.APIError
			if !errors.As(err, &apiErr) || apiErr.Status != 404 || apiErr.Code != "not_found" {
				t.Errorf("err = %#v", err)
			}
			if got != nil {
				t.Errorf("result %+v, want nil", got)
			}
			if n := len(f.Requests()) - before; n != 1 {
				t.Errorf("%d requests, want 1 (no retry)", n)
			}
			// The bridge's recovery: ask again without the id.
			tt.req.ConversationID = ""
			again, err := b.Stream(ctx, tt.req, c.emit)
			if err != nil || again.ConversationID == "" || again.ConversationID == res.ConversationID {
				t.Fatalf("retry without id: %+v, %v", again, err)
			}
		})
	}
}

func TestDifyAppModes(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		cfgMode string
		opts    []llmtest.Option
		path    string
	}{
		{"chatbot spaced", "chat", "", nil, "/v1/chat-messages"},
		{"chatbot compact", "chat", "", []llmtest.Option{llmtest.WithCompactJSON()}, "/v1/chat-messages"},
		{"agent", "agent-chat", "agent", nil, "/v1/chat-messages"},
		{"chatflow", "advanced-chat", "chatflow", []llmtest.Option{llmtest.WithCompactJSON()}, "/v1/chat-messages"},
		{"completion", "completion", "completion", nil, "/v1/completion-messages"},
		{"workflow", "workflow", "workflow", nil, "/v1/workflows/run"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := llmtest.NewDify(append(tt.opts, llmtest.WithApp("kb", tt.mode))...)
			defer f.Close()
			cfg := difyConfig(f)
			cfg.DifyMode = tt.cfgMode
			b, _ := newBackend(t, cfg)
			const answer = "第一行\n\"quoted\" <b>&</b> 🚀 done"
			f.Push(llmtest.Script{Answer: answer, Deltas: 5, Pings: true})
			var c collector
			res, err := b.Stream(ctxT(t), llm.Request{App: "kb", User: "u1", Query: "q?"}, c.emit)
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			text, n := c.got()
			if res.Answer != answer || text != answer || n != 5 {
				t.Errorf("answer %q, emitted %q in %d deltas", res.Answer, text, n)
			}
			wantConv := tt.path == "/v1/chat-messages"
			if (res.ConversationID != "") != wantConv {
				t.Errorf("conversation id %q", res.ConversationID)
			}
			r := f.Requests()[0]
			if r.Path != tt.path {
				t.Errorf("path %q", r.Path)
			}
			if tt.path != "/v1/chat-messages" && r.Inputs["query"] != "q?" {
				t.Errorf("inputs %v: want the question in inputs.query", r.Inputs)
			}
			info, err := b.(llm.Checker).Check(ctxT(t))
			if err != nil || info.Mode != tt.mode || info.Name != "kb" {
				t.Errorf("Check: %+v, %v", info, err)
			}
		})
	}
}

func TestDifyCheckWrongMode(t *testing.T) {
	f := llmtest.NewDify(llmtest.WithApp("flow", "workflow"))
	defer f.Close()
	b, _ := newBackend(t, difyConfig(f))
	_, err := b.(llm.Checker).Check(ctxT(t))
	if !errors.Is(err, llm.ErrWrongAppMode) {
		t.Fatalf("Check err = %v, want ErrWrongAppMode", err)
	}
	mustContain(t, err.Error(), `dify_mode = "workflow"`)
	// Asking anyway fails the same way, without retries.
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if !errors.Is(err, llm.ErrWrongAppMode) || len(f.Requests()) != 1 {
		t.Fatalf("Stream err = %v after %d requests", err, len(f.Requests()))
	}
}

func TestDifyMessageReplace(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	b, _ := newBackend(t, difyConfig(f))
	f.Push(llmtest.Script{Answer: "some bad words", Deltas: 3, Replace: "[moderated]"})
	var c collector
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	text, n := c.got()
	if res.Answer != "[moderated]" || text != "[moderated]" || n != 4 || !c.deltas[3].Replace {
		t.Errorf("answer %q, emitted %q in %d deltas %+v", res.Answer, text, n, c.deltas)
	}
}

func TestDifyWorkflowOutputs(t *testing.T) {
	tests := []struct {
		name      string
		output    string
		outputs   []llmtest.Output
		want      string
		wantDelta int
		replace   bool
	}{
		{"default first string", "", []llmtest.Output{{Name: "count", Value: 3}, {Name: "text", Value: "streamed"}, {Name: "other", Value: "no"}}, "streamed", 2, false},
		{"named output differs", "summary", []llmtest.Output{{Name: "text", Value: "streamed"}, {Name: "summary", Value: "final answer"}}, "final answer", 3, true},
		{"non-string named output", "data", []llmtest.Output{{Name: "data", Value: []string{"a", "b"}}}, `["a", "b"]`, 3, true},
		{"missing output keeps stream", "nope", []llmtest.Output{{Name: "text", Value: "x"}}, "streamed", 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := llmtest.NewDify(llmtest.WithApp("wf", "workflow"))
			defer f.Close()
			cfg := difyConfig(f)
			cfg.DifyMode = llm.DifyModeWorkflow
			cfg.WorkflowOutput = tt.output
			b, _ := newBackend(t, cfg)
			f.Push(llmtest.Script{Answer: "streamed", Deltas: 2, Outputs: tt.outputs})
			var c collector
			res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q", Inputs: map[string]any{"query": "own"}}, c.emit)
			if err != nil {
				t.Fatal(err)
			}
			text, n := c.got()
			if res.Answer != tt.want || text != tt.want || n != tt.wantDelta || c.deltas[n-1].Replace != tt.replace {
				t.Errorf("answer %q, emitted %q in %d deltas %+v", res.Answer, text, n, c.deltas)
			}
			if got := f.Requests()[0].Inputs["query"]; got != "own" {
				t.Errorf("inputs.query = %v; caller's value must win", got)
			}
			if res.Usage.TotalTokens == 0 {
				t.Errorf("no usage")
			}
		})
	}
}

func TestDifyMidStreamError(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	b, _ := newBackend(t, difyConfig(f))
	f.Push(llmtest.Script{Answer: "aaaabbbbccccdddd", Deltas: 4, ErrorAfter: 2, Code: "completion_request_error"})
	var c collector
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, c.emit)
	var apiErr *llm.APIError
	if !errors.As(err, &apiErr) || !apiErr.MidStream || apiErr.Code != "completion_request_error" || apiErr.Status != 400 {
		t.Fatalf("err = %v", err)
	}
	if res == nil || res.Answer != "aaaabbbb" {
		t.Fatalf("partial result %+v", res)
	}
	if len(f.Requests()) != 1 {
		t.Errorf("retried after a delta")
	}
	if len(f.StopCalls()) != 0 {
		t.Errorf("stop called for a task the server ended")
	}
}

func TestDifyErrorEventBeforeFirstDelta(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	b, _ := newBackend(t, difyConfig(f))

	// A provider error is permanent: no retry, no result.
	f.Push(llmtest.Script{ErrorAfter: -1, Code: "provider_quota_exceeded"})
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if !errors.Is(err, llm.ErrQuotaExceeded) || res != nil || len(f.Requests()) != 1 {
		t.Fatalf("quota: res %+v, err %v, %d requests", res, err, len(f.Requests()))
	}
	// A server error before anything was shown is retried.
	f.Push(llmtest.Script{ErrorAfter: -1, Code: "internal_server_error"}, llmtest.Script{Answer: "ok"})
	res, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if err != nil || res.Answer != "ok" || len(f.Requests()) != 3 {
		t.Fatalf("retry: res %+v, err %v, %d requests", res, err, len(f.Requests()))
	}
}

func TestDifyCutMidStream(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	b, _ := newBackend(t, difyConfig(f))
	f.Push(llmtest.Script{Answer: "aaaa bbbb cccc", Deltas: 3, CutAfter: 1})
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if res == nil || res.Answer != "aaaa " {
		t.Fatalf("partial %+v", res)
	}
	if err == nil || len(f.Requests()) != 1 {
		t.Fatalf("err %v after %d requests", err, len(f.Requests()))
	}
	if !strings.HasPrefix(err.Error(), "llm: ") {
		t.Errorf("error %q lacks the llm: prefix", err)
	}

	// A cut before the first delta is retried.
	f.Push(llmtest.Script{CutAfter: -1}, llmtest.Script{Answer: "fine"})
	res, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if err != nil || res.Answer != "fine" {
		t.Fatalf("after cut: %+v, %v", res, err)
	}
}

func TestDifyHTTPErrors(t *testing.T) {
	tests := []struct {
		name     string
		scripts  []llmtest.Script
		retries  int
		wantErr  error
		wantHint string
		requests int
	}{
		{"429 then ok", []llmtest.Script{{Status: 429}, {Answer: "ok"}}, 3, nil, "", 2},
		{"500 twice then ok", []llmtest.Script{{Status: 500}, {Status: 500}, {Answer: "ok"}}, 3, nil, "", 3},
		{"502 html then ok", []llmtest.Script{{Status: 502}, {Answer: "ok"}}, 3, nil, "", 2},
		{"429 exhausts retries", []llmtest.Script{{Status: 429}, {Status: 429}, {Status: 429}}, 2, llm.ErrRateLimited, "", 3},
		{"plan rate limit is final", []llmtest.Script{{Status: 429, Code: "rate_limit_error"}}, 3, llm.ErrQuotaExceeded, "quota", 1},
		{"forbidden", []llmtest.Script{{Status: 403}}, 3, llm.ErrAppUnavailable, "api_key", 1},
		{"provider not initialised", []llmtest.Script{{Status: 400, Code: "provider_not_initialize"}}, 3, llm.ErrAppUnavailable, "provider", 1},
		{"model not supported", []llmtest.Script{{Status: 400, Code: "model_currently_not_support"}}, 3, llm.ErrModelNotFound, "model", 1},
		{"conversation closed", []llmtest.Script{{Status: 400, Code: "conversation_completed"}}, 3, llm.ErrConversationNotFound, "new conversation", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := llmtest.NewDify()
			defer f.Close()
			cfg := difyConfig(f)
			cfg.MaxRetries = tt.retries
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

func TestDifyUnauthorized(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	cfg := difyConfig(f)
	cfg.APIKey = "app-wrong-secret-key"
	b, lb := newBackend(t, cfg)
	_, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	var apiErr *llm.APIError
	if !errors.Is(err, llm.ErrUnauthorized) || !errors.As(err, &apiErr) || apiErr.Status != 401 {
		t.Fatalf("err = %v", err)
	}
	mustContain(t, err.Error(), "check api_key")
	if len(f.Requests()) != 1 {
		t.Errorf("401 was retried")
	}
	_, err = b.(llm.Checker).Check(ctxT(t))
	if !errors.Is(err, llm.ErrUnauthorized) {
		t.Errorf("Check err = %v", err)
	}
	if strings.Contains(err.Error(), cfg.APIKey) || strings.Contains(lb.String(), cfg.APIKey) {
		t.Errorf("api key leaked")
	}
}

func TestDifyWrongBaseURL(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	cfg := difyConfig(f)
	cfg.BaseURL = strings.TrimSuffix(f.URL(), "/v1") // forgot /v1
	b, _ := newBackend(t, cfg)
	_, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if !errors.Is(err, llm.ErrEndpointNotFound) || errors.Is(err, llm.ErrConversationNotFound) {
		t.Fatalf("err = %v", err)
	}
	mustContain(t, err.Error(), "base_url")
	_, err = b.(llm.Checker).Check(ctxT(t))
	if !errors.Is(err, llm.ErrEndpointNotFound) {
		t.Fatalf("Check err = %v", err)
	}
}

func TestDifyEmitErrorStops(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	b, _ := newBackend(t, difyConfig(f))
	f.Push(llmtest.Script{Answer: "a b c d", Deltas: 4})
	boom := errors.New("wecom send failed")
	c := collector{onEach: func(n int) error {
		if n == 2 {
			return boom
		}
		return nil
	}}
	res, err := b.Stream(ctxT(t), llm.Request{App: "kb", User: "u", Query: "q"}, c.emit)
	if !errors.Is(err, boom) || res == nil || res.Answer != "a b " {
		t.Fatalf("res %+v, err %v", res, err)
	}
	if stops := f.StopCalls(); len(stops) != 1 || stops[0].User != "kb:u" {
		t.Fatalf("stop calls %+v", stops)
	}
}

func TestDifyRequestValidation(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	b, _ := newBackend(t, difyConfig(f))
	_, err := b.Stream(context.Background(), llm.Request{Query: " "}, (&collector{}).emit)
	if err == nil || len(f.Requests()) != 0 {
		t.Fatalf("err %v, %d requests", err, len(f.Requests()))
	}
	mustContain(t, err.Error(), "user is required")
	mustContain(t, err.Error(), "query is empty")
}
