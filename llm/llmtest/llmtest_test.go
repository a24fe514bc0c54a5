package llmtest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm"
)

// The verbatim lines below are copied from ../shared/docs/LLM.md; the fakes
// must produce them byte for byte given the same ids.
func TestDifyLinesVerbatim(t *testing.T) {
	chat := &difyStream{style: styleSpaced, endpoint: "chat", taskID: "mock_task_id",
		messageID: "5ad4cb98-f0c7-4085-b384-88c403be6290", convID: "45701982-8118-4bc5-8e9b-64562b4555f2", created: 1679586595}
	agent := &difyStream{style: styleSpaced, endpoint: "chat", taskID: "task123", messageID: "msg123", convID: "conv123", created: 1705395333}
	thought := *agent
	thought.created = 1705395332
	completion := &difyStream{style: styleSpaced, endpoint: "completion", taskID: "900bbd43-dc0b-4383-a372-aa6e6c414227",
		messageID: "5ad4cb98-f0c7-4085-b384-88c403be6290", created: 1679586595}
	workflow := &difyStream{style: styleSpaced, endpoint: "workflow", taskID: "c3800678-a077-43df-a102-53f23ed20b88",
		runID: "fb47b2e6-5e43-4f90-be01-d5c5a088d156", created: 1705407629}
	errLine := &difyStream{style: styleCompact, endpoint: "chat", convID: "6be173ed-fe4b-432a-9912-2346c41ed7a2",
		messageID: "53672972-4a49-42f1-8ea5-b42a47c3e60a", created: 1760611379}
	tests := []struct {
		name string
		got  object
		want string
	}{
		{"message", chat.messageObject("message", " I"),
			`{"event": "message", "task_id": "mock_task_id", "message_id": "5ad4cb98-f0c7-4085-b384-88c403be6290", "conversation_id": "45701982-8118-4bc5-8e9b-64562b4555f2", "answer": " I", "created_at": 1679586595}`},
		{"agent_message", agent.messageObject("agent_message", "Here is the image: "),
			`{"event": "agent_message", "task_id": "task123", "message_id": "msg123", "conversation_id": "conv123", "answer": "Here is the image: ", "created_at": 1705395333}`},
		{"agent_thought", thought.agentThoughtObject("agent_thought_id_1"),
			`{"event": "agent_thought", "id": "agent_thought_id_1", "task_id": "task123", "message_id": "msg123", "conversation_id": "conv123", "position": 1, "thought": "Thinking about calling a tool...", "tool": "dalle3", "tool_input": "{\"dalle3\": {\"prompt\": \"a cute cat\"}}", "created_at": 1705395332}`},
		{"completion message", completion.messageObject("message", " I"),
			`{"event": "message", "task_id": "900bbd43-dc0b-4383-a372-aa6e6c414227", "message_id": "5ad4cb98-f0c7-4085-b384-88c403be6290", "answer": " I", "created_at": 1679586595}`},
		{"text_chunk", workflow.textChunkObject("Bonjour"),
			`{"event": "text_chunk", "task_id": "c3800678-a077-43df-a102-53f23ed20b88", "workflow_run_id": "fb47b2e6-5e43-4f90-be01-d5c5a088d156", "data": {"text": "Bonjour", "from_variable_selector": ["node_1", "text"]}}`},
		{"workflow_finished", workflow.workflowFinishedObject("succeeded", object{{"result", "Bonjour le monde"}}, 150),
			`{"event": "workflow_finished", "task_id": "c3800678-a077-43df-a102-53f23ed20b88", "workflow_run_id": "fb47b2e6-5e43-4f90-be01-d5c5a088d156", "data": {"id": "fb47b2e6-5e43-4f90-be01-d5c5a088d156", "workflow_id": "7c3e33d4-2a8b-4e5f-9b1a-d3c6e8f12345", "status": "succeeded", "outputs": {"result": "Bonjour le monde"}, "elapsed_time": 1.23, "total_tokens": 150, "total_steps": 3, "created_at": 1705407629, "finished_at": 1705407630}}`},
		{"error (compact, Dify 1.9)", errLine.errorObject(400, "invalid_param", "Extra data: line 1 column 208 (char 207)"),
			`{"event":"error","conversation_id":"6be173ed-fe4b-432a-9912-2346c41ed7a2","message_id":"53672972-4a49-42f1-8ea5-b42a47c3e60a","created_at":1760611379,"code":"invalid_param","status":400,"message":"Extra data: line 1 column 208 (char 207)"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			style := styleSpaced
			if strings.HasPrefix(tt.want, `{"event":"`) {
				style = styleCompact
			}
			if got := render(style, tt.got); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestRenderEscaping(t *testing.T) {
	s := "你好 🚀 \"q\" \\ \n\t\x01 <&> \x7f é"
	if got, want := render(styleSpaced, s), `"\u4f60\u597d \ud83d\ude80 \"q\" \\ \n\t\u0001 <&> \u007f \u00e9"`; got != want {
		t.Errorf("spaced: got %s want %s", got, want)
	}
	if got, want := render(styleCompact, s), "\"你好 🚀 \\\"q\\\" \\\\ \\n\\t\\u0001 <&> \x7f é\""; got != want {
		t.Errorf("compact: got %s want %s", got, want)
	}
	if got := render(styleSpaced, object{{"latency", 1.0}, {"x", []any{}}}); got != `{"latency": 1.0, "x": []}` {
		t.Errorf("floats: %s", got)
	}
}

func TestOpenAIChunksVerbatim(t *testing.T) {
	s := &openAIStream{id: "chatcmpl-123", created: 1694268190, model: "gpt-4o-mini"}
	const prefix = `{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[`
	tests := []struct{ got, want string }{
		{s.chunk(choice(`{"role":"assistant","content":""}`, ""), ""), prefix + `{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`},
		{s.chunk(choice(`{"content":`+render(styleCompact, "Hello")+`}`, ""), ""), prefix + `{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}`},
		{s.chunk(choice(`{}`, "stop"), ""), prefix + `{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}`},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("chunk %d:\ngot  %s\nwant %s", i, tt.got, tt.want)
		}
	}
}

// readStream returns the raw body lines of one streamed answer.
func readStream(t *testing.T, url, key, body string) (int, []string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return resp.StatusCode, lines
}

func TestDifyWire(t *testing.T) {
	f := NewDify()
	defer f.Close()
	f.Push(Script{Answer: "ab", Deltas: 2, Pings: true})
	status, lines := readStream(t, f.URL()+"/chat-messages", "app-llmtest",
		`{"inputs": {}, "query": "hi", "response_mode": "streaming", "user": "u1"}`)
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	// data, blank, ping, blank, data, blank, ping, blank, message_end, blank
	if len(lines) != 10 || lines[2] != "event: ping" || lines[1] != "" || !strings.HasPrefix(lines[8], `data: {"event": "message_end"`) {
		t.Fatalf("lines %q", lines)
	}
	for _, i := range []int{0, 4} {
		if !strings.HasPrefix(lines[i], `data: {"event": "message", "task_id": "`) {
			t.Errorf("line %d: %s", i, lines[i])
		}
	}

	// Conversation errors, exactly as Dify renders them.
	status, lines = readStream(t, f.URL()+"/chat-messages", "app-llmtest",
		`{"inputs": {}, "query": "hi", "response_mode": "streaming", "user": "u1", "conversation_id": "45701982-8118-4bc5-8e9b-64562b4555f2"}`)
	if status != 404 || len(lines) != 1 || lines[0] != `{"code":"not_found","message":"Conversation Not Exists.","status":404}` {
		t.Errorf("unknown conversation: %d %q", status, lines)
	}
	status, lines = readStream(t, f.URL()+"/chat-messages", "app-llmtest",
		`{"inputs": {}, "query": "hi", "response_mode": "streaming", "user": "u1", "conversation_id": "nope"}`)
	if status != 400 || !strings.Contains(lines[0], "conversation_id must be a valid UUID") {
		t.Errorf("bad uuid: %d %q", status, lines)
	}
	status, lines = readStream(t, f.URL()+"/chat-messages", "app-llmtest", `{"query": "hi", "response_mode": "streaming", "user": "u1"}`)
	if status != 400 || !strings.Contains(lines[0], `"invalid_param"`) {
		t.Errorf("missing inputs: %d %q", status, lines)
	}
	status, lines = readStream(t, f.URL()+"/chat-messages", "wrong", `{}`)
	if status != 401 || lines[0] != `{"code":"unauthorized","message":"Access token is invalid","status":401}` {
		t.Errorf("bad key: %d %q", status, lines)
	}
	f.SetAPIKey("app-new")
	req, _ := http.NewRequest("GET", f.URL()+"/info", nil)
	req.Header.Set("Authorization", "Bearer app-new")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"mode":"chat"`) {
		t.Errorf("info with new key: %d %s", resp.StatusCode, body)
	}
}

func TestOpenAIWire(t *testing.T) {
	f := NewOpenAI()
	defer f.Close()
	f.Push(Script{Answer: "Hi", Deltas: 1, Pings: true, Reasoning: "hmm"})
	status, lines := readStream(t, f.URL()+"/chat/completions", "sk-llmtest",
		`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}`)
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	var data []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "data: "):
			data = append(data, strings.TrimPrefix(l, "data: "))
		case l != "" && l != ": keep-alive":
			t.Errorf("unexpected line %q", l)
		}
	}
	// role, reasoning, content, finish, usage, [DONE]
	if len(data) != 6 || data[5] != "[DONE]" {
		t.Fatalf("data lines %q", data)
	}
	mustHave := []string{`"delta":{"role":"assistant","content":""}`, `"reasoning_content":"hmm"`, `"delta":{"content":"Hi"}`,
		`"finish_reason":"stop"}],"usage":null}`, `"choices":[],"usage":{"prompt_tokens":`}
	for i, s := range mustHave {
		if !strings.Contains(data[i], s) {
			t.Errorf("line %d %s lacks %s", i, data[i], s)
		}
	}
	if !strings.Contains(strings.Join(lines, "\n"), ": keep-alive") {
		t.Error("no keep-alive")
	}
}

func TestBackend(t *testing.T) {
	b := NewBackend()
	ctx := context.Background()
	var got strings.Builder
	emit := func(d llm.Delta) error {
		if d.Replace {
			got.Reset()
		}
		got.WriteString(d.Text)
		return nil
	}
	res, err := b.Stream(ctx, llm.Request{App: "a", User: "u", Query: "q1"}, emit)
	if err != nil || res.Answer != "You asked: q1" || got.String() != res.Answer || res.ConversationID == "" {
		t.Fatalf("res %+v err %v", res, err)
	}
	if _, err := b.Stream(ctx, llm.Request{App: "a", User: "other", ConversationID: res.ConversationID, Query: "q"}, emit); !errors.Is(err, llm.ErrConversationNotFound) {
		t.Fatalf("foreign conversation: %v", err)
	}
	b.Push(Script{Answer: "aaaabbbb", Deltas: 2, ErrorAfter: 1}, Script{Status: 429}, Script{Answer: "x", Replace: "y", FinishReason: "length"})
	res, err = b.Stream(ctx, llm.Request{App: "a", User: "u", Query: "q"}, emit)
	var apiErr *llm.APIError
	if !errors.As(err, &apiErr) || res == nil || res.Answer != "aaaa" {
		t.Fatalf("mid-stream: %+v %v", res, err)
	}
	if res, err = b.Stream(ctx, llm.Request{App: "a", User: "u", Query: "q"}, emit); !errors.As(err, &apiErr) || apiErr.Status != 429 || res != nil {
		t.Fatalf("429: %+v %v", res, err)
	}
	got.Reset()
	res, err = b.Stream(ctx, llm.Request{App: "a", User: "u", Query: "q"}, emit)
	if err != nil || res.Answer != "y" || got.String() != "y" || !res.Truncated {
		t.Fatalf("replace: %+v %v %q", res, err, got.String())
	}
	b.Push(Script{Hang: true})
	hctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := b.Stream(hctx, llm.Request{User: "u", Query: "q"}, emit); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: %v", err)
	}
	if n := len(b.Requests()); n != 6 {
		t.Errorf("%d requests recorded", n)
	}
}

func TestSplitRunes(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want []string
	}{
		{"", 3, nil},
		{"ab", 3, []string{"a", "b"}},
		{"你好世界!", 2, []string{"你好世", "界!"}},
		{"abcdef", 1, []string{"abcdef"}},
	}
	for _, tt := range tests {
		if got := splitRunes(tt.s, tt.n); strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
			t.Errorf("splitRunes(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}
