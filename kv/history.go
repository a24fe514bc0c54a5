package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Status is the state of a question in the history.
type Status string

// History statuses.
const (
	StatusPending   Status = "pending"   // accepted, not answered yet
	StatusAnswering Status = "answering" // the answer is being streamed
	StatusDone      Status = "done"      // answered and delivered
	StatusFailed    Status = "failed"    // the LLM failed; the user got an apology
	StatusRefused   Status = "refused"   // not allowed or over quota
)

// Entry is one question and its answer, as shown on the history page.
type Entry struct {
	ID        uint64    `json:"id"`
	App       string    `json:"app"`
	User      string    `json:"user"`
	Question  string    `json:"q"`
	Answer    string    `json:"a,omitempty"`
	Status    Status    `json:"status"`
	ConvSeq   int       `json:"conv"`
	NewConv   bool      `json:"new_conv,omitempty"`
	RefID     string    `json:"ref,omitempty"`
	Truncated bool      `json:"truncated,omitempty"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

func putEntry(tx *bolt.Tx, e *Entry) error {
	if err := put(tx.Bucket(bucketHist), histKey(e.User, e.ID), e); err != nil {
		return err
	}
	return tx.Bucket(bucketHistIndex).Put(idKey(e.ID), []byte(e.User))
}

func updateEntry(tx *bolt.Tx, user string, id uint64, now time.Time, u *EntryUpdate) error {
	b := tx.Bucket(bucketHist)
	k := histKey(user, id)
	v := b.Get(k)
	if v == nil {
		return ErrNotFound
	}
	var e Entry
	if err := decode(v, &e); err != nil {
		return err
	}
	if u.Answer != "" {
		e.Answer = u.Answer
		e.ConvSeq = u.ConvSeq
		e.NewConv = u.NewConv
		e.Truncated = u.Truncated
	}
	if u.RefID != "" {
		e.RefID = u.RefID
	}
	if u.Status != "" {
		e.Status = u.Status
	}
	e.Updated = now
	return put(b, k, &e)
}

// SetEntryStatus changes the status of a history entry.
func (s *Store) SetEntryStatus(user string, id uint64, st Status) error {
	err := s.update(func(tx *bolt.Tx) error {
		return updateEntry(tx, user, id, s.now(), &EntryUpdate{Status: st})
	})
	if err != nil {
		return fmt.Errorf("kv: set entry status: %w", err)
	}
	return nil
}

// HistoryQuery selects a page of one user's history.
type HistoryQuery struct {
	User string
	// Before is a cursor: only entries with ID < Before (0 = from newest).
	Before uint64
	// Limit is the page size (default 20, at most 500).
	Limit int
	// Search keeps entries whose question or answer contains it
	// (case-insensitive for ASCII letters).
	Search string
}

// History returns a page of the user's entries, newest first, and the cursor
// for the next page (0 when there is none).
func (s *Store) History(q HistoryQuery) (entries []Entry, next uint64, err error) {
	if q.Limit <= 0 {
		q.Limit = 20
	}
	if q.Limit > 500 {
		q.Limit = 500
	}
	needle := []byte(asciiLower(q.Search))
	prefix := append([]byte(q.User), 0)
	err = s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHist).Cursor()
		before := q.Before
		if before == 0 {
			before = ^uint64(0)
		}
		// Seek lands on the first key >= the cursor; the page starts just
		// before it (the cursor itself is exclusive).
		k, v := c.Seek(histKey(q.User, before))
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Prev() {
			if len(needle) > 0 && !containsFold(v, needle) {
				continue
			}
			if len(entries) == q.Limit {
				next = entries[len(entries)-1].ID
				return nil
			}
			var e Entry
			if err := decode(v, &e); err != nil {
				return err
			}
			if len(needle) > 0 && !containsFold([]byte(e.Question), needle) && !containsFold([]byte(e.Answer), needle) {
				continue // the raw match was in another field or an escape
			}
			entries = append(entries, e)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("kv: history: %w", err)
	}
	return entries, next, nil
}

// containsFold is a cheap pre-filter over the encoded entry: it reports
// whether v contains needle (already lower-case), folding ASCII letters only.
// It does not allocate; Chinese needles take the plain bytes.Contains path.
func containsFold(v, needle []byte) bool {
	if !hasASCIILetter(needle) {
		return bytes.Contains(v, needle)
	}
	for i := 0; i+len(needle) <= len(v); i++ {
		j := 0
		for ; j < len(needle); j++ {
			c := v[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != needle[j] {
				break
			}
		}
		if j == len(needle) {
			return true
		}
	}
	return false
}

func hasASCIILetter(b []byte) bool {
	for _, c := range b {
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') {
			return true
		}
	}
	return false
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Entry returns one history entry of a user.
func (s *Store) Entry(user string, id uint64) (Entry, error) {
	var e Entry
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketHist).Get(histKey(user, id))
		if v == nil {
			return ErrNotFound
		}
		return decode(v, &e)
	})
	if err != nil {
		return e, fmt.Errorf("kv: entry: %w", err)
	}
	return e, nil
}

// PruneHistory deletes entries created before the cutoff, at most limit per
// call, and returns how many it removed. Entries of jobs still pending are
// kept.
func (s *Store) PruneHistory(before time.Time, limit int) (int, error) {
	n := 0
	err := s.update(func(tx *bolt.Tx) error {
		n = 0
		hist := tx.Bucket(bucketHist)
		jobs := tx.Bucket(bucketJobs)
		c := tx.Bucket(bucketHistIndex).Cursor()
		for k, v := c.First(); k != nil && n < limit; {
			id := binary.BigEndian.Uint64(k)
			hk := histKey(string(v), id)
			raw := hist.Get(hk)
			if raw != nil {
				var e Entry
				if err := decode(raw, &e); err != nil {
					return err
				}
				if !e.Created.Before(before) {
					return nil // the index is in id order, which is time order
				}
				if jobs.Get(k) != nil {
					k, v = c.Next()
					continue
				}
				if err := hist.Delete(hk); err != nil {
					return err
				}
			}
			next := append([]byte(nil), k...)
			if err := c.Delete(); err != nil {
				return err
			}
			n++
			k, v = c.Seek(next)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("kv: prune history: %w", err)
	}
	return n, nil
}
