package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// Feedbacker is a backend that takes users' ratings of its answers (Dify's
// message feedback).
type Feedbacker interface {
	Feedback(ctx context.Context, f FeedbackRequest) error
}

// FeedbackRequest rates one answer.
type FeedbackRequest struct {
	// MessageID is the backend's id of the answer (Result.MessageID).
	MessageID string
	// App and User are who rated it: the same as the question's Request
	// (the answer belongs to that Dify user).
	App, User string
	// Rating is "like", "dislike", or "" to withdraw a rating.
	Rating string
	// Content is the user's comment, if any.
	Content string
}

// Feedback sends POST /messages/{message_id}/feedbacks.
func (d *dify) Feedback(ctx context.Context, f FeedbackRequest) error {
	if f.MessageID == "" || f.User == "" {
		return fmt.Errorf("llm: dify feedback: message id and user are required")
	}
	body := map[string]any{"user": endUser(Request{App: f.App, User: f.User}), "rating": nil}
	if f.Rating != "" {
		body["rating"] = f.Rating
	}
	if f.Content != "" {
		body["content"] = f.Content
	}
	data, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("llm: dify feedback: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.IdleTimeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost,
		d.cfg.BaseURL+"/messages/"+url.PathEscape(f.MessageID)+"/feedbacks", bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("llm: dify feedback: build request: %w", err)
	}
	hreq.Header.Set("Authorization", "Bearer "+d.cfg.APIKey)
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := d.hc.Do(hreq)
	if err != nil {
		return scrub(attemptError(TypeDify, ctx, err), d.cfg.APIKey)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return apiErrorFromResponse(TypeDify, resp, d.cfg.APIKey, false)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	return nil
}
