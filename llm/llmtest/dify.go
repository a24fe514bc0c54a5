package llmtest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// DifyRequest is one question received by the Dify fake.
type DifyRequest struct {
	// Path is the request path, e.g. "/v1/chat-messages".
	Path string
	// User, Query, ConversationID and ResponseMode are the body fields.
	User, Query, ConversationID, ResponseMode string
	// Inputs is the inputs object; HasInputs reports whether the key was
	// present at all.
	Inputs    map[string]any
	HasInputs bool
	// Files is the question's "files" as received.
	Files []DifyFile
	// Attached are the uploads that reached the app after Dify's checks;
	// FilesDropped reports that Dify dropped the files without a word
	// because the app's file upload is off, as Dify does.
	Attached     []Upload
	FilesDropped bool
	// Body is the raw request body.
	Body []byte
}

// StopCall is one call to a Dify stop endpoint.
type StopCall struct {
	Path, TaskID, User string
}

// Dify is a fake Dify service API. It speaks the streaming wire format
// byte for byte (see ../shared/docs/LLM.md), checks the bearer key, keeps
// conversations per `user` as Dify does, and records what it received.
type Dify struct {
	srv  *httptest.Server
	q    queue
	done chan struct{}
	once sync.Once

	mu       sync.Mutex
	o        options
	requests []DifyRequest
	stops    []StopCall
	convs    map[string]string    // conversation id → owning user
	tasks    map[string]*difyTask // running task id → task

	fileUpload   FileUpload
	paramsBody   string
	uploads      map[string]*Upload // upload id → file
	uploadOrder  []string
	uploadLimits map[string]int64 // kind → bytes
	blockedExts  []string
	endUsers     map[string]string // API user → EndUser uuid
	messages     map[string]string // message id → user who asked
	feedbacks    []Feedback
}

// Feedback is one POST /messages/{id}/feedbacks the fake accepted.
type Feedback struct {
	MessageID, User, Rating, Content string
}

type difyTask struct {
	user string
	stop chan struct{}
	once sync.Once
}

// NewDify starts a fake Dify server. Call Close when done.
func NewDify(opts ...Option) *Dify {
	o := newOptions(opts)
	if o.apiKey == "" {
		o.apiKey = "app-llmtest"
	}
	d := &Dify{o: o, done: make(chan struct{}), convs: map[string]string{}, tasks: map[string]*difyTask{},
		fileUpload: FileUpload{Legacy: true}, uploads: map[string]*Upload{}, endUsers: map[string]string{},
		uploadLimits: map[string]int64{"image": difyImageLimitMB << 20, "audio": difyAudioLimitMB << 20,
			"video": difyVideoLimitMB << 20, "document": difyFileLimitMB << 20}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat-messages", d.serveAsk)
	mux.HandleFunc("POST /v1/completion-messages", d.serveAsk)
	mux.HandleFunc("POST /v1/workflows/run", d.serveAsk)
	mux.HandleFunc("POST /v1/chat-messages/{task_id}/stop", d.serveStop)
	mux.HandleFunc("POST /v1/completion-messages/{task_id}/stop", d.serveStop)
	mux.HandleFunc("POST /v1/workflows/tasks/{task_id}/stop", d.serveStop)
	mux.HandleFunc("GET /v1/info", d.serveInfo)
	mux.HandleFunc("GET /v1/parameters", d.serveParameters)
	mux.HandleFunc("POST /v1/files/upload", d.serveUpload)
	mux.HandleFunc("DELETE /v1/conversations/{id}", d.serveDelete)
	mux.HandleFunc("POST /v1/messages/{id}/feedbacks", d.serveFeedback)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		difyError(w, http.StatusNotFound, "not_found",
			"The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.", "")
	})
	d.srv = httptest.NewServer(mux)
	return d
}

// URL returns the API base URL, ending in /v1 like Dify's.
func (d *Dify) URL() string { return d.srv.URL + "/v1" }

// Close ends any stream still running and shuts the server down.
func (d *Dify) Close() {
	d.once.Do(func() {
		close(d.done)
		d.srv.CloseClientConnections()
		d.srv.Close()
	})
}

// SetAPIKey changes the accepted API key.
func (d *Dify) SetAPIKey(key string) {
	d.mu.Lock()
	d.o.apiKey = key
	d.mu.Unlock()
}

