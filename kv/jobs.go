package kv

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Kind tells what a job has to do.
type Kind string

// Job kinds.
const (
	KindQuestion Kind = "question" // a text question for the LLM; also recorded in history
	KindCommand  Kind = "command"  // /new, /help and the like
	KindNotice   Kind = "notice"   // a fixed reply: unsupported message type, welcome, ...
)

// Question is what the intake records for one accepted callback.
type Question struct {
	App      string    `json:"app"`
	User     string    `json:"user"`
	DedupKey string    `json:"dedup"`
	Kind     Kind      `json:"kind"`
	Text     string    `json:"text"`
	MsgType  string    `json:"msg_type,omitempty"`
	Event    string    `json:"event,omitempty"`
	Received time.Time `json:"received"`
	// MsgTime is the message's own CreateTime, the same in each of WeCom's
	// retries (optional; ignored when zero or before 2000). With it, Accept
	// appends the dedup mark to a log and files it by that time, instead of
	// rewriting a random leaf of the MsgId-keyed set (about 7 KB less
	// written per accepted callback).
	MsgTime time.Time `json:"msg_time,omitzero"`

	// The AI bot channel: Chat is the group's chatid ("" in a one-to-one
	// chat), ReqID the callback's req_id to answer on, and ConvOwner the
	// owner of the conversation when it is not User (a group sharing one).
	Chat      string `json:"chat,omitempty"`
	ReqID     string `json:"req_id,omitempty"`
	ConvOwner string `json:"conv_owner,omitempty"`

	// Attachments are the question's pictures, files and voice messages.
	Attachments []Attachment `json:"attachments,omitempty"`
}

// Owner is whose conversation the question continues: ConvOwner if set,
// else the user. Questions of one owner are answered one after another.
func (q *Question) Owner() string {
	if q.ConvOwner != "" {
		return q.ConvOwner
	}
	return q.User
}

// Segment is a run of answer pieces being delivered. It is persisted before
// its first piece is sent, so that after a crash exactly the same pieces are
// sent again (and WeCom's duplicate check can drop a piece that was sent but
// whose acknowledgement was lost).
type Segment struct {
	RawEnd int      `json:"raw_end"` // offset in Job.Answer that the segment ends at
	Pieces []string `json:"pieces"`
	Sent   int      `json:"sent"` // pieces acknowledged by WeCom
	// Dup is the duplicate-check number of the first piece (the others
	// follow it); 0 when none was assigned (segments of older releases).
	Dup uint64 `json:"dup,omitempty"`
}

// Job is a pending question with its delivery progress.
type Job struct {
	ID uint64 `json:"id"`
	Question
	Attempts int `json:"attempts,omitempty"`
	// Panics counts the runs that ended in a panic (a bug); the bridge
	// gives up on a job that keeps panicking.
	Panics int `json:"panics,omitempty"`

	// Answer is the raw LLM answer: complete when AnswerDone, otherwise the
	// prefix that has been delivered so far.
	Answer     string `json:"answer,omitempty"`
	AnswerDone bool   `json:"answer_done,omitempty"`
	// Failed marks an answer that is an apology, not an LLM answer.
	Failed bool `json:"failed,omitempty"`
	// Delivered is the offset in Answer up to which pieces are acknowledged.
	Delivered int      `json:"delivered,omitempty"`
	Segment   *Segment `json:"segment,omitempty"`
	// NoticeMsgID is the msgid of a "thinking" notice to recall when done.
	NoticeMsgID string `json:"notice_msgid,omitempty"`
	// RefID is the reference id shown to the user in an apology.
	RefID string `json:"ref,omitempty"`
}

