package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Send stamps keep the per-member message budget (WeCom's 30 messages a
// minute per member and app) across restarts. They are keyed by time, so a
// new stamp appends to the newest leaf and old ones are pruned from the
// oldest: BE(unix nanos) app\x00member -> nil.

// sendRetention is how long stamps are kept; the budget needs one minute
// plus the bridge's margin.
const sendRetention = 10 * time.Minute

// SendStamp is one message sent to a member.
type SendStamp struct {
	App    string
	Member string
	At     time.Time
}

func sendKey(app, member string, at time.Time) []byte {
	member = asciiLower(member) // WeCom ids are case-insensitive
	k := appendUint64(make([]byte, 0, 8+len(app)+1+len(member)), uint64(at.UnixNano()))
	k = append(k, app...)
	k = append(k, 0)
	return append(k, member...)
}

func putSend(tx *bolt.Tx, app, member string, at time.Time) error {
	b := tx.Bucket(bucketSends)
	k := sendKey(app, member, at)
	for b.Get(k) != nil { // two sends in one nanosecond: keep both
		at = at.Add(time.Nanosecond)
		k = sendKey(app, member, at)
	}
	if err := b.Put(k, nil); err != nil {
		return err
	}
	// Prune a few expired stamps on the way: the oldest leaf is rewritten
	// only when it holds something to drop.
	cut := appendUint64(nil, uint64(at.Add(-sendRetention).UnixNano()))
	c := b.Cursor()
	for n, k := 0, firstKey(c); k != nil && n < 16 && bytes.Compare(k[:8], cut) < 0; n, k = n+1, firstKey(c) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

func firstKey(c *bolt.Cursor) []byte {
	k, _ := c.First()
	if len(k) < 8 {
		return nil
	}
	return k
}

// RecordSend stores that a message was sent to member of app at at.
func (s *Store) RecordSend(app, member string, at time.Time) error {
	err := s.update(func(tx *bolt.Tx) error { return putSend(tx, app, member, at) })
	if err != nil {
		return fmt.Errorf("kv: record send: %w", err)
	}
	return nil
}

// SaveJobSent stores a job's delivery progress and the send stamp of the
// piece just delivered to its user, in one commit (one fsync for both).
// Like SaveJob, it fails with ErrNotFound if the job is already done; the
// stamp is then not recorded either.
func (s *Store) SaveJobSent(j *Job, at time.Time) error {
	err := s.update(func(tx *bolt.Tx) error {
		if err := putLiveJob(tx, j); err != nil {
			return err
		}
		return putSend(tx, j.App, j.User, at)
	})
	if err != nil {
		return fmt.Errorf("kv: save job %d: %w", j.ID, err)
	}
	return nil
}

// RecentSends returns the send stamps of member of app at or after since,
// oldest first. Member ids are compared ignoring ASCII case.
func (s *Store) RecentSends(app, member string, since time.Time) ([]time.Time, error) {
	var out []time.Time
	suffix := pairKey(app, asciiLower(member))
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSends).Cursor()
		for k, _ := c.Seek(timeKey(since)); k != nil; k, _ = c.Next() {
			if len(k) >= 8 && bytes.Equal(k[8:], suffix) {
				out = append(out, time.Unix(0, int64(binary.BigEndian.Uint64(k))))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kv: recent sends: %w", err)
	}
	return out, nil
}

// AllRecentSends returns every send stamp at or after since, oldest first,
// for loading the budget of all members at start. Member ids come back in
// lower case (WeCom compares them case-insensitively).
func (s *Store) AllRecentSends(since time.Time) ([]SendStamp, error) {
	var out []SendStamp
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSends).Cursor()
		for k, _ := c.Seek(timeKey(since)); k != nil; k, _ = c.Next() {
			if len(k) < 9 {
				continue
			}
			app, member, ok := bytes.Cut(k[8:], []byte{0})
			if !ok {
				continue
			}
			out = append(out, SendStamp{App: string(app), Member: string(member),
				At: time.Unix(0, int64(binary.BigEndian.Uint64(k)))})
		}
		return nil
	})
	if err != nil {
		return nil, s.corruptAtStart("recent sends", err)
	}
	return out, nil
}

// timeKey is the 8-byte big-endian key prefix of t; times before 1970
// (including the zero Time) sort first.
func timeKey(t time.Time) []byte {
	if t.Before(time.Unix(0, 0)) {
		return make([]byte, 8)
	}
	return appendUint64(nil, uint64(t.UnixNano()))
}