// SetApp changes the app name and mode (see WithApp).
func (d *Dify) SetApp(name, mode string) {
	d.mu.Lock()
	d.o.appName, d.o.appMode = name, mode
	d.mu.Unlock()
}

// Push queues scripts; each question consumes the next one.
func (d *Dify) Push(scripts ...Script) { d.q.push(scripts...) }

// Requests returns the questions received so far, in order, including
// rejected ones.
func (d *Dify) Requests() []DifyRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]DifyRequest(nil), d.requests...)
}

// StopCalls returns the stop calls received so far.
func (d *Dify) StopCalls() []StopCall {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]StopCall(nil), d.stops...)
}

// Conversations returns the ids of the conversations owned by user.
func (d *Dify) Conversations(user string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ids []string
	for id, owner := range d.convs {
		if owner == user {
			ids = append(ids, id)
		}
	}
	return ids
}

// DeleteConversation forgets a conversation, as if it had been deleted in
// the Dify console; later questions in it get 404 not_found.
func (d *Dify) DeleteConversation(id string) {
	d.mu.Lock()
	delete(d.convs, id)
	d.mu.Unlock()
}

func (d *Dify) opts() options {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.o
}

// difyError writes Dify's error envelope as flask-restx renders it.
func difyError(w http.ResponseWriter, status int, code, message, retryAfter string) {
	body := render(styleCompact, object{{"code", code}, {"message", message}, {"status", status}}) + "\n"
	writeJSON(w, status, body, retryAfter)
}

// difyErrorFor maps error codes to the status and message Dify sends.
func difyErrorFor(status int, code string) (int, string, string) {
	known := map[string]struct {
		status int
		msg    string
	}{
		"too_many_requests":           {429, "Too many requests. Please try again later."},
		"rate_limit_error":            {429, "Rate Limit Error"},
		"internal_server_error":       {500, "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application."},
		"unauthorized":                {401, "Access token is invalid"},
		"forbidden":                   {403, "The app's API service has been disabled."},
		"not_found":                   {404, "Conversation Not Exists."},
		"provider_quota_exceeded":     {400, "Your quota for Dify Hosted OpenAI has been exhausted. Please go to Settings -> Model Provider to complete your own provider credentials."},
		"provider_not_initialize":     {400, "No valid model provider credentials found. Please go to Settings -> Model Provider to complete your provider credentials."},
		"model_currently_not_support": {400, "Dify Hosted OpenAI trial currently not support the GPT-4 model."},
		"completion_request_error":    {400, "Completion request failed."},
		"app_unavailable":             {400, "App unavailable, please check your app configurations."},
		"conversation_completed":      {400, "The conversation has ended. Please start a new conversation."},
		"invalid_param":               {400, "Arg user must be provided."},
	}
	if code == "" {
		switch {
		case status == 429:
			code = "too_many_requests"
		case status == 401:
			code = "unauthorized"
		case status == 403:
			code = "forbidden"
		case status == 404:
			code = "not_found"
		case status >= 500:
			code = "internal_server_error"
		default:
			code = "completion_request_error"
		}
	}
	k, ok := known[code]
	if !ok {
		k.msg = "llmtest: scripted error"
		k.status = 400
	}
	if status == 0 {
		status = k.status
	}
	return status, code, k.msg
}

func (d *Dify) authorized(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok {
		difyError(w, 401, "unauthorized", "Authorization header must be provided and start with 'Bearer'", "")
		return false
	}
	if !strings.EqualFold(scheme, "bearer") {
		difyError(w, 401, "unauthorized", "Authorization scheme must be 'Bearer'", "")
		return false
	}
	if token != d.opts().apiKey {
		difyError(w, 401, "unauthorized", "Access token is invalid", "")
		return false
	}
	return true
}

