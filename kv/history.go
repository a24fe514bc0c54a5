package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
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
	ID        uint64 `json:"id"`
	App       string `json:"app"`
	User      string `json:"user"`
	Question  string `json:"q"`
	Answer    string `json:"a,omitempty"`
	Status    Status `json:"status"`
	ConvSeq   int    `json:"conv"`
	NewConv   bool   `json:"new_conv,omitempty"`
	RefID     string `json:"ref,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
	// Chat is the group's chatid when the question was asked in a group
	// chat (AI bot); "" in a one-to-one chat.
	Chat string `json:"chat,omitempty"`
	// Attachments are the question's pictures, files and voice messages
	// (without WeCom's download handles).
	Attachments []Attachment `json:"attachments,omitempty"`
	// MessageID is the backend's id of the answer (for feedback).
	MessageID string `json:"msg_id,omitempty"`
	// Feedback is the user's rating: "like", "dislike" or "".
	Feedback        string    `json:"feedback,omitempty"`
	FeedbackComment string    `json:"feedback_comment,omitempty"`
	Created         time.Time `json:"created"`
	Updated         time.Time `json:"updated"`
}

// History layout: bucketEntries holds every entry under BE(id), so a new
// entry appends to the newest leaf; bucketUserHist is the per-user index,
// BE32(epoch) fold(user)\x00BE(id) -> nil (see histKey). The index is built
// behind the intake in batches (Store.IndexHistory): entries with an id
// above the watermark in bucketMeta are not indexed yet, and History scans
// that short tail instead.
// User ids are folded to ASCII lower case in keys (WeCom compares them
// case-insensitively); Entry.User keeps the id as WeCom sent it.

var metaIndexed = []byte("hist_indexed") // BE(id): entries up to it are in bucketUserHist

func indexedUpTo(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(metaIndexed); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func putEntry(tx *bolt.Tx, e *Entry) error {
	return tx.Bucket(bucketEntries).Put(idKey(e.ID), encodeEntry(e))
}

// getEntry returns the entry id if it belongs to user (ignoring ASCII case).
func getEntry(tx *bolt.Tx, user string, id uint64, e *Entry) error {
	v := tx.Bucket(bucketEntries).Get(idKey(id))
	if v == nil {
		return ErrNotFound
	}
	if err := decodeEntry(v, e); err != nil {
		return err
	}
	if !asciiEqualFold(e.User, user) {
		return ErrNotFound
	}
	return nil
}

func updateEntry(tx *bolt.Tx, user string, id uint64, now time.Time, u *EntryUpdate) error {
	var e Entry
	if err := getEntry(tx, user, id, &e); err != nil {
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
	if u.MessageID != "" {
		e.MessageID = u.MessageID
	}
	if u.Attachments != nil {
		e.Attachments = publicAttachments(u.Attachments)
	}
	if u.Status != "" {
		e.Status = u.Status
	}
	e.Updated = now
	return putEntry(tx, &e)
}

// entryOwner returns the user of an encoded entry, from the binary form
// without decoding it, or by decoding one of another encoding.
func entryOwner(v []byte) ([]byte, error) {
	if u := entryUser(v); u != nil {
		return u, nil
	}
	var e Entry
	if err := decodeEntry(v, &e); err != nil {
		return nil, err
	}
	return []byte(e.User), nil
}

// unindexedKeys reads up to max history entries above the index
// watermark and returns their per-user index keys, sorted, and the highest
// id read (0 when there is none).
func (s *Store) unindexedKeys(max int) (keys [][]byte, last uint64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		keys, last = keys[:0], 0
		c := tx.Bucket(bucketEntries).Cursor()
		for k, v := c.Seek(idKey(indexedUpTo(tx) + 1)); k != nil && len(keys) < max; k, v = c.Next() {
			id := binary.BigEndian.Uint64(k)
			u, err := entryOwner(v)
			if err != nil {
				return err
			}
			keys = append(keys, histKey(asciiLower(string(u)), id))
			last = id
		}
		return nil
	})
	slices.SortFunc(keys, bytes.Compare)
	return keys, last, err
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
// for the next page (0 when there is none). The user id is matched ignoring
// ASCII case.
func (s *Store) History(q HistoryQuery) (entries []Entry, next uint64, err error) {
	if q.Limit <= 0 {
		q.Limit = 20
	}
	if q.Limit > 500 {
		q.Limit = 500
	}
	needle := []byte(asciiLower(q.Search))
	user := asciiLower(q.User)
	err = s.view(func(tx *bolt.Tx) error {
		entries, next = nil, 0
		before := q.Before
		if before == 0 {
			before = ^uint64(0)
		}
		// add takes one candidate, newest first; it reports false when the
		// page is full (and sets the cursor).
		add := func(v []byte) (bool, error) {
			if len(needle) > 0 && !containsFold(v, needle) {
				return true, nil
			}
			var e Entry
			if err := decodeEntry(v, &e); err != nil {
				return false, err
			}
			if len(needle) > 0 && !containsFold([]byte(e.Question), needle) && !containsFold([]byte(e.Answer), needle) {
				return true, nil // the raw match was in another field
			}
			if len(entries) == q.Limit {
				next = entries[len(entries)-1].ID
				return false, nil
			}
			entries = append(entries, e)
			return true, nil
		}
		eb := tx.Bucket(bucketEntries)
		wm := indexedUpTo(tx)
		// The unindexed tail (ids above the watermark), scanned directly.
		c := eb.Cursor()
		k, v := c.Seek(idKey(before))
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil && binary.BigEndian.Uint64(k) > wm; k, v = c.Prev() {
			u, err := entryOwner(v)
			if err != nil {
				return err
			}
			if !asciiEqualFold(string(u), user) {
				continue
			}
			if more, err := add(v); err != nil || !more {
				return err
			}
		}
		// The indexed part (ids below start), newest epoch first, down to
		// the oldest epoch the index holds.
		start := before
		if wm < ^uint64(0) && wm+1 < start {
			start = wm + 1
		}
		if start == 0 {
			return nil
		}
		ic := tx.Bucket(bucketUserHist).Cursor()
		first, _ := ic.First()
		if len(first) < 4 {
			return nil // an empty index
		}
		oldest := binary.BigEndian.Uint32(first)
		for ep := histEpoch(start - 1); ep >= oldest; ep-- {
			prefix := histPrefix(ep, user)
			k, _ := ic.Seek(appendUint64(prefix, start))
			if k == nil {
				k, _ = ic.Last()
			} else {
				k, _ = ic.Prev()
			}
			for ; k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, _ = ic.Prev() {
				v := eb.Get(k[len(prefix):])
				if v == nil {
					continue // pruned
				}
				if more, err := add(v); err != nil || !more {
					return err
				}
			}
			if ep == 0 {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("kv: history: %w", err)
	}
	return entries, next, nil
}

// asciiEqualFold reports whether a and b are equal ignoring ASCII case.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
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

// Entry returns one history entry of a user (matched ignoring ASCII case).
func (s *Store) Entry(user string, id uint64) (Entry, error) {
	var e Entry
	err := s.view(func(tx *bolt.Tx) error { return getEntry(tx, user, id, &e) })
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
		jobs := tx.Bucket(bucketJobs)
		ub := tx.Bucket(bucketUserHist)
		c := tx.Bucket(bucketEntries).Cursor()
		for k, v := c.First(); k != nil && n < limit; {
			var e Entry
			if err := decodeEntry(v, &e); err != nil {
				return err
			}
			if !e.Created.Before(before) {
				return nil // ids are in time order
			}
			if jobs.Get(k) != nil {
				k, v = c.Next()
				continue
			}
			if err := ub.Delete(histKey(asciiLower(e.User), e.ID)); err != nil {
				return err
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