// Accept records an accepted callback: it checks the dedup set and, if the
// callback is new, marks it seen and (when q.Kind is not empty) records a
// pending job, plus a history entry for questions — all in one transaction.
// dup reports a retry of something already accepted; job is nil then, and
// also when only the dedup mark was recorded.
func (s *Store) Accept(q Question) (job *Job, dup bool, err error) {
	if !validID(q.App) || !validID(q.User) || q.DedupKey == "" {
		return nil, false, fmt.Errorf("kv: accept: app, user and dedup key are required")
	}
	if q.Received.IsZero() {
		q.Received = s.now()
	}
	err = s.update(func(tx *bolt.Tx) (err error) {
		job, dup, err = s.acceptTx(tx, q)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("kv: accept: %w", err)
	}
	if !dup {
		s.noteEntries(1) // a history entry or a dedup mark for the next batch
	}
	return job, dup, nil
}

// minMsgTime: a MsgTime before it (a missing CreateTime parsed as 0, say) is
// ignored, so the mark goes to the MsgId-keyed set and is not pruned as
// ancient at the next PruneSeen.
var minMsgTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// dedupKey is the time-ordered dedup mark of a message with a MsgTime.
func dedupKey(q *Question) []byte {
	secs := q.MsgTime.Unix()
	if secs < 0 {
		secs = 0
	}
	k := appendUint64(make([]byte, 0, 8+len(q.App)+1+len(q.DedupKey)), uint64(secs))
	k = append(k, q.App...)
	k = append(k, 0)
	return append(k, q.DedupKey...)
}

// acceptTx runs in the committer goroutine (as every write does), which
// owns s.recent and s.txMarks.
func (s *Store) acceptTx(tx *bolt.Tx, q Question) (*Job, bool, error) {
	seen := tx.Bucket(bucketSeen)
	sk := pairKey(q.App, q.DedupKey)
	var dk []byte
	if q.MsgTime.After(minMsgTime) {
		dk = dedupKey(&q)
		if _, ok := s.recent[string(dk)]; ok {
			return nil, true, nil
		}
		if _, ok := s.txMarks[string(dk)]; ok {
			return nil, true, nil
		}
		if tx.Bucket(bucketDedup).Get(dk) != nil {
			return nil, true, nil
		}
	}
	// Marks without a MsgTime, and those of older releases, are here.
	if seen.Get(sk) != nil {
		return nil, true, nil
	}
	ts := uint64(q.Received.UnixNano())
	if dk != nil {
		// Appended to the log now (one page for the whole commit group),
		// moved into the time-keyed set by the index batch.
		lb := tx.Bucket(bucketDedupLog)
		seq, err := lb.NextSequence()
		if err != nil {
			return nil, false, err
		}
		if err := lb.Put(idKey(seq), dk); err != nil {
			return nil, false, err
		}
		s.txMarks[string(dk)] = struct{}{}
	} else {
		if err := seen.Put(sk, appendUint64(nil, ts)); err != nil {
			return nil, false, err
		}
		tk := append(appendUint64(nil, ts), sk...)
		if err := tx.Bucket(bucketSeenTime).Put(tk, nil); err != nil {
			return nil, false, err
		}
	}
	if q.Kind == "" {
		return nil, false, nil
	}
	jobs := tx.Bucket(bucketJobs)
	id, err := jobs.NextSequence()
	if err != nil {
		return nil, false, err
	}
	j := &Job{ID: id, Question: q}
	if err := jobs.Put(idKey(id), encodeJob(j)); err != nil {
		return nil, false, err
	}
	if q.Kind == KindQuestion {
		if err := putEntry(tx, &Entry{
			ID: id, App: q.App, User: q.User, Question: q.Text, Chat: q.Chat,
			Attachments: publicAttachments(q.Attachments),
			Status:      StatusPending, Created: q.Received, Updated: q.Received,
		}); err != nil {
			return nil, false, err
		}
	}
	return j, false, nil
}

// Pending returns every job not yet done, oldest first.
func (s *Store) Pending() ([]*Job, error) {
	var out []*Job
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(_, v []byte) error {
			j := new(Job)
			if err := decodeJob(v, j); err != nil {
				return err
			}
			out = append(out, j)
			return nil
		})
	})
	if err != nil {
		return nil, s.corruptAtStart("pending jobs", err)
	}
	return out, nil
}

