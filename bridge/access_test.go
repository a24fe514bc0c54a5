package bridge

import (
	"context"
	"sync"
	"testing"
	"time"
)

// The send budget queues past the per-member limit instead of dropping, and
// frees up as the minute window slides.
func TestBudgetWaitsInsteadOfDropping(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	b := newBudget(3, clock)
	var slept []time.Duration
	b.sleep = func(_ context.Context, d time.Duration) error {
		mu.Lock()
		slept = append(slept, d)
		now = now.Add(d)
		mu.Unlock()
		return nil
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := b.take(ctx, "a\x00u"); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		now = now.Add(10 * time.Second)
		mu.Unlock()
	}
	if len(slept) != 0 {
		t.Fatalf("slept %v within the budget", slept)
	}
	// The 4th must wait until the first send is a minute old (30s more).
	if err := b.take(ctx, "a\x00u"); err != nil {
		t.Fatal(err)
	}
	if len(slept) != 1 || slept[0] != 30*time.Second {
		t.Fatalf("slept %v, want [30s]", slept)
	}
	// Another member has a budget of their own.
	if err := b.take(ctx, "a\x00v"); err != nil || len(slept) != 1 {
		t.Fatalf("other member waited: %v %v", slept, err)
	}
	// A cancelled context stops the wait.
	b2 := newBudget(1, time.Now)
	_ = b2.take(ctx, "k")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b2.take(cctx, "k"); err == nil {
		t.Fatal("take ignored a cancelled context")
	}
	b.forget()
}
