package kv

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Limits are per-user question limits; zero means unlimited.
type Limits struct {
	PerMinute int
	PerDay    int
}

// quota is the stored counter state of one (app, user).
type quota struct {
	Day    string  `json:"day"`    // local calendar day, YYYY-MM-DD
	DayN   int     `json:"day_n"`  // questions counted on Day
	Recent []int64 `json:"recent"` // unix nanos of questions in the last minute
}

// QuotaVerdict is the result of TakeQuota.
type QuotaVerdict int

// Quota verdicts.
const (
	QuotaOK         QuotaVerdict = iota
	QuotaOverMinute              // the per-minute limit is reached
	QuotaOverDay                 // the per-day limit is reached
)

// TakeQuota counts one question for (app, user) at now, unless a limit is
// already reached; then nothing is counted and the verdict says which.
// Counters survive restarts, so a restart does not reset a daily quota.
func (s *Store) TakeQuota(app, user string, lim Limits, now time.Time) (QuotaVerdict, error) {
	if lim.PerMinute <= 0 && lim.PerDay <= 0 {
		return QuotaOK, nil
	}
	verdict := QuotaOK
	err := s.update(func(tx *bolt.Tx) error {
		verdict = QuotaOK
		b := tx.Bucket(bucketQuota)
		k := pairKey(app, user)
		var q quota
		if v := b.Get(k); v != nil {
			if err := decode(v, &q); err != nil {
				return err
			}
		}
		day := now.Format(time.DateOnly)
		if q.Day != day {
			q.Day, q.DayN = day, 0
		}
		cut := now.Add(-time.Minute).UnixNano()
		recent := q.Recent[:0]
		for _, t := range q.Recent {
			if t > cut {
				recent = append(recent, t)
			}
		}
		q.Recent = recent
		switch {
		case lim.PerDay > 0 && q.DayN >= lim.PerDay:
			verdict = QuotaOverDay
			return nil
		case lim.PerMinute > 0 && len(q.Recent) >= lim.PerMinute:
			verdict = QuotaOverMinute
			return nil
		}
		q.DayN++
		q.Recent = append(q.Recent, now.UnixNano())
		return put(b, k, &q)
	})
	if err != nil {
		return QuotaOK, fmt.Errorf("kv: quota: %w", err)
	}
	return verdict, nil
}
