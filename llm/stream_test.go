package llm_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
)

// TestDifyCancelMidStreamStops cancels the caller's context after the first
// delta: Stream must return promptly with the partial answer, call the stop
// endpoint for the task with the same user, and leave no goroutine behind.
func TestDifyCancelMidStreamStops(t *testing.T) {
	for _, mode := range []string{"chat", "workflow", "completion"} {
		t.Run(mode, func(t *testing.T) {
			before := runtime.NumGoroutine()
			f := llmtest.NewDify(llmtest.WithApp("kb", mode))
			tr := &http.Transport{}
			cfg := difyConfig(f)
			cfg.DifyMode = mode
			cfg.RetryBase = time.Millisecond
			b, err := llm.New(cfg, &http.Client{Transport: tr}, nil)
			if err != nil {
				t.Fatal(err)
			}
			f.Push(llmtest.Script{Answer: "aaaa bbbb cccc dddd", Deltas: 4, DeltaDelay: 10 * time.Second})
			ctx, cancel := context.WithCancel(context.Background())
			c := collector{onEach: func(int) error { cancel(); return nil }}
			start := time.Now()
			res, err := b.Stream(ctx, llm.Request{App: "kb", User: "u1", Query: "q"}, c.emit)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("Stream took %s after cancel", time.Since(start))
			}
			if res == nil || res.Answer != "aaaa " {
				t.Errorf("partial %+v", res)
			}
			stops := f.StopCalls()
			if len(stops) != 1 || stops[0].User != "kb:u1" || stops[0].TaskID == "" {
				t.Fatalf("stop calls %+v", stops)
			}
			wantPath := map[string]string{"chat": "/v1/chat-messages/", "workflow": "/v1/workflows/tasks/",
				"completion": "/v1/completion-messages/"}[mode] + stops[0].TaskID + "/stop"
			if stops[0].Path != wantPath {
				t.Errorf("stop path %q, want %q", stops[0].Path, wantPath)
			}
			f.Close()
			tr.CloseIdleConnections()
			waitGoroutines(t, before)
		})
	}
}

func TestOpenAICancelMidStreamNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	f := llmtest.NewOpenAI()
	tr := &http.Transport{}
	b, err := llm.New(openAIConfig(f), &http.Client{Transport: tr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Push(llmtest.Script{Answer: "aaaa bbbb cccc dddd", Deltas: 4, DeltaDelay: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	c := collector{onEach: func(int) error { cancel(); return nil }}
	res, err := b.Stream(ctx, llm.Request{User: "u1", Query: "q"}, c.emit)
	if !errors.Is(err, context.Canceled) || res == nil || res.Answer != "aaaa " {
		t.Fatalf("res %+v, err %v", res, err)
	}
	f.Close()
	tr.CloseIdleConnections()
	waitGoroutines(t, before)
}

func TestIdleTimeout(t *testing.T) {
	t.Run("dify first byte", func(t *testing.T) {
		f := llmtest.NewDify()
		defer f.Close()
		cfg := difyConfig(f)
		cfg.IdleTimeout, cfg.MaxRetries = 100*time.Millisecond, 1
		b, _ := newBackend(t, cfg)
		f.Push(llmtest.Script{FirstByteDelay: 10 * time.Second}, llmtest.Script{Hang: true})
		start := time.Now()
		res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
		if !errors.Is(err, llm.ErrIdleTimeout) || res != nil {
			t.Fatalf("res %+v, err %v", res, err)
		}
		if n := len(f.Requests()); n != 2 {
			t.Errorf("%d requests, want 2 (one retry)", n)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %s", d)
		}
	})
	t.Run("dify between deltas", func(t *testing.T) {
		f := llmtest.NewDify()
		defer f.Close()
		cfg := difyConfig(f)
		cfg.IdleTimeout = 500 * time.Millisecond
		b, _ := newBackend(t, cfg)
		f.Push(llmtest.Script{Answer: "aaaabbbb", Deltas: 2, DeltaDelay: 3 * time.Second})
		res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
		if !errors.Is(err, llm.ErrIdleTimeout) || res == nil || res.Answer != "aaaa" {
			t.Fatalf("res %+v, err %v", res, err)
		}
		if len(f.StopCalls()) != 1 {
			t.Errorf("stop not called for the abandoned task")
		}
	})
	t.Run("openai between deltas", func(t *testing.T) {
		f := llmtest.NewOpenAI()
		defer f.Close()
		cfg := openAIConfig(f)
		cfg.IdleTimeout = 500 * time.Millisecond
		b, _ := newBackend(t, cfg)
		f.Push(llmtest.Script{Answer: "aaaabbbb", Deltas: 2, DeltaDelay: 3 * time.Second})
		res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
		if !errors.Is(err, llm.ErrIdleTimeout) || res == nil || res.Answer != "aaaa" {
			t.Fatalf("res %+v, err %v", res, err)
		}
	})
	t.Run("pings keep a slow stream alive", func(t *testing.T) {
		// Bytes of any kind count as activity: a ping arriving every
		// 100ms keeps a 700ms idle timeout from firing during a 1.2s gap.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fl := w.(http.Flusher)
			_, _ = w.Write([]byte(`data: {"event": "message", "task_id": "t1", "message_id": "m1", "conversation_id": "", "answer": "slow", "created_at": 1}` + "\n\n"))
			fl.Flush()
			for range 12 {
				time.Sleep(100 * time.Millisecond)
				_, _ = w.Write([]byte("event: ping\n\n"))
				fl.Flush()
			}
			_, _ = w.Write([]byte(`data: {"event": "message_end", "task_id": "t1", "message_id": "m1", "conversation_id": "c1", "created_at": 1, "metadata": {"usage": {"total_tokens": 10, "latency": 1.0}}}` + "\n\n"))
		}))
		defer srv.Close()
		b, _ := newBackend(t, llm.Config{Type: llm.TypeDify, BaseURL: srv.URL, APIKey: "k", IdleTimeout: 700 * time.Millisecond})
		res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
		if err != nil || res.Answer != "slow" || res.ConversationID != "c1" || res.Usage.TotalTokens != 10 {
			t.Fatalf("res %+v, err %v", res, err)
		}
	})
}