func (d *Dify) serveAsk(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var in struct {
		Inputs         *map[string]any `json:"inputs"`
		Query          *string         `json:"query"`
		User           string          `json:"user"`
		ConversationID string          `json:"conversation_id"`
		ResponseMode   string          `json:"response_mode"`
		Files          json.RawMessage `json:"files"`
	}
	decErr := json.Unmarshal(body, &in)
	rec := DifyRequest{Path: r.URL.Path, User: in.User, ConversationID: in.ConversationID,
		ResponseMode: in.ResponseMode, HasInputs: in.Inputs != nil, Body: body}
	if in.Inputs != nil {
		rec.Inputs = *in.Inputs
	}
	if in.Query != nil {
		rec.Query = *in.Query
	}
	_ = json.Unmarshal(in.Files, &rec.Files)
	d.mu.Lock()
	d.requests = append(d.requests, rec)
	idx := len(d.requests) - 1
	d.mu.Unlock()

	if !d.authorized(w, r) {
		return
	}
	o := d.opts()
	endpoint := map[string]string{
		"/v1/chat-messages": "chat", "/v1/completion-messages": "completion", "/v1/workflows/run": "workflow",
	}[r.URL.Path]
	appKind := o.appMode
	switch appKind {
	case "agent-chat", "advanced-chat", "agent":
		appKind = "chat"
	}
	if endpoint != appKind {
		code := map[string]string{"chat": "not_chat_app", "completion": "app_unavailable", "workflow": "not_workflow_app"}[endpoint]
		msg := "Please check if your app mode matches the right API route."
		if code == "app_unavailable" {
			msg = "App unavailable, please check your app configurations."
		}
		difyError(w, 400, code, msg, "")
		return
	}
	switch {
	case decErr != nil:
		difyError(w, 400, "invalid_param", "Failed to decode JSON object: "+decErr.Error(), "")
		return
	case in.User == "":
		difyError(w, 400, "invalid_param", "Arg user must be provided.", "")
		return
	case in.Inputs == nil:
		difyError(w, 400, "invalid_param", "inputs: Field required", "")
		return
	case endpoint == "chat" && in.Query == nil:
		difyError(w, 400, "invalid_param", "query: Field required", "")
		return
	case in.ResponseMode != "streaming":
		difyError(w, 400, "bad_request", "llmtest: only response_mode streaming is faked", "")
		return
	}

	convID := ""
	if endpoint == "chat" {
		convID = strings.TrimSpace(in.ConversationID)
		if convID != "" {
			if !isUUID(convID) {
				difyError(w, 400, "invalid_param", "conversation_id must be a valid UUID", "")
				return
			}
			d.mu.Lock()
			owner, ok := d.convs[convID]
			d.mu.Unlock()
			if !ok || owner != in.User {
				difyError(w, 404, "not_found", "Conversation Not Exists.", "")
				return
			}
		}
	}

	_, attached, dropped, fileMsg := d.checkFiles(in.User, in.Files)
	d.mu.Lock()
	d.requests[idx].Attached, d.requests[idx].FilesDropped = attached, dropped
	d.mu.Unlock()
	if fileMsg != "" {
		difyError(w, 400, "invalid_param", fileMsg, "")
		return
	}

	sc := d.q.pop()
	if sc.Status != 0 {
		status, code, msg := difyErrorFor(sc.Status, sc.Code)
		if status >= 502 && status <= 504 {
			// A gateway in front of Dify answers with HTML, not JSON.
			w.Header().Set("Content-Type", "text/html")
			if sc.RetryAfter != "" {
				w.Header().Set("Retry-After", sc.RetryAfter)
			}
			w.WriteHeader(status)
			_, _ = io.WriteString(w, "<html>\r\n<head><title>"+http.StatusText(status)+"</title></head>\r\n<body>\r\n<center><h1>"+http.StatusText(status)+"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
			return
		}
		difyError(w, status, code, msg, sc.RetryAfter)
		return
	}
	if !wait(r.Context(), d.done, sc.FirstByteDelay) {
		return
	}
	if sc.Hang {
		select {
		case <-r.Context().Done():
		case <-d.done:
		}
		return
	}
	answer := sc.Answer
	if answer == "" {
		q := rec.Query
		if q == "" {
			if v, ok := rec.Inputs["query"].(string); ok {
				q = v
			}
		}
		answer = "You asked: " + q
	}
	if endpoint == "chat" && convID == "" {
		convID = newUUID()
		d.mu.Lock()
		d.convs[convID] = in.User
		d.mu.Unlock()
	}
	task := &difyTask{user: in.User, stop: make(chan struct{})}
	taskID := newUUID()
	d.mu.Lock()
	d.tasks[taskID] = task
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.tasks, taskID)
		d.mu.Unlock()
	}()

	messageID := newUUID()
	d.mu.Lock()
	if d.messages == nil {
		d.messages = map[string]string{}
	}
	d.messages[messageID] = in.User
	d.mu.Unlock()
	st := &difyStream{
		w: newSSEWriter(w, "text/event-stream; charset=utf-8"), style: styleSpaced, sc: sc, answer: answer,
		endpoint: endpoint, mode: o.appMode, taskID: taskID, messageID: messageID, runID: newUUID(),
		convID: convID, created: time.Now().Unix(), query: rec.Query,
	}
	if o.compact {
		st.style = styleCompact
	}
	st.run(r, d.done, task.stop)
}

