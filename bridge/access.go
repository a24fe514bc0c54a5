package bridge

import (
	"context"
	"sync"
	"time"
)

// deptCache remembers members' departments for allow_departments checks, so
// the contacts API is asked at most once per member per TTL.
type deptCache struct {
	ttl time.Duration
	now func() time.Time
	mu  sync.Mutex
	m   map[string]deptEntry
}

type deptEntry struct {
	ids []int64
	at  time.Time
}

func newDeptCache(ttl time.Duration, now func() time.Time) *deptCache {
	return &deptCache{ttl: ttl, now: now, m: map[string]deptEntry{}}
}

func (c *deptCache) get(ctx context.Context, user string, fetch func(context.Context, string) ([]int64, error)) ([]int64, error) {
	c.mu.Lock()
	e, ok := c.m[user]
	c.mu.Unlock()
	if ok && c.now().Sub(e.at) < c.ttl {
		return e.ids, nil
	}
	ids, err := fetch(ctx, user)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.m) > 100000 { // bound memory; a full reset is fine for a cache
		c.m = map[string]deptEntry{}
	}
	c.m[user] = deptEntry{ids: ids, at: c.now()}
	c.mu.Unlock()
	return ids, nil
}

// allowed reports whether the user may use the app: true when no allowlist
// is configured, or the user is listed, or is in a listed department.
func (a *app) allowed(ctx context.Context, user string) (bool, error) {
	if len(a.cfg.AllowUsers) == 0 && len(a.cfg.AllowDepartments) == 0 {
		return true, nil
	}
	if a.allowU[user] {
		return true, nil
	}
	if len(a.cfg.AllowDepartments) == 0 {
		return false, nil
	}
	ids, err := a.depts.get(ctx, user, a.client.UserDepartments)
	if err != nil {
		return false, err
	}
	for _, id := range ids {
		for _, want := range a.cfg.AllowDepartments {
			if id == want {
				return true, nil
			}
		}
	}
	return false, nil
}

// budget paces messages to each member under WeCom's per-member limit (30 a
// minute per app); WeCom silently drops the excess, so we wait instead.
type budget struct {
	limit int
	now   func() time.Time
	sleep func(context.Context, time.Duration) error
	mu    sync.Mutex
	sent  map[string][]time.Time
}

func newBudget(limit int, now func() time.Time) *budget {
	return &budget{limit: limit, now: now, sleep: sleepCtx, sent: map[string][]time.Time{}}
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// take waits until one more message may go to key, then counts it.
func (b *budget) take(ctx context.Context, key string) error {
	for {
		b.mu.Lock()
		now := b.now()
		times := b.sent[key]
		i := 0
		for i < len(times) && now.Sub(times[i]) >= time.Minute {
			i++
		}
		times = times[i:]
		if len(times) < b.limit {
			b.sent[key] = append(times, now)
			b.mu.Unlock()
			return nil
		}
		wait := time.Minute - now.Sub(times[0])
		b.sent[key] = times
		b.mu.Unlock()
		if err := b.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// forget drops idle keys so the map does not grow without bound.
func (b *budget) forget() {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	for k, times := range b.sent {
		if len(times) == 0 || now.Sub(times[len(times)-1]) >= time.Minute {
			delete(b.sent, k)
		}
	}
}
