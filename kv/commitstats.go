package kv

import (
	"sync/atomic"
	"time"
)

// commitBounds are the upper bounds of CommitStats.Buckets. A healthy
// local disk commits in about a millisecond (a write and two fdatasyncs);
// a network disk in several; a stalling one shows in the top buckets.
var commitBounds = [...]time.Duration{
	500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second,
}

// CommitStats describe the store's group commits since Open: how long each
// took, from the start of its transaction to the end of its last
// fdatasync, and how many writes shared them. Every ack waits for one, so
// this is where a slow or stalling disk shows.
type CommitStats struct {
	// Bounds are the upper bounds of Buckets, ascending.
	Bounds []time.Duration
	// Buckets[i] counts the commits that took at most Bounds[i]
	// (cumulative, as a Prometheus histogram).
	Buckets []uint64
	Count   uint64
	Sum     time.Duration
	// Callers is how many writes the commits carried; Callers/Count is
	// the mean group size.
	Callers uint64
}

// commitStats is updated by the committer and read by CommitStats.
type commitStats struct {
	buckets                [len(commitBounds) + 1]atomic.Uint64 // not cumulative; the last is above every bound
	count, callers, sumNan atomic.Uint64
}

func (c *commitStats) observe(d time.Duration, callers int) {
	i := 0
	for i < len(commitBounds) && d > commitBounds[i] {
		i++
	}
	c.buckets[i].Add(1)
	c.callers.Add(uint64(callers))
	c.sumNan.Add(uint64(max(d, 0)))
	c.count.Add(1) // last: a reader never sees more commits than buckets hold
}

// CommitStats returns the group commits' durations and sizes so far.
func (s *Store) CommitStats() CommitStats {
	c := &s.commitTimes
	st := CommitStats{
		Bounds:  commitBounds[:],
		Buckets: make([]uint64, len(commitBounds)),
		Count:   c.count.Load(),
	}
	var sum uint64
	for i := range commitBounds {
		sum += c.buckets[i].Load()
		st.Buckets[i] = min(sum, st.Count)
	}
	st.Sum = time.Duration(c.sumNan.Load())
	st.Callers = c.callers.Load()
	return st
}
