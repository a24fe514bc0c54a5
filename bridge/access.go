package bridge

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// access is an app's or bot's allowlist: allow_users and
// allow_departments. With departments listed but no way to look them up (a
// bot without any app), only the listed users are allowed.
type access struct {
	users  map[string]bool // lower-cased: WeCom ids ignore case
	depts  []int64
	cache  *deptCache
	lookup func(context.Context, string) ([]int64, error)
}

func newAccess(users []string, depts []int64, cache *deptCache, lookup func(context.Context, string) ([]int64, error)) access {
	a := access{depts: depts, cache: cache, lookup: lookup}
	if len(users) > 0 {
		a.users = map[string]bool{}
		for _, u := range users {
			a.users[strings.ToLower(u)] = true
		}
	}
	return a
}

// allows reports whether user may ask: true when no allowlist is set, or
// the user is listed, or is in a listed department.
func (a access) allows(ctx context.Context, user string) (bool, error) {
	if len(a.users) == 0 && len(a.depts) == 0 {
		return true, nil
	}
	if a.users[strings.ToLower(user)] {
		return true, nil
	}
	if len(a.depts) == 0 || a.lookup == nil {
		return false, nil
	}
	ids, err := a.cache.get(ctx, user, a.lookup)
	if err != nil {
		return false, err
	}
	for _, id := range ids {
		if slices.Contains(a.depts, id) {
			return true, nil
		}
	}
	return false, nil
}

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

func (c *deptCache) setTTL(ttl time.Duration) {
	c.mu.Lock()
	c.ttl = ttl
	c.mu.Unlock()
}

func (c *deptCache) get(ctx context.Context, user string, fetch func(context.Context, string) ([]int64, error)) ([]int64, error) {
	c.mu.Lock()
	e, ok := c.m[user]
	ttl := c.ttl
	c.mu.Unlock()
	if ok && c.now().Sub(e.at) < ttl {
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

// budget paces messages to each member under WeCom's per-member limits (30
// a minute and 1000 an hour per app). WeCom drops the excess silently, with
// errcode 0, counting by the time a message reaches it, so we wait instead,
// and count conservatively:
//
//   - a send holds its slot from before the request until after the answer
//     (WeCom's arrival lies in between), and
//   - a slot is freed only margin after WeCom's own window would free it.
//
// The stamps can be saved (persist) and loaded back (restore), so that a
// restart does not begin with an empty budget while WeCom still counts the
// messages sent just before it.
type budget struct {
	perMinute int
	perHour   int
	margin    time.Duration
	now       func() time.Time
	sleep     func(context.Context, time.Duration) error
	mu        sync.Mutex
	sent      map[string][]time.Time // per member, oldest first
}

// budgetMargin is the safety margin on WeCom's windows: network delay and
// clock skew between our stamp and WeCom's arrival time.
const budgetMargin = 2 * time.Second

// perMemberPerHour is WeCom's hourly cap per app and member.
const perMemberPerHour = 1000

func newBudget(limit int, now func() time.Time) *budget {
	return &budget{perMinute: limit, perHour: perMemberPerHour, margin: budgetMargin,
		now: now, sleep: sleepCtx, sent: map[string][]time.Time{}}
}

// setLimit changes the per-minute limit (config reload).
func (b *budget) setLimit(limit int) {
	b.mu.Lock()
	b.perMinute = limit
	b.mu.Unlock()
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

// slot is a send counted in the budget; done stamps it with the time the
// send finished.
type slot struct {
	b   *budget
	key string
	at  time.Time
}

// take waits until one more message may go to key, then counts it from now
// on. The caller calls done on the returned slot when the send has
// finished, whatever its outcome: a request that failed may still have
// reached WeCom.
func (b *budget) take(ctx context.Context, key string) (*slot, error) {
	for {
		b.mu.Lock()
		now := b.now()
		times := b.trim(key, now)
		wait := time.Duration(0)
		if len(times) >= b.perHour {
			wait = times[len(times)-b.perHour].Add(time.Hour + b.margin).Sub(now)
		}
		if n := len(times); n >= b.perMinute {
			wait = max(wait, times[n-b.perMinute].Add(time.Minute+b.margin).Sub(now))
		}
		if wait <= 0 {
			b.sent[key] = append(times, now)
			b.mu.Unlock()
			return &slot{b: b, key: key, at: now}, nil
		}
		b.mu.Unlock()
		if err := b.sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// trim drops the stamps of key that no window counts any more and returns
// the rest. Call with b.mu held.
func (b *budget) trim(key string, now time.Time) []time.Time {
	times := b.sent[key]
	i := 0
	for i < len(times) && now.Sub(times[i]) >= time.Hour+b.margin {
		i++
	}
	if i > 0 {
		times = append(times[:0:0], times[i:]...)
		b.sent[key] = times
	}
	return times
}

// done moves the slot's stamp to the time the send finished: WeCom's
// arrival time is no later than that. Stamps stay sorted.
func (s *slot) done() time.Time {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	end := b.now()
	times := b.sent[s.key]
	for i := len(times) - 1; i >= 0; i-- {
		if times[i].Equal(s.at) {
			times = append(times[:i], times[i+1:]...)
			break
		}
	}
	j := len(times)
	for j > 0 && times[j-1].After(end) {
		j--
	}
	times = append(times, time.Time{})
	copy(times[j+1:], times[j:])
	times[j] = end
	b.sent[s.key] = times
	return end
}

// restore adds stamps saved before a restart.
func (b *budget) restore(key string, stamps []time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	times := append(b.sent[key], stamps...)
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	b.sent[key] = times
	b.trim(key, b.now())
}

// forget drops members with no stamp in any window, so the map does not
// grow without bound. The daemon's maintenance calls it.
func (b *budget) forget() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	n := 0
	for k := range b.sent {
		if len(b.trim(k, now)) == 0 {
			delete(b.sent, k)
			n++
		}
	}
	return n
}

// members is how many members the budget tracks.
func (b *budget) members() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sent)
}

// dupSeqs hands out each member's duplicate-check numbers (see appReply).
// Numbers come from a durable counter per member, reserved in blocks so
// that a message costs no extra write; a block reserved but not used
// before a restart is skipped, so no number is ever given twice.
type dupSeqs struct {
	store *kv.Store
	mu    sync.Mutex
	m     map[string]*seqBlock
}

type seqBlock struct{ next, end uint64 }

// dupBlock is how many numbers one reservation takes.
const dupBlock = 256

func newDupSeqs(store *kv.Store) *dupSeqs {
	return &dupSeqs{store: store, m: map[string]*seqBlock{}}
}

// take returns the first of n consecutive numbers for the member; never 0.
func (s *dupSeqs) take(app, user string, n int) (uint64, error) {
	key := laneKey(app, strings.ToLower(user))
	s.mu.Lock()
	defer s.mu.Unlock()
	blk := s.m[key]
	if blk == nil || blk.next+uint64(n) > blk.end {
		size := uint64(max(n, dupBlock))
		first, err := s.store.Reserve("dup\x00"+key, size+1)
		if err != nil {
			return 0, err
		}
		if len(s.m) >= 100000 {
			// Bound memory: a member dropped here reserves a fresh
			// block next time, above every number handed out before.
			clear(s.m)
		}
		blk = &seqBlock{next: first + 1, end: first + 1 + size}
		s.m[key] = blk
	}
	v := blk.next
	blk.next += uint64(n)
	return v, nil
}
