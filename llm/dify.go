package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// dify talks to the Dify service API over net/http.
type dify struct {
	cfg Config
	hc  *http.Client
	log *slog.Logger

	capsMu sync.Mutex
	caps   *FileCaps // last GET /parameters answer
	capsAt time.Time
}

var (
	_ Backend = (*dify)(nil)
	_ Checker = (*dify)(nil)
)

func newDify(cfg Config, hc *http.Client, log *slog.Logger) *dify {
	return &dify{cfg: cfg, hc: hc, log: log}
}

// endUser is the stable Dify `user` for a request: app and WeCom userid, so
// the same person in two apps has two identities.
func endUser(req Request) string {
	if req.App == "" {
		return req.User
	}
	return req.App + ":" + req.User
}

func checkRequest(req Request) error {
	var errs []error
	if req.User == "" {
		errs = append(errs, errors.New("llm: request: user is required"))
	}
	if strings.TrimSpace(req.Query) == "" {
		errs = append(errs, errors.New("llm: request: query is empty"))
	}
	return errors.Join(errs...)
}

// Stream implements Backend.
func (d *dify) Stream(ctx context.Context, req Request, emit func(Delta) error) (*Result, error) {
	if err := checkRequest(req); err != nil {
		return nil, err
	}
	files, err := d.attach(ctx, req)
	if err != nil {
		return nil, err
	}
	body, err := d.requestBody(req, files)
	if err != nil {
		return nil, err
	}
	res, err := retryLoop(ctx, d.cfg, d.log, func(ctx context.Context) (*Result, bool, error) {
		return d.once(ctx, req, body, emit)
	})
	return res, scrub(err, d.cfg.APIKey)
}

func (d *dify) path() string {
	switch d.cfg.DifyMode {
	case DifyModeWorkflow:
		return "/workflows/run"
	case DifyModeCompletion:
		return "/completion-messages"
	}
	return "/chat-messages"
}

func (d *dify) stopPath(taskID string) string {
	id := url.PathEscape(taskID)
	switch d.cfg.DifyMode {
	case DifyModeWorkflow:
		return "/workflows/tasks/" + id + "/stop"
	case DifyModeCompletion:
		return "/completion-messages/" + id + "/stop"
	}
	return "/chat-messages/" + id + "/stop"
}

func (d *dify) requestBody(req Request, files []difyFileRef) ([]byte, error) {
	inputs := make(map[string]any, len(req.Inputs)+1)
	for k, v := range req.Inputs {
		inputs[k] = v
	}
	body := map[string]any{
		"inputs":        inputs,
		"response_mode": "streaming",
		"user":          endUser(req),
	}
	if len(files) > 0 {
		body["files"] = files
	}
	switch d.cfg.DifyMode {
	case DifyModeChat:
		body["query"] = req.Query
		body["conversation_id"] = req.ConversationID
	case DifyModeCompletion:
		body["query"] = req.Query
		if _, ok := inputs[d.cfg.QueryInput]; !ok {
			inputs[d.cfg.QueryInput] = req.Query
		}
	case DifyModeWorkflow:
		if _, ok := inputs[d.cfg.QueryInput]; !ok {
			inputs[d.cfg.QueryInput] = req.Query
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("llm: dify: encode request: %w", err)
	}
	return b, nil
}

// difyEvent holds the fields of any Dify stream event that we use.
type difyEvent struct {
	Event          string          `json:"event"`
	TaskID         string          `json:"task_id"`
	ID             string          `json:"id"`
	MessageID      string          `json:"message_id"`
	ConversationID string          `json:"conversation_id"`
	Answer         string          `json:"answer"`
	Code           string          `json:"code"`
	Message        string          `json:"message"`
	Status         json.RawMessage `json:"status"`
	Metadata       struct {
		Usage difyUsage `json:"usage"`
	} `json:"metadata"`
	Data json.RawMessage `json:"data"`
}

type difyUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// difyWorkflowData is the payload of text_chunk and workflow_finished.
type difyWorkflowData struct {
	Text        string          `json:"text"`
	Status      string          `json:"status"`
	Error       string          `json:"error"`
	Outputs     json.RawMessage `json:"outputs"`
	TotalTokens int             `json:"total_tokens"`
}

// difyStream is the state of one attempt.
type difyStream struct {
	d       *dify
	watch   *idleWatch // nil in benchmarks
	emit    func(Delta) error
	res     Result
	answer  strings.Builder
	deltas  int
	emitted bool
	taskID  string
	done    bool
	hadConv bool
}

func (s *difyStream) send(delta Delta) error {
	s.emitted = true
	if s.watch != nil {
		s.watch.pause()
		defer s.watch.kick()
	}
	if err := s.emit(delta); err != nil {
		return &emitError{err: err}
	}
	return nil
}

func (d *dify) once(ctx context.Context, req Request, body []byte, emit func(Delta) error) (*Result, bool, error) {
	actx, watch := newIdleWatch(ctx, d.cfg.IdleTimeout)
	defer watch.stop()

	hreq, err := http.NewRequestWithContext(actx, http.MethodPost, d.cfg.BaseURL+d.path(), bytes.NewReader(body))
	if err != nil {
		return nil, false, fmt.Errorf("llm: dify: build request: %w", err)
	}
	hreq.Header.Set("Authorization", "Bearer "+d.cfg.APIKey)
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "text/event-stream")
	resp, err := d.hc.Do(hreq)
	if err != nil {
		return nil, false, attemptError(TypeDify, actx, err)
	}
	defer resp.Body.Close()
	watch.kick()
	if resp.StatusCode != http.StatusOK {
		return nil, false, apiErrorFromResponse(TypeDify, resp, d.cfg.APIKey, req.ConversationID != "")
	}

	s := &difyStream{d: d, watch: watch, emit: emit, hadConv: req.ConversationID != ""}
	s.res.ConversationID = req.ConversationID
	err = s.read(newSSEReader(&activityBody{ReadCloser: resp.Body, w: watch}, 0))
	s.res.Answer = s.answer.String()
	if err == nil {
		return &s.res, s.emitted, nil
	}
	var apiErr *APIError
	var ee *emitError
	switch {
	case errors.As(err, &apiErr):
		// The server reported the failure and ended the task itself.
		return &s.res, s.emitted, err
	case errors.As(err, &ee):
	case errors.Is(err, ErrEventTooLarge):
		err = wrap(TypeDify, err)
	case errors.Is(err, io.EOF):
		err = wrap(TypeDify, ErrIncompleteStream)
	default:
		err = attemptError(TypeDify, actx, err)
	}
	if s.taskID != "" {
		// We are abandoning a running task: tell Dify to stop generating
		// (and billing) it.
		d.stop(ctx, s.taskID, endUser(req))
	}
	return &s.res, s.emitted, err
}