// Job returns one pending job.
func (s *Store) Job(id uint64) (*Job, error) {
	var j *Job
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketJobs).Get(idKey(id))
		if v == nil {
			return ErrNotFound
		}
		j = new(Job)
		return decodeJob(v, j)
	})
	if err != nil {
		return nil, fmt.Errorf("kv: job %d: %w", id, err)
	}
	return j, nil
}

// putLiveJob stores j over its pending record. It fails with ErrNotFound if
// the job is already done, so a late write never resurrects a finished job.
func putLiveJob(tx *bolt.Tx, j *Job) error {
	b := tx.Bucket(bucketJobs)
	k := idKey(j.ID)
	if b.Get(k) == nil {
		return ErrNotFound
	}
	return b.Put(k, encodeJob(j))
}

// ignoreMissing treats a history entry already pruned by retention as
// updated.
func ignoreMissing(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// SaveJob stores a job's progress. It fails with ErrNotFound if the job is
// already done, so a finished job is never resurrected.
func (s *Store) SaveJob(j *Job) error {
	err := s.update(func(tx *bolt.Tx) error { return putLiveJob(tx, j) })
	if err != nil {
		return fmt.Errorf("kv: save job %d: %w", j.ID, err)
	}
	return nil
}

// StartAttempt saves a job that is about to be asked (again) and marks its
// history entry as answering, in one transaction. A history entry already
// pruned by retention is not an error. Like SaveJob, it fails with
// ErrNotFound if the job is already done.
func (s *Store) StartAttempt(j *Job) error {
	err := s.update(func(tx *bolt.Tx) error {
		if err := putLiveJob(tx, j); err != nil {
			return err
		}
		if j.Kind != KindQuestion {
			return nil
		}
		return ignoreMissing(updateEntry(tx, j.User, j.ID, s.now(), &EntryUpdate{Status: StatusAnswering}))
	})
	if err != nil {
		return fmt.Errorf("kv: start attempt %d: %w", j.ID, err)
	}
	return nil
}

// AnswerUpdate is what CompleteAnswer records when the LLM has finished.
type AnswerUpdate struct {
	Job          *Job          // the job with Answer/AnswerDone/Failed set
	Conversation *Conversation // new conversation state; nil leaves it alone
	Entry        *EntryUpdate  // history update; nil leaves it alone
}

// EntryUpdate changes a history entry's answer and status.
type EntryUpdate struct {
	Answer    string
	Status    Status
	ConvSeq   int
	NewConv   bool
	RefID     string
	Truncated bool
	MessageID string // the backend's id of the answer
	// Attachments, when not nil, replace the entry's (as fetched).
	Attachments []Attachment
}

// CompleteAnswer records, in one transaction, the finished answer of a job,
// the conversation state it leads to and the history entry. Doing all three
// at once means a restart never asks the LLM again for an answer that was
// already recorded, and never advances the conversation twice.
func (s *Store) CompleteAnswer(u AnswerUpdate) error {
	j := u.Job
	err := s.update(func(tx *bolt.Tx) error {
		if err := putLiveJob(tx, j); err != nil {
			return err
		}
		if u.Conversation != nil {
			if err := put(tx.Bucket(bucketConv), pairKey(j.App, j.Owner()), u.Conversation); err != nil {
				return err
			}
		}
		if u.Entry != nil {
			return updateEntry(tx, j.User, j.ID, s.now(), u.Entry)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kv: complete answer %d: %w", j.ID, err)
	}
	return nil
}

// FinishJob removes a delivered job and, for questions, sets the final
// history status, in one transaction.
func (s *Store) FinishJob(j *Job, status Status) error {
	err := s.update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketJobs).Delete(idKey(j.ID)); err != nil {
			return err
		}
		if j.Kind != KindQuestion || status == "" {
			return nil
		}
		return ignoreMissing(updateEntry(tx, j.User, j.ID, s.now(), &EntryUpdate{Status: status}))
	})
	if err != nil {
		return fmt.Errorf("kv: finish job %d: %w", j.ID, err)
	}
	return nil
}

