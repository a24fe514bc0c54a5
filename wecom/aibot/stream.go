package aibot

import (
	"context"
	"fmt"
	"sync"
)

// Stream coalesces the updates of one stream reply: Update never blocks,
// and while a frame waits for its ack only the latest text is kept, so the
// bubble shows the newest text as fast as WeCom acks and no frame is sent
// before the previous one was acked. The first frame carries the feedback
// id. Finish sends the final frame (finish=true) exactly once.
//
// A Stream stops at its first error (an *APIError such as 846605 or 846608,
// ErrAckTimeout, ErrConnectionLost …); Update and Finish then return it and
// Shown tells how far the user got, so the caller can continue with
// SendMarkdown.
type Stream struct {
	c                           *Client
	ctx                         context.Context
	reqID, streamID, feedbackID string

	mu     sync.Mutex
	latest string
	dirty  bool
	finish bool
	frames int
	shown  string
	sent   string // the last frame written, acked or not
	onAck  func(content string)
	err    error
	wake   chan struct{}
	done   chan struct{}
}

// NewStream starts a Stream on a callback's req_id. ctx bounds the whole
// stream; when it is done the Stream stops with ctx's error.
func (c *Client) NewStream(ctx context.Context, reqID, streamID, feedbackID string) *Stream {
	s := &Stream{c: c, ctx: ctx, reqID: reqID, streamID: streamID, feedbackID: feedbackID,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.loop()
	return s
}

// Update replaces the text to show (the whole text so far). It returns
// ErrContentTooLarge for content over MaxContentBytes without queueing it,
// and the Stream's error once it has stopped.
func (s *Stream) Update(content string) error {
	if len(content) > MaxContentBytes {
		return fmt.Errorf("%w (stream content is %d bytes)", ErrContentTooLarge, len(content))
	}
	s.mu.Lock()
	if s.err != nil || s.finish {
		err := s.err
		s.mu.Unlock()
		if err == nil {
			err = fmt.Errorf("aibot: stream %s already finished", s.streamID)
		}
		return err
	}
	s.latest, s.dirty = content, true
	s.mu.Unlock()
	s.poke()
	return nil
}

// Finish sends content as the final frame and waits until WeCom acked it,
// the Stream failed, or ctx is done.
func (s *Stream) Finish(ctx context.Context, content string) error {
	if len(content) > MaxContentBytes {
		return fmt.Errorf("%w (stream content is %d bytes)", ErrContentTooLarge, len(content))
	}
	s.mu.Lock()
	if s.err == nil && !s.finish {
		s.latest, s.dirty, s.finish = content, true, true
	}
	s.mu.Unlock()
	s.poke()
	select {
	case <-s.done:
		return s.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shown is the last content WeCom acked: what the user sees.
func (s *Stream) Shown() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shown
}

// Sent is the content of the last frame written, acked or not. When the
// connection broke while a frame waited for its ack (ErrConnectionLost,
// ErrAckTimeout), WeCom may well have shown it: Sent is then the safer
// guess of what the user saw than Shown.
func (s *Stream) Sent() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// OnAck sets a func called with each frame's content once WeCom acked it,
// from the Stream's own goroutine, before the next frame is written; nil
// removes it. A caller that records what the user has seen does it there.
func (s *Stream) OnAck(fn func(content string)) {
	s.mu.Lock()
	s.onAck = fn
	s.mu.Unlock()
}

// Frames is the number of frames sent so far.
func (s *Stream) Frames() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frames
}

// Err is the error that stopped the Stream, or nil.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Done is closed when the final frame was acked or the Stream failed.
func (s *Stream) Done() <-chan struct{} { return s.done }

func (s *Stream) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Stream) loop() {
	defer close(s.done)
	for {
		select {
		case <-s.wake:
		case <-s.ctx.Done():
			s.mu.Lock()
			if s.err == nil {
				s.err = s.ctx.Err()
			}
			s.mu.Unlock()
			return
		}
		for {
			s.mu.Lock()
			if !s.dirty {
				s.mu.Unlock()
				break
			}
			content, fin := s.latest, s.finish
			s.dirty = false
			fb := ""
			if s.frames == 0 {
				fb = s.feedbackID
			}
			s.frames++
			s.sent = content
			s.mu.Unlock()

			err := s.c.RespondStream(s.ctx, s.reqID, s.streamID, content, fin, fb)

			s.mu.Lock()
			if err != nil {
				s.err = err
				s.mu.Unlock()
				return
			}
			s.shown = content
			onAck := s.onAck
			s.mu.Unlock()
			if onAck != nil {
				onAck(content)
			}
			if fin {
				return
			}
		}
	}
}