func TestOverallTimeout(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	cfg := difyConfig(f)
	cfg.Timeout, cfg.IdleTimeout = time.Second, 800*time.Millisecond
	b, _ := newBackend(t, cfg)
	f.Push(llmtest.Script{Answer: strings.Repeat("x", 40), Deltas: 40, DeltaDelay: 100 * time.Millisecond})
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if !errors.Is(err, llm.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if res == nil || len(res.Answer) < 1 || len(res.Answer) > 11 {
		t.Fatalf("partial %+v", res)
	}
	if len(f.StopCalls()) != 1 {
		t.Errorf("stop not called")
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	f := llmtest.NewOpenAI()
	defer f.Close()
	b, _ := newBackend(t, openAIConfig(f))
	f.Push(llmtest.Script{Status: 429, RetryAfter: "1"}, llmtest.Script{Answer: "ok"})
	start := time.Now()
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if err != nil || res.Answer != "ok" {
		t.Fatalf("res %+v, err %v", res, err)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("retried after %s, want >= 1s (Retry-After)", d)
	}

	// A Retry-After beyond the overall deadline gives up at once.
	cfg := openAIConfig(f)
	cfg.Timeout = 10 * time.Second
	b, _ = newBackend(t, cfg)
	f.Push(llmtest.Script{Status: 429, RetryAfter: "30"})
	start = time.Now()
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	var apiErr *llm.APIError
	if !errors.As(err, &apiErr) || apiErr.RetryAfter != 30*time.Second || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %s", err, time.Since(start))
	}
}

func TestConnectionRefusedRetried(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	b, lb := newBackend(t, llm.Config{Type: llm.TypeDify, BaseURL: url, APIKey: "app-secret-xyz", MaxRetries: 2})
	_, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
	if err == nil || !strings.HasPrefix(err.Error(), "llm: dify: connection:") {
		t.Fatalf("err = %v", err)
	}
	if got := strings.Count(lb.String(), "retrying"); got != 2 {
		t.Errorf("%d retries logged, want 2\n%s", got, lb.String())
	}
}

// TestSecretsNeverLeak points both backends at a server that echoes the
// bearer token in every error message, and checks errors and logs.
func TestSecretsNeverLeak(t *testing.T) {
	const key = "sk-TOPSECRET-1234567890"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/chat-messages") {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte(`data: {"event":"error","code":"invalid_param","status":400,"message":"bad key ` + tok + `"}` + "\n\n"))
			return
		}
		w.WriteHeader(500)
		_, _ = w.Write([]byte(`{"error":{"message":"key ` + tok + ` failed","type":"server_error","code":"` + tok + `"}}`))
	}))
	defer srv.Close()
	for _, cfg := range []llm.Config{
		{Type: llm.TypeDify, BaseURL: srv.URL, APIKey: key, MaxRetries: 1},
		{Type: llm.TypeOpenAI, BaseURL: srv.URL, APIKey: key, Model: "m", MaxRetries: 1},
	} {
		t.Run(cfg.Type, func(t *testing.T) {
			b, lb := newBackend(t, cfg)
			_, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
			if err == nil {
				t.Fatal("no error")
			}
			_, cerr := b.(llm.Checker).Check(ctxT(t))
			for _, s := range []string{err.Error(), lb.String(), errString(cerr)} {
				if strings.Contains(s, key) {
					t.Errorf("secret leaked: %s", s)
				}
			}
			mustContain(t, err.Error(), "<redacted>")
		})
	}
	// Config itself never prints the key either.
	cfg := llm.Config{Type: llm.TypeDify, APIKey: key}
	log, lb := newLogger()
	log.Info("config", "llm", cfg)
	for _, s := range []string{lb.String(), cfg.String(), cfg.GoString()} {
		if strings.Contains(s, key) || !strings.Contains(s, "<redacted>") {
			t.Errorf("config output %q", s)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestDifyVerbatimStream replays the documented wire lines (LLM.md) with
// CRLF line ends, a multi-line data field, unknown and informational
// events, and a New Agent style closing repeat of the whole answer.
func TestDifyVerbatimStream(t *testing.T) {
	lines := []string{
		`data: {"event": "workflow_started", "task_id": "task123", "workflow_run_id": "wfr_abc123", "message_id": "msg123", "conversation_id": "conv123", "created_at": 1705395332, "data": {"id": "wfr_abc123", "workflow_id": "wf_def456", "inputs": {"city": "San Francisco"}, "created_at": 1705395332}}`,
		`data: {"event": "node_started", "task_id": "task123", "workflow_run_id": "wfr_abc123", "message_id": "msg123", "conversation_id": "conv123", "created_at": 1705395332, "data": {"id": "ne_001", "node_id": "node_llm_1", "node_type": "llm", "title": "LLM", "index": 1, "created_at": 1705395332}}`,
		`data: {"event": "agent_thought", "id": "agent_thought_id_1", "task_id": "task123", "message_id": "msg123", "conversation_id": "conv123", "position": 1, "thought": "Thinking about calling a tool...", "tool": "dalle3", "tool_input": "{\"dalle3\": {\"prompt\": \"a cute cat\"}}", "created_at": 1705395332}`,
		`data: {"event": "agent_message", "task_id": "task123", "message_id": "msg123", "conversation_id": "conv123", "answer": "Here is the image: ", "created_at": 1705395333}`,
		"event: ping",
		`data: {"event": "message_file", "task_id": "task123", "message_id": "msg123", "conversation_id": "conv123", "id": "file_id_1", "type": "image", "belongs_to": "assistant", "url": "https://example.com/cat.png", "created_at": 1705395332}`,
		": a comment",
		"data: {\"event\":\"message\",\"task_id\":\"task123\",\r\ndata: \"message_id\":\"msg123\",\"conversation_id\":\"conv123\",\"answer\":\"\\u4f60\\u597d \\ud83d\\ude80\"}",
		`data: {"event":"future_event","data":{"x":1}}`,
		`data: not json at all`,
		`data: {"event": "message", "task_id": "task123", "message_id": "msg123", "conversation_id": "conv123", "answer": "Here is the image: 你好 🚀", "created_at": 1705395333}`,
		`data: {"event": "node_finished", "task_id": "task123", "workflow_run_id": "wfr_abc123", "message_id": "msg123", "conversation_id": "conv123", "created_at": 1705395334, "data": {"id": "ne_001", "node_id": "node_llm_1", "node_type": "llm", "title": "LLM", "index": 1, "status": "succeeded", "elapsed_time": 1.5, "created_at": 1705395332, "finished_at": 1705395334}}`,
		`data: {"event": "message_end", "task_id": "task123", "message_id": "msg123", "conversation_id": "conv123", "created_at": 1679586595, "metadata": {"usage": {"prompt_tokens": 1033, "prompt_unit_price": "0.001", "prompt_price_unit": "0.001", "prompt_price": "0.0010330", "completion_tokens": 135, "completion_unit_price": "0.002", "completion_price_unit": "0.001", "completion_price": "0.0002700", "total_tokens": 1168, "total_price": "0.0013030", "currency": "USD", "latency": 1.381760165997548}, "retriever_resources": []}}`,
		`data: {"event": "workflow_finished", "task_id": "task123", "workflow_run_id": "wfr_abc123", "message_id": "msg123", "conversation_id": "conv123", "created_at": 1705395335, "data": {"id": "wfr_abc123", "workflow_id": "wf_def456", "status": "succeeded", "elapsed_time": 2.5, "total_tokens": 50, "total_steps": 2, "created_at": 1705395332, "finished_at": 1705395335}}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		for _, l := range lines {
			_, _ = w.Write([]byte(l + "\r\n\r\n"))
		}
	}))
	defer srv.Close()
	b, _ := newBackend(t, llm.Config{Type: llm.TypeDify, BaseURL: srv.URL, APIKey: "k"})
	var c collector
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	const want = "Here is the image: 你好 🚀"
	text, n := c.got()
	if res.Answer != want || text != want || n != 2 {
		t.Errorf("answer %q, emitted %q in %d deltas", res.Answer, text, n)
	}
	if res.ConversationID != "conv123" || res.MessageID != "msg123" ||
		res.Usage != (llm.Usage{PromptTokens: 1033, CompletionTokens: 135, TotalTokens: 1168}) {
		t.Errorf("result %+v", res)
	}
}

func TestConfigValidate(t *testing.T) {
	neg := float32(-1)
	tests := []struct {
		name string
		cfg  llm.Config
		want []string // substrings, all must appear
	}{
		{"ok dify", llm.Config{Type: "dify", APIKey: "app-x"}, nil},
		{"ok openai", llm.Config{Type: "openai", Model: "m", BaseURL: "http://localhost:11434/v1"}, nil},
		{"missing type", llm.Config{}, []string{"backends.kb.type: is required"}},
		{"everything wrong at once", llm.Config{Type: "dify", BaseURL: "ftp://x", DifyMode: "bogus", Model: "m",
			IdleTimeout: -1, RetryBase: -1},
			[]string{"backends.kb.base_url: must be an http or https URL", "backends.kb.api_key: is required",
				`backends.kb.dify_mode: must be`, "backends.kb.model: is not used by dify", "backends.kb.idle_timeout: must not be negative",
				"backends.kb.retry_base: must not be negative"}},
		{"openai", llm.Config{Type: "openai", Temperature: &neg, MaxTokens: -5, DifyMode: "chat", APIKey: " k"},
			[]string{"backends.kb.model: is required", "backends.kb.temperature: must be between 0 and 2",
				"backends.kb.max_tokens: must not be negative", "backends.kb.dify_mode: is only used by dify",
				"backends.kb.api_key: has leading or trailing spaces"}},
		{"idle beyond overall", llm.Config{Type: "dify", APIKey: "k", IdleTimeout: time.Minute, Timeout: time.Second},
			[]string{"backends.kb.idle_timeout: must not exceed timeout"}},
		{"workflow output needs workflow", llm.Config{Type: "dify", APIKey: "k", WorkflowOutput: "x"},
			[]string{"backends.kb.workflow_output: is only used with"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate("backends.kb")
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				// "key: english": the message is Chinese first, then English.
				key, en, _ := strings.Cut(w, ": ")
				found := false
				for _, line := range strings.Split(err.Error(), "\n") {
					found = found || (strings.HasPrefix(line, key+": ") && strings.Contains(line, "/ "+en))
				}
				if !found {
					t.Errorf("no line %q ... / %q ... in:\n%v", key, en, err)
				}
			}
			if got := strings.Count(err.Error(), "\n") + 1; got != len(tt.want) {
				t.Errorf("%d problems reported, want %d:\n%v", got, len(tt.want), err)
			}
			if _, nerr := llm.New(tt.cfg, nil, nil); nerr == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
}

// TestSlowEmitIsNotIdle blocks in emit for longer than the idle timeout
// (1s against 400ms):
// a slow consumer must not be mistaken for a silent server.
func TestSlowEmitIsNotIdle(t *testing.T) {
	for _, typ := range []string{llm.TypeDify, llm.TypeOpenAI} {
		t.Run(typ, func(t *testing.T) {
			var cfg llm.Config
			var push func(...llmtest.Script)
			if typ == llm.TypeDify {
				f := llmtest.NewDify()
				defer f.Close()
				cfg, push = difyConfig(f), f.Push
			} else {
				f := llmtest.NewOpenAI()
				defer f.Close()
				cfg, push = openAIConfig(f), f.Push
			}
			cfg.IdleTimeout, cfg.MaxRetries = 400*time.Millisecond, -1
			b, _ := newBackend(t, cfg)
			push(llmtest.Script{Answer: "aaaabbbb", Deltas: 2})
			c := collector{onEach: func(int) error { time.Sleep(time.Second); return nil }}
			res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, c.emit)
			if err != nil || res.Answer != "aaaabbbb" {
				t.Fatalf("res %+v, err %v", res, err)
			}
		})
	}
}

// TestServerReportedFailures covers failures that only raw streams show: a
// workflow that finishes as failed or pauses for a person, and an
// OpenRouter-style chunk with empty choices and a top-level error.
func TestServerReportedFailures(t *testing.T) {
	tests := []struct {
		name, typ, mode, body string
		wantCode              string
		wantPartial           string
	}{
		{"workflow failed", llm.TypeDify, llm.DifyModeWorkflow,
			`data: {"event": "text_chunk", "task_id": "t", "workflow_run_id": "r", "data": {"text": "Bon"}}` + "\n\n" +
				`data: {"event": "workflow_finished", "task_id": "t", "workflow_run_id": "r", "data": {"id": "r", "status": "failed", "error": "Node LLM run failed: timeout", "outputs": null}}` + "\n\n",
			"workflow_failed", "Bon"},
		{"workflow paused", llm.TypeDify, llm.DifyModeWorkflow,
			`data: {"event": "workflow_paused", "task_id": "t", "workflow_run_id": "r", "data": {}}` + "\n\n",
			"workflow_paused", ""},
		{"openrouter error chunk", llm.TypeOpenAI, "",
			`data: {"id":"x","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}` + "\n\n" +
				`data: {"id":"x","choices":[],"error":{"message":"Provider returned error","code":502}}` + "\n\n",
			"502", "Hi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			cfg := llm.Config{Type: tt.typ, BaseURL: srv.URL, APIKey: "k", DifyMode: tt.mode, MaxRetries: -1}
			if tt.typ == llm.TypeOpenAI {
				cfg.Model = "m"
			}
			b, _ := newBackend(t, cfg)
			res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q"}, (&collector{}).emit)
			var apiErr *llm.APIError
			if !errors.As(err, &apiErr) || apiErr.Code != tt.wantCode || !apiErr.MidStream {
				t.Fatalf("err = %v", err)
			}
			if tt.wantCode == "502" && (apiErr.Status != 502 || !apiErr.Temporary()) {
				t.Errorf("status %d, temporary %v", apiErr.Status, apiErr.Temporary())
			}
			if (tt.wantPartial == "") != (res == nil) || (res != nil && res.Answer != tt.wantPartial) {
				t.Errorf("result %+v", res)
			}
		})
	}
}