// emitError wraps an error returned by the caller's emit function.
type emitError struct{ err error }

func (e *emitError) Error() string { return "llm: emit: " + e.err.Error() }
func (e *emitError) Unwrap() error { return e.err }

// stop asks Dify to stop a task, with its own short deadline so that it
// works after the caller's context has ended. Failures are only logged.
func (d *dify) stop(ctx context.Context, taskID, user string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	body, _ := json.Marshal(map[string]string{"user": user})
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, d.cfg.BaseURL+d.stopPath(taskID), bytes.NewReader(body))
	if err != nil {
		d.log.Warn("dify stop: build request", "task_id", taskID, "err", err)
		return
	}
	hreq.Header.Set("Authorization", "Bearer "+d.cfg.APIKey)
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := d.hc.Do(hreq)
	if err != nil {
		d.log.Warn("dify stop failed", "task_id", taskID, "err", scrub(err, d.cfg.APIKey))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		apiErr := apiErrorFromResponse(TypeDify, resp, d.cfg.APIKey, false)
		d.log.Warn("dify stop failed", "task_id", taskID, "status", resp.StatusCode, "err", apiErr)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	d.log.Debug("dify task stopped", "task_id", taskID)
}

// read consumes events until a terminal one (nil error, s.done set), an
// error event (*APIError), an emit failure (*emitError) or a read error
// (io.EOF when the stream ended early).
func (s *difyStream) read(r *sseReader) error {
	for {
		raw, err := r.next()
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(raw.Data)) == 0 {
			continue
		}
		var ev difyEvent
		if err := json.Unmarshal(raw.Data, &ev); err != nil {
			// One malformed event should not sink the answer.
			s.d.log.Debug("dify: skipping undecodable event", "err", err, "bytes", len(raw.Data))
			continue
		}
		if ev.TaskID != "" {
			s.taskID = ev.TaskID
		}
		if ev.ConversationID != "" && s.d.cfg.DifyMode == DifyModeChat {
			s.res.ConversationID = ev.ConversationID
		}
		if ev.MessageID != "" {
			s.res.MessageID = ev.MessageID
		}
		if err := s.handle(&ev); err != nil {
			return err
		}
		if s.done {
			return nil
		}
	}
}

func (s *difyStream) handle(ev *difyEvent) error {
	switch ev.Event {
	case "message", "agent_message":
		if ev.Answer == "" {
			return nil
		}
		// "New Agent" apps close with a message that repeats the whole
		// answer; treat an exact repeat after several deltas as final text.
		if s.deltas >= 2 && ev.Answer == s.answer.String() {
			return nil
		}
		s.deltas++
		s.answer.WriteString(ev.Answer)
		return s.send(Delta{Text: ev.Answer})
	case "message_replace":
		s.answer.Reset()
		s.answer.WriteString(ev.Answer)
		return s.send(Delta{Text: ev.Answer, Replace: true})
	case "message_end":
		if ev.ID != "" && s.res.MessageID == "" {
			s.res.MessageID = ev.ID
		}
		u := ev.Metadata.Usage
		s.res.Usage = Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
		if s.d.cfg.DifyMode != DifyModeWorkflow {
			s.done = true
		}
		return nil
	case "error":
		e := &APIError{Backend: TypeDify, Code: ev.Code, MidStream: true,
			Message: redact(ev.Message, s.d.cfg.APIKey)}
		e.Status, _ = strconv.Atoi(jsonText(ev.Status))
		e.classify(s.hadConv)
		return e
	case "text_chunk":
		if s.d.cfg.DifyMode != DifyModeWorkflow {
			return nil
		}
		var data difyWorkflowData
		if json.Unmarshal(ev.Data, &data) != nil || data.Text == "" {
			return nil
		}
		s.deltas++
		s.answer.WriteString(data.Text)
		return s.send(Delta{Text: data.Text})
	case "workflow_finished":
		if s.d.cfg.DifyMode != DifyModeWorkflow {
			// In chatflows the answer arrives as message events and a
			// failure is followed by an error event.
			return nil
		}
		return s.finishWorkflow(ev)
	case "workflow_paused":
		if s.d.cfg.DifyMode != DifyModeWorkflow {
			return nil
		}
		return &APIError{Backend: TypeDify, Code: "workflow_paused", MidStream: true,
			Message: "the workflow paused for human input, which the bridge cannot provide",
			Hint:    "remove the Human Input node from the app"}
	}
	// ping data, agent_thought, message_file, node and iteration events,
	// tts and anything new: nothing to show.
	return nil
}

