package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// Jobs of one lane run in order, one at a time; lanes run in parallel up to
// the worker bound; after stop, queued jobs are not started.
func TestPoolLanesOrderBoundAndStop(t *testing.T) {
	var mu sync.Mutex
	running, maxRunning := 0, 0
	order := map[string][]uint64{}
	inLane := map[string]int{}
	release := make(chan struct{})
	run := func(ctx context.Context, j jobRef) time.Duration {
		key := j.Lane
		mu.Lock()
		running++
		inLane[key]++
		if inLane[key] > 1 {
			t.Errorf("two jobs of lane %q at once", key)
		}
		maxRunning = max(maxRunning, running)
		order[key] = append(order[key], j.ID)
		mu.Unlock()
		if j.ID == 100 {
			<-release
		}
		time.Sleep(time.Millisecond)
		mu.Lock()
		running--
		inLane[key]--
		mu.Unlock()
		return 0
	}
	p := newPool(3, run, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	id := uint64(0)
	for round := 0; round < 5; round++ {
		for u := 0; u < 6; u++ {
			id++
			p.submit(ctx, &kv.Job{ID: id, Question: kv.Question{App: "a", User: fmt.Sprint("u", u)}})
		}
	}
	if !p.wait(contextWithTimeout(t, 10*time.Second)) {
		t.Fatal("pool did not finish")
	}
	if maxRunning > 3 || maxRunning < 2 {
		t.Fatalf("max concurrent %d, want 2..3", maxRunning)
	}
	for key, ids := range order {
		for i := 1; i < len(ids); i++ {
			if ids[i] < ids[i-1] {
				t.Fatalf("lane %s ran %v out of order", key, ids)
			}
		}
	}
	// Stop: the blocked job finishes, the one queued behind it never starts.
	p.submit(ctx, &kv.Job{ID: 100, Question: kv.Question{App: "a", User: "x"}})
	p.submit(ctx, &kv.Job{ID: 101, Question: kv.Question{App: "a", User: "x"}})
	time.Sleep(20 * time.Millisecond)
	p.stop()
	close(release)
	if !p.wait(contextWithTimeout(t, 5*time.Second)) {
		t.Fatal("pool did not stop")
	}
	mu.Lock()
	defer mu.Unlock()
	if got := order[laneKey("a", "x")]; len(got) != 1 || got[0] != 100 {
		t.Fatalf("after stop ran %v", got)
	}
	if q := p.queued.Load(); q != 0 {
		t.Fatalf("queued gauge %d after stop", q)
	}
}

func contextWithTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
