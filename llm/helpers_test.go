package llm_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm"
)

// collector gathers emitted deltas and rebuilds the answer as a caller
// would, honouring Replace.
type collector struct {
	mu     sync.Mutex
	deltas []llm.Delta
	text   string
	onEach func(n int) error
}

func (c *collector) emit(d llm.Delta) error {
	c.mu.Lock()
	c.deltas = append(c.deltas, d)
	if d.Replace {
		c.text = d.Text
	} else {
		c.text += d.Text
	}
	n := len(c.deltas)
	c.mu.Unlock()
	if c.onEach != nil {
		return c.onEach(n)
	}
	return nil
}

func (c *collector) got() (string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.text, len(c.deltas)
}

// logBuffer is a concurrency-safe sink for a debug-level text logger.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// newBackend builds a backend with fast retries and a private transport,
// so goroutine counts can settle when the test closes it.
func newBackend(t *testing.T, cfg llm.Config) (llm.Backend, *logBuffer) {
	t.Helper()
	if cfg.RetryBase == 0 {
		cfg.RetryBase = time.Millisecond
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	log, lb := newLogger()
	b, err := llm.New(cfg, &http.Client{Transport: tr}, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b, lb
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitGoroutines waits for the goroutine count to drop back to at most
// want, failing with a dump if it does not.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d, want <= %d\n%s", n, want, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustContain(t *testing.T, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Errorf("%q does not contain %q", s, sub)
	}
}