// difyStream writes one scripted answer as Dify events.
type difyStream struct {
	w                                *sseWriter
	style                            jsonStyle
	sc                               Script
	answer, query                    string
	endpoint, mode                   string
	taskID, messageID, runID, convID string
	created                          int64
}

func (s *difyStream) send(o object) { s.w.data(render(s.style, o)) }

// head is the fields every chat-family event starts with.
func (s *difyStream) head(event string) object {
	o := object{{"event", event}, {"task_id", s.taskID}, {"message_id", s.messageID}}
	if s.endpoint == "chat" {
		o = append(o, field{"conversation_id", s.convID})
	}
	return o
}

func (s *difyStream) workflowEvent(event string, data object) object {
	o := object{{"event", event}, {"task_id", s.taskID}, {"workflow_run_id", s.runID}}
	if s.endpoint == "chat" {
		o = append(o, field{"message_id", s.messageID}, field{"conversation_id", s.convID}, field{"created_at", s.created})
	}
	return append(o, field{"data", data})
}

func (s *difyStream) errorEvent() {
	status, code, msg := difyErrorFor(0, s.sc.Code)
	if s.sc.Code == "" {
		status, code, msg = 400, "completion_request_error",
			"[openai_api_compatible] Error: PluginInvokeError: {\"args\":{},\"error_type\":\"InvokeServerUnavailableError\",\"message\":\"Server Unavailable Error\"}"
	}
	s.send(s.errorObject(status, code, msg))
}

// errorObject is the mid-stream error event. It has no task_id.
func (s *difyStream) errorObject(status int, code, msg string) object {
	o := object{{"event", "error"}}
	if s.endpoint == "workflow" {
		o = append(o, field{"workflow_run_id", s.runID})
	} else {
		if s.endpoint == "chat" {
			o = append(o, field{"conversation_id", s.convID})
		}
		o = append(o, field{"message_id", s.messageID})
	}
	return append(o, field{"created_at", s.created}, field{"code", code}, field{"status", status}, field{"message", msg})
}

// messageObject is a message, agent_message or message_replace event.
func (s *difyStream) messageObject(event, answer string) object {
	return append(s.head(event), field{"answer", answer}, field{"created_at", s.created})
}

func (s *difyStream) textChunkObject(text string) object {
	return object{{"event", "text_chunk"}, {"task_id", s.taskID}, {"workflow_run_id", s.runID},
		{"data", object{{"text", text}, {"from_variable_selector", []string{"node_1", "text"}}}}}
}

func (s *difyStream) agentThoughtObject(id string) object {
	return object{{"event", "agent_thought"}, {"id", id}, {"task_id", s.taskID}, {"message_id", s.messageID},
		{"conversation_id", s.convID}, {"position", 1}, {"thought", "Thinking about calling a tool..."},
		{"tool", "dalle3"}, {"tool_input", `{"dalle3": {"prompt": "a cute cat"}}`}, {"created_at", s.created}}
}

func (s *difyStream) workflowFinishedObject(status string, outputs object, tokens int) object {
	return object{{"event", "workflow_finished"}, {"task_id", s.taskID}, {"workflow_run_id", s.runID},
		{"data", object{{"id", s.runID}, {"workflow_id", "7c3e33d4-2a8b-4e5f-9b1a-d3c6e8f12345"}, {"status", status},
			{"outputs", outputs}, {"elapsed_time", 1.23}, {"total_tokens", tokens}, {"total_steps", 3},
			{"created_at", s.created}, {"finished_at", s.created + 1}}}}
}