// PruneSeen forgets dedup marks older than before, at most limit per call,
// and returns how many it removed. WeCom only retries within seconds, so
// marks are kept for a safety window (the caller's choice), not forever.
func (s *Store) PruneSeen(before time.Time, limit int) (int, error) {
	n := 0
	cut := timeKey(before)
	secs := before.Unix()
	if secs < 0 {
		secs = 0
	}
	cutSecs := appendUint64(nil, uint64(secs))
	err := s.update(func(tx *bolt.Tx) error {
		n = 0
		seen := tx.Bucket(bucketSeen)
		c := tx.Bucket(bucketSeenTime).Cursor()
		for k, _ := c.First(); k != nil && n < limit; k, _ = c.First() {
			if len(k) < 8 || bytes.Compare(k[:8], cut) >= 0 {
				break
			}
			if err := seen.Delete(k[8:]); err != nil {
				return err
			}
			if err := c.Delete(); err != nil {
				return err
			}
			n++
		}
		// Marks still in the log move first, so every mark is prunable.
		if _, err := s.moveDedupLog(tx, 1<<20); err != nil {
			return err
		}
		dc := tx.Bucket(bucketDedup).Cursor()
		for k, _ := dc.First(); k != nil && n < limit; k, _ = dc.First() {
			if len(k) < 8 || bytes.Compare(k[:8], cutSecs) >= 0 {
				break
			}
			if err := dc.Delete(); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("kv: prune seen: %w", err)
	}
	return n, nil
}

// corruptAtStart turns an undecodable record met by a start-up read into a
// *CorruptError that names the file and the way to recover.
func (s *Store) corruptAtStart(what string, err error) error {
	var ce *CorruptError
	if errors.As(err, &ce) {
		return err
	}
	if errors.Is(err, ErrCorrupt) {
		return &CorruptError{Path: s.path, Reason: what + ": " + err.Error()}
	}
	return fmt.Errorf("kv: %s: %w", what, err)
}

// FinishJobWith removes a job and, for questions, applies u to its history
// entry, in one transaction. An entry already pruned by retention is not an
// error.
func (s *Store) FinishJobWith(j *Job, u EntryUpdate) error {
	err := s.update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketJobs).Delete(idKey(j.ID)); err != nil {
			return err
		}
		if j.Kind != KindQuestion {
			return nil
		}
		return ignoreMissing(updateEntry(tx, j.User, j.ID, s.now(), &u))
	})
	if err != nil {
		return fmt.Errorf("kv: finish job %d: %w", j.ID, err)
	}
	return nil
}

// FailJob gives up on a job (for example after too many attempts, see
// Job.Attempts, which StartAttempt stores durably): it removes the job and
// marks its history entry failed with refID, the reference id the user was
// given in the apology, and apology as the shown answer when it is not
// empty.
func (s *Store) FailJob(j *Job, refID, apology string) error {
	return s.FinishJobWith(j, EntryUpdate{Status: StatusFailed, RefID: refID, Answer: apology})
}

// PendingPage returns up to limit pending jobs with IDs greater than after,
// oldest first, so the caller can page through a large backlog without
// holding it all in memory: start with after = 0 and pass the last job's ID
// next; an empty page is the end.
func (s *Store) PendingPage(after uint64, limit int) ([]*Job, error) {
	if limit <= 0 {
		limit = 1000
	}
	var out []*Job
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketJobs).Cursor()
		for k, v := c.Seek(idKey(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			if after == ^uint64(0) {
				break
			}
			j := new(Job)
			if err := decodeJob(v, j); err != nil {
				return err
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, s.corruptAtStart("pending jobs", err)
	}
	return out, nil
}
