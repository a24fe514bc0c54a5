package bridge

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// fakeClock is a manual clock whose sleeps advance it.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	slept []time.Duration
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
func (c *fakeClock) sleep(_ context.Context, d time.Duration) error {
	c.mu.Lock()
	c.slept = append(c.slept, d)
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return nil
}

func newTestBudget(limit int) (*budget, *fakeClock) {
	c := &fakeClock{now: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)}
	b := newBudget(limit, c.Now)
	b.sleep = c.sleep
	return b, c
}

// The send budget queues past the per-member limit instead of dropping, and
// frees a slot only a margin after WeCom's own minute would.
func TestBudgetWaitsInsteadOfDropping(t *testing.T) {
	b, c := newTestBudget(3)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		s, err := b.take(ctx, "a\x00u")
		if err != nil {
			t.Fatal(err)
		}
		s.done()
		c.Add(10 * time.Second)
	}
	if len(c.slept) != 0 {
		t.Fatalf("slept %v within the budget", c.slept)
	}
	// The 4th must wait until the first send is a minute (plus the margin)
	// old: 30 s more, plus 2 s.
	if _, err := b.take(ctx, "a\x00u"); err != nil {
		t.Fatal(err)
	}
	if len(c.slept) != 1 || c.slept[0] != 30*time.Second+budgetMargin {
		t.Fatalf("slept %v, want [32s]", c.slept)
	}
	// Another member has a budget of their own.
	if _, err := b.take(ctx, "a\x00v"); err != nil || len(c.slept) != 1 {
		t.Fatalf("other member waited: %v %v", c.slept, err)
	}
	// A cancelled context stops the wait.
	b2 := newBudget(1, time.Now)
	_, _ = b2.take(ctx, "k")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b2.take(cctx, "k"); err == nil {
		t.Fatal("take ignored a cancelled context")
	}
}

// A slot is counted from the end of its send, which is after WeCom's
// arrival time: a send that took 5 s keeps its slot 5 s longer.
func TestBudgetCountsFromTheEndOfTheSend(t *testing.T) {
	b, c := newTestBudget(1)
	ctx := context.Background()
	s, _ := b.take(ctx, "k")
	c.Add(5 * time.Second) // a slow request
	s.done()
	if _, err := b.take(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if len(c.slept) != 1 || c.slept[0] != time.Minute+budgetMargin {
		t.Fatalf("slept %v, want [62s] after the end of the first send", c.slept)
	}
}

// Bursts from many goroutines, with WeCom's arrival anywhere between the
// start and the end of each send: counted the way WeCom counts (a sliding
// minute of arrivals per member), no member ever gets more than the limit.
func TestBudgetBurstNeverExceedsWeComsWindow(t *testing.T) {
	const limit = 30
	b, c := newTestBudget(limit)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	arrivals := map[string][]time.Time{}
	for round := 0; round < 4000; round++ {
		key := []string{"a\x00u1", "a\x00u2", "a\x00u3"}[rng.IntN(3)]
		s, err := b.take(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		d := time.Duration(rng.Int64N(int64(1500 * time.Millisecond)))
		c.Add(d)
		// WeCom saw it somewhere during the request.
		arrive := s.at.Add(time.Duration(rng.Int64N(int64(d) + 1)))
		arrivals[key] = append(arrivals[key], arrive)
		s.done()
		c.Add(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
	}
	for key, ts := range arrivals {
		for i := range ts {
			n := 0
			for j := i; j < len(ts) && ts[j].Sub(ts[i]) < time.Minute; j++ {
				n++
			}
			if n > limit {
				t.Fatalf("%q: %d arrivals within a minute from %v; WeCom drops the excess", key, n, ts[i])
			}
		}
	}
}

// The hourly cap (1000 per member) holds too, and stamps restored after a
// restart count.
func TestBudgetHourAndRestore(t *testing.T) {
	b, c := newTestBudget(30)
	b.perHour = 5
	ctx := context.Background()
	start := c.Now()
	for i := 0; i < 6; i++ {
		s, _ := b.take(ctx, "k")
		s.done()
	}
	if got := c.Now().Sub(start); got < time.Hour {
		t.Fatalf("6 sends with an hourly cap of 5 took %v", got)
	}

	b2, c2 := newTestBudget(2)
	now := c2.Now()
	b2.restore("k", []time.Time{now.Add(-10 * time.Second), now.Add(-20 * time.Second), now.Add(-2 * time.Hour)})
	if _, err := b2.take(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if len(c2.slept) != 1 || c2.slept[0] != 40*time.Second+budgetMargin {
		t.Fatalf("after restore slept %v, want [42s]", c2.slept)
	}
}

// forget drops members nobody has written to for an hour, and only those.
func TestBudgetForget(t *testing.T) {
	b, c := newTestBudget(30)
	ctx := context.Background()
	s, _ := b.take(ctx, "old")
	s.done()
	c.Add(50 * time.Minute)
	s, _ = b.take(ctx, "new")
	s.done()
	c.Add(11 * time.Minute)
	if n := b.forget(); n != 1 || b.members() != 1 {
		t.Fatalf("forget removed %d, %d left; want 1 and 1", n, b.members())
	}
	c.Add(time.Hour)
	if n := b.forget(); n != 1 || b.members() != 0 {
		t.Fatalf("forget removed %d, %d left; want 1 and 0", n, b.members())
	}
}
