package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	goruntime "runtime"
	"sync"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// A backlog of many users' questions waits without a goroutine per user:
// only the workers run. Every job still runs once, each lane in order.
func TestPoolBacklogCostsNoGoroutines(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	ran := map[string][]uint64{}
	run := func(ctx context.Context, j jobRef) time.Duration {
		<-release
		mu.Lock()
		ran[j.Lane] = append(ran[j.Lane], j.ID)
		mu.Unlock()
		return 0
	}
	p := newPool(4, run, slog.New(slog.NewTextHandler(io.Discard, nil)))
	before := goruntime.NumGoroutine()
	const users, each = 2000, 3
	id := uint64(0)
	for r := 0; r < each; r++ {
		for u := 0; u < users; u++ {
			id++
			p.submit(context.Background(), &kv.Job{ID: id, Question: kv.Question{App: "a", User: fmt.Sprint("u", u)}})
		}
	}
	if g := goruntime.NumGoroutine() - before; g > 4 {
		t.Errorf("%d goroutines for a backlog of %d jobs, want at most the 4 workers", g, users*each)
	}
	// The workers take their first jobs on their own goroutines.
	for deadline := time.Now().Add(5 * time.Second); p.active.Load() < 4 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if q := p.queued.Load(); q != users*each-4 {
		t.Errorf("queued gauge %d, want %d", q, users*each-4)
	}
	close(release)
	if !p.wait(contextWithTimeout(t, 10*time.Second)) {
		t.Fatal("pool did not finish")
	}
	if len(ran) != users {
		t.Fatalf("%d users answered, want %d", len(ran), users)
	}
	for u, ids := range ran {
		if len(ids) != each || ids[0] > ids[1] || ids[1] > ids[2] {
			t.Fatalf("user %s: jobs %v", u, ids)
		}
	}
	if q, a := p.queued.Load(), p.active.Load(); q != 0 || a != 0 {
		t.Fatalf("gauges after the backlog: queued %d active %d", q, a)
	}
	if len(p.lane) != 0 || p.ready.len() != 0 || p.workers != 0 {
		t.Fatalf("pool not empty: %d lanes, %d ready, %d workers", len(p.lane), p.ready.len(), p.workers)
	}
}