func (s *difyStream) run(r *http.Request, done, stop <-chan struct{}) {
	ctx := r.Context()
	sc := s.sc
	parts := sc.parts(s.answer)
	if sc.CutAfter < 0 {
		cut()
	}
	if sc.ErrorAfter < 0 {
		s.errorEvent()
		return
	}
	deltaEvent := "message"
	switch {
	case s.endpoint == "workflow":
		deltaEvent = "text_chunk"
		s.send(s.workflowEvent("workflow_started", object{{"id", s.runID}, {"workflow_id", "7c3e33d4-2a8b-4e5f-9b1a-d3c6e8f12345"},
			{"inputs", object{{"query", s.query}}}, {"created_at", s.created}}))
		s.send(s.workflowEvent("node_started", object{{"id", "ne_001"}, {"node_id", "node_llm_1"}, {"node_type", "llm"},
			{"title", "LLM"}, {"index", 1}, {"created_at", s.created}}))
	case s.mode == "advanced-chat":
		s.send(s.workflowEvent("workflow_started", object{{"id", s.runID}, {"workflow_id", "wf_def456"}, {"inputs", object{}}, {"created_at", s.created}}))
		s.send(s.workflowEvent("node_started", object{{"id", "ne_001"}, {"node_id", "node_llm_1"}, {"node_type", "llm"},
			{"title", "LLM"}, {"index", 1}, {"created_at", s.created}}))
	case s.mode == "agent-chat" || s.mode == "agent":
		deltaEvent = "agent_message"
		s.send(s.agentThoughtObject(newUUID()))
	}
	for i, p := range parts {
		if sc.CutAfter > 0 && i == sc.CutAfter {
			cut()
		}
		if sc.ErrorAfter > 0 && i == sc.ErrorAfter {
			s.errorEvent()
			return
		}
		if deltaEvent == "text_chunk" {
			s.send(s.textChunkObject(p))
		} else {
			s.send(s.messageObject(deltaEvent, p))
		}
		if sc.Pings {
			s.w.rawLine("event: ping\n\n")
		}
		if !wait(ctx, done, sc.DeltaDelay) {
			return
		}
		select {
		case <-stop:
			// Stopped by the API: Dify ends the reply as usual.
			s.finish(true)
			return
		default:
		}
	}
	if sc.CutAfter > 0 && sc.CutAfter >= len(parts) {
		cut()
	}
	if sc.ErrorAfter > 0 && sc.ErrorAfter >= len(parts) {
		s.errorEvent()
		return
	}
	if sc.Replace != "" && s.endpoint != "workflow" {
		s.send(s.messageObject("message_replace", sc.Replace))
	}
	s.finish(false)
}

func (s *difyStream) finish(stopped bool) {
	sc := s.sc
	prompt, completion := sc.PromptTokens, sc.CompletionTokens
	if prompt == 0 {
		prompt = estimateTokens(s.query) + 20
	}
	if completion == 0 {
		completion = estimateTokens(s.answer)
	}
	if s.endpoint == "workflow" {
		outputs := object{{"result", s.answer}}
		if sc.Outputs != nil {
			outputs = object{}
			for _, o := range sc.Outputs {
				outputs = append(outputs, field{o.Name, o.Value})
			}
		}
		status := "succeeded"
		if stopped {
			status = "stopped"
		}
		s.send(object{{"event", "node_finished"}, {"task_id", s.taskID}, {"workflow_run_id", s.runID},
			{"data", object{{"id", "ne_001"}, {"node_id", "node_llm_1"}, {"node_type", "llm"}, {"title", "LLM"},
				{"index", 1}, {"status", "succeeded"}, {"elapsed_time", 1.5}, {"created_at", s.created}, {"finished_at", s.created + 1}}}})
		s.send(s.workflowFinishedObject(status, outputs, prompt+completion))
		return
	}
	usage := object{
		{"prompt_tokens", prompt}, {"prompt_unit_price", "0.001"}, {"prompt_price_unit", "0.001"}, {"prompt_price", "0.0010330"},
		{"completion_tokens", completion}, {"completion_unit_price", "0.002"}, {"completion_price_unit", "0.001"},
		{"completion_price", "0.0002700"}, {"total_tokens", prompt + completion}, {"total_price", "0.0013030"},
		{"currency", "USD"}, {"latency", 1.381760165997548},
	}
	if s.mode == "advanced-chat" {
		s.send(s.workflowEvent("node_finished", object{{"id", "ne_001"}, {"node_id", "node_llm_1"}, {"node_type", "llm"},
			{"title", "LLM"}, {"index", 1}, {"status", "succeeded"}, {"elapsed_time", 1.5}, {"created_at", s.created},
			{"finished_at", s.created + 2}}))
	}
	s.send(append(s.head("message_end"), field{"created_at", s.created},
		field{"metadata", object{{"usage", usage}, {"retriever_resources", []any{}}}}))
	if s.mode == "advanced-chat" {
		status := "succeeded"
		if stopped {
			status = "stopped"
		}
		s.send(s.workflowEvent("workflow_finished", object{{"id", s.runID}, {"workflow_id", "wf_def456"}, {"status", status},
			{"elapsed_time", 2.5}, {"total_tokens", prompt + completion}, {"total_steps", 2},
			{"created_at", s.created}, {"finished_at", s.created + 3}}))
	}
}