func (s *difyStream) finishWorkflow(ev *difyEvent) error {
	var data difyWorkflowData
	if err := json.Unmarshal(ev.Data, &data); err != nil {
		return &APIError{Backend: TypeDify, Code: "bad_event", MidStream: true,
			Message: "workflow_finished event without a readable data object"}
	}
	s.res.Usage.TotalTokens = data.TotalTokens
	switch data.Status {
	case "", "succeeded", "partial-succeeded":
	default:
		return &APIError{Backend: TypeDify, Code: "workflow_" + data.Status, MidStream: true,
			Message: redact(data.Error, s.d.cfg.APIKey)}
	}
	final, found := workflowOutput(data.Outputs, s.d.cfg.WorkflowOutput)
	streamed := s.answer.String()
	s.done = true
	switch {
	case !found:
		if s.d.cfg.WorkflowOutput != "" {
			s.d.log.Warn("dify workflow output not found; using the streamed text",
				"workflow_output", s.d.cfg.WorkflowOutput)
		}
		return nil
	case final == streamed:
		return nil
	case streamed == "":
		s.answer.WriteString(final)
		return s.send(Delta{Text: final})
	default:
		s.answer.Reset()
		s.answer.WriteString(final)
		return s.send(Delta{Text: final, Replace: true})
	}
}

// workflowOutput picks the answer from workflow outputs: the named variable
// (as text, or as JSON when it is not a string), or else the first string
// output in document order.
func workflowOutput(outputs json.RawMessage, name string) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(outputs))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		key, _ := tok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return "", false
		}
		var str string
		isString := json.Unmarshal(val, &str) == nil
		if name == "" && isString {
			return str, true
		}
		if name != "" && key == name {
			if isString {
				return str, true
			}
			return string(val), true
		}
	}
	return "", false
}

// get makes one GET of the app API (within idle_timeout) and returns at
// most limit bytes of a 200 answer; anything else is an *APIError.
func (d *dify) get(ctx context.Context, path string, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, d.cfg.IdleTimeout, &timeoutError{sentinel: ErrTimeout, after: d.cfg.IdleTimeout})
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, d.cfg.BaseURL+path, nil)
	if err != nil {
		return nil, fmt.Errorf("llm: dify: build request: %w", err)
	}
	hreq.Header.Set("Authorization", "Bearer "+d.cfg.APIKey)
	resp, err := d.hc.Do(hreq)
	if err != nil {
		return nil, attemptError(TypeDify, ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, apiErrorFromResponse(TypeDify, resp, d.cfg.APIKey, false)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, attemptError(TypeDify, ctx, err)
	}
	return body, nil
}

// Check implements Checker: it reads GET /info and confirms the app type
// matches dify_mode.
func (d *dify) Check(ctx context.Context) (*Info, error) {
	info, err := d.check(ctx)
	return info, scrub(err, d.cfg.APIKey)
}

func (d *dify) check(ctx context.Context) (*Info, error) {
	data, err := d.get(ctx, "/info", maxErrorBody)
	if err != nil {
		return nil, err
	}
	var body struct {
		Name string `json:"name"`
		Mode string `json:"mode"`
	}
	if err := json.Unmarshal(data, &body); err != nil {
		return nil, &APIError{Backend: TypeDify, Status: http.StatusOK, Code: "bad_response",
			Message: "GET /info did not return JSON", Hint: "check base_url (it usually ends in /v1)", kind: ErrEndpointNotFound}
	}
	info := &Info{Name: body.Name, Mode: body.Mode}
	if want := normDifyMode(body.Mode); body.Mode != "" && want != "" && want != d.cfg.DifyMode {
		return info, &APIError{Backend: TypeDify, Code: "wrong_app_mode",
			Message: fmt.Sprintf("app %q is a %s app but dify_mode is %q", body.Name, body.Mode, d.cfg.DifyMode),
			Hint:    fmt.Sprintf("set dify_mode = %q", want), kind: ErrWrongAppMode}
	}
	return info, nil
}
