package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxErrorBody bounds how much of an HTTP error body is read.
const maxErrorBody = 64 << 10

// idleWatch cancels its context when no activity is reported for d. The
// cause is an ErrIdleTimeout error, so callers can tell an idle stream from
// a caller cancellation.
type idleWatch struct {
	d      time.Duration
	timer  *time.Timer
	cancel context.CancelCauseFunc
}

func newIdleWatch(parent context.Context, d time.Duration) (context.Context, *idleWatch) {
	ctx, cancel := context.WithCancelCause(parent)
	w := &idleWatch{d: d, cancel: cancel}
	w.timer = time.AfterFunc(d, func() { cancel(&timeoutError{sentinel: ErrIdleTimeout, after: d}) })
	return ctx, w
}

// kick records activity, pushing the idle deadline back.
func (w *idleWatch) kick() { w.timer.Reset(w.d) }

// pause stops the clock while the caller's emit runs, so that a slow
// consumer is not mistaken for a silent server; kick restarts it.
func (w *idleWatch) pause() { w.timer.Stop() }

// stop releases the timer and the context.
func (w *idleWatch) stop() {
	w.timer.Stop()
	w.cancel(context.Canceled)
}

// activityBody reports every successful read to an idleWatch, so any bytes
// (keep-alive comments and pings included) count as a live stream.
type activityBody struct {
	io.ReadCloser
	w *idleWatch
}

func (b *activityBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.w.kick()
	}
	return n, err
}

// connError marks a transport failure (dial, TLS, reset, cut body) that is
// worth retrying before the first delta.
type connError struct {
	backend string
	err     error
}

func (e *connError) Error() string { return fmt.Sprintf("llm: %s: connection: %v", e.backend, e.err) }
func (e *connError) Unwrap() error { return e.err }

// attemptError turns an error seen during one attempt into the error to
// report: the idle or overall timeout, or the caller's cancellation, when
// the context ended; a connError otherwise.
func attemptError(backend string, actx context.Context, err error) error {
	if actx.Err() != nil {
		cause := context.Cause(actx)
		var te *timeoutError
		if errors.As(cause, &te) {
			return te
		}
		return wrap(backend, cause)
	}
	return &connError{backend: backend, err: err}
}

// retryable reports whether a failure before the first delta may be
// retried.
func retryable(err error) bool {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Temporary()
	}
	var ce *connError
	return errors.Is(err, ErrIdleTimeout) || errors.Is(err, ErrIncompleteStream) || errors.As(err, &ce)
}

// retryAfterOf returns the server-requested delay carried by err, if any.
func retryAfterOf(err error) time.Duration {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.RetryAfter
	}
	return 0
}

// backoff returns the wait before retry number attempt+1: base doubled per
// attempt, capped, with "equal jitter" (half fixed, half random), and never
// shorter than what the server asked for.
func backoff(base time.Duration, attempt int, retryAfter time.Duration) time.Duration {
	d := base
	for i := 0; i < attempt && d < maxRetryDelay; i++ {
		d *= 2
	}
	d = min(d, maxRetryDelay)
	half := d / 2
	d = half + rand.N(half+1)
	return max(d, retryAfter)
}

// parseRetryAfter reads Retry-After-Ms, then Retry-After as seconds (a
// fraction allowed) or an HTTP date. It returns 0 when absent or invalid.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s <= 0 || s > 24*3600 {
			return 0
		}
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// retryLoop runs once until it succeeds, fails for good, or emits. once
// reports whether it emitted any delta; after that no retry is made and the
// partial Result is returned with the error.
func retryLoop(ctx context.Context, cfg Config, log *slog.Logger,
	once func(ctx context.Context) (res *Result, emitted bool, err error)) (*Result, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.Timeout, &timeoutError{sentinel: ErrTimeout, after: cfg.Timeout})
	defer cancel()
	for attempt := 0; ; attempt++ {
		res, emitted, err := once(ctx)
		if err == nil {
			return res, nil
		}
		if emitted {
			if res == nil {
				res = &Result{}
			}
			return res, err
		}
		if attempt >= cfg.MaxRetries || !retryable(err) || ctx.Err() != nil {
			return nil, err
		}
		delay := backoff(cfg.RetryBase, attempt, retryAfterOf(err))
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			log.Warn("llm request failed; no time left to retry", "attempt", attempt+1, "delay", delay, "err", scrub(err, cfg.APIKey))
			return nil, err
		}
		log.Warn("llm request failed; retrying", "attempt", attempt+1, "delay", delay, "err", scrub(err, cfg.APIKey))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, attemptError(cfg.Type, ctx, ctx.Err())
		case <-t.C:
		}
	}
}

// apiErrorFromResponse reads an HTTP error response into an *APIError. It
// understands Dify's {"code","message","status"}, OpenAI's
// {"error":{"message","type","code"}} and the flat vLLM shape; any other
// body (an HTML proxy page, say) becomes a short message.
func apiErrorFromResponse(backend string, resp *http.Response, secret string, hadConversation bool) *APIError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := parseErrorBody(backend, resp.StatusCode, body, secret)
	e.RetryAfter = parseRetryAfter(resp.Header, time.Now())
	e.classify(hadConversation)
	return e
}

func parseErrorBody(backend string, status int, body []byte, secret string) *APIError {
	e := &APIError{Backend: backend, Status: status}
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) == nil && top != nil {
		fields := top
		if raw, ok := top["error"]; ok {
			var inner map[string]json.RawMessage
			if json.Unmarshal(raw, &inner) == nil && inner != nil {
				fields = inner
			} else {
				var s string
				if json.Unmarshal(raw, &s) == nil {
					e.Message = s
				}
			}
		}
		if e.Message == "" {
			e.Message = jsonText(fields["message"])
		}
		e.Code = jsonText(fields["code"])
		if n, err := strconv.Atoi(e.Code); err == nil && e.Status == 0 && n >= 400 && n < 600 {
			// vLLM and OpenRouter put an HTTP status in code; mid-stream
			// errors have no other status.
			e.Status = n
		}
		if e.Code == "" || isDigits(e.Code) {
			if t := jsonText(fields["type"]); t != "" {
				e.Code = t
			}
		}
	} else {
		e.Message = shortText(body)
	}
	if e.Message == "" && status != 0 {
		e.Message = http.StatusText(status)
	}
	e.Message = redact(e.Message, secret)
	e.Code = redact(e.Code, secret)
	return e
}

// jsonText renders a JSON string, number or array of strings as text.
func jsonText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return strings.Join(list, "; ")
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// shortText makes a one-line excerpt of a non-JSON body.
func shortText(body []byte) string {
	s := strings.TrimSpace(string(body))
	if strings.HasPrefix(s, "<") {
		return "" // an HTML error page says nothing the status does not
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return s
}

// redactedError guarantees that a secret cannot leak through the text of a
// wrapped error, whatever produced it.
type redactedError struct {
	err    error
	secret string
}

func (e *redactedError) Error() string { return redact(e.err.Error(), e.secret) }
func (e *redactedError) Unwrap() error { return e.err }

func scrub(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &redactedError{err: err, secret: secret}
}