func (d *Dify) serveStop(w http.ResponseWriter, r *http.Request) {
	if !d.authorized(w, r) {
		return
	}
	var in struct {
		User string `json:"user"`
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	_ = json.Unmarshal(body, &in)
	taskID := r.PathValue("task_id")
	d.mu.Lock()
	d.stops = append(d.stops, StopCall{Path: r.URL.Path, TaskID: taskID, User: in.User})
	task := d.tasks[taskID]
	d.mu.Unlock()
	if in.User == "" && !strings.HasPrefix(r.URL.Path, "/v1/workflows/") {
		difyError(w, 400, "invalid_param", "Arg user must be provided.", "")
		return
	}
	// As in Dify, a stop from another user silently does nothing.
	if task != nil && (task.user == in.User || strings.HasPrefix(r.URL.Path, "/v1/workflows/")) {
		task.once.Do(func() { close(task.stop) })
	}
	writeJSON(w, 200, render(styleCompact, object{{"result", "success"}})+"\n", "")
}

func (d *Dify) serveInfo(w http.ResponseWriter, r *http.Request) {
	if !d.authorized(w, r) {
		return
	}
	o := d.opts()
	writeJSON(w, 200, render(styleCompact, object{{"name", o.appName}, {"description", "llmtest fake app"},
		{"tags", []string{}}, {"mode", o.appMode}, {"author_name", "llmtest"}})+"\n", "")
}

// Feedbacks returns the message feedback received, in order.
func (d *Dify) Feedbacks() []Feedback {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Feedback(nil), d.feedbacks...)
}

// serveFeedback is Dify's message feedback: the message must exist and
// belong to the same user (404 "Message Not Exists." otherwise); rating is
// "like", "dislike" or null.
func (d *Dify) serveFeedback(w http.ResponseWriter, r *http.Request) {
	if !d.authorized(w, r) {
		return
	}
	var in struct {
		User    string  `json:"user"`
		Rating  *string `json:"rating"`
		Content string  `json:"content"`
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err := json.Unmarshal(bytes.TrimSpace(body), &in); err != nil || in.User == "" {
		difyError(w, http.StatusBadRequest, "invalid_param", "user is required", "")
		return
	}
	rating := ""
	if in.Rating != nil {
		rating = *in.Rating
		if rating != "like" && rating != "dislike" {
			difyError(w, http.StatusBadRequest, "invalid_param", "rating must be like, dislike or null", "")
			return
		}
	}
	id := r.PathValue("id")
	d.mu.Lock()
	owner, ok := d.messages[id]
	if !ok || owner != in.User {
		d.mu.Unlock()
		difyError(w, http.StatusNotFound, "not_found", "Message Not Exists.", "")
		return
	}
	d.feedbacks = append(d.feedbacks, Feedback{MessageID: id, User: in.User, Rating: rating, Content: in.Content})
	d.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"result":"success"}`))
}

func (d *Dify) serveDelete(w http.ResponseWriter, r *http.Request) {
	if !d.authorized(w, r) {
		return
	}
	var in struct {
		User string `json:"user"`
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	_ = json.Unmarshal(bytes.TrimSpace(body), &in)
	id := r.PathValue("id")
	d.mu.Lock()
	owner, ok := d.convs[id]
	if ok && owner == in.User {
		delete(d.convs, id)
	}
	d.mu.Unlock()
	if !ok || owner != in.User {
		difyError(w, 404, "not_found", "Conversation Not Exists.", "")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
