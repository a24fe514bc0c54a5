package kv

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Attachment is a picture, file, voice message or video that is part of a
// question. The intake records where WeCom keeps it (MediaID for an app,
// URL and AESKey for a bot; both expire), the bridge downloads it at once
// into the media directory next to the database and records the file's
// name; the question is asked with it.
type Attachment struct {
	Kind string `json:"kind"` // "image", "file", "voice" or "video"
	Name string `json:"name,omitempty"`
	MIME string `json:"mime,omitempty"`
	Size int64  `json:"size,omitempty"`

	// Where WeCom keeps it until it is fetched.
	MediaID string `json:"media_id,omitempty"` // app: media/get (valid 3 days)
	URL     string `json:"url,omitempty"`      // bot: encrypted download (valid 5 minutes)
	AESKey  string `json:"aeskey,omitempty"`   // bot: the key of URL

	// File is the file's name in the media directory once fetched.
	File string `json:"file,omitempty"`
	// Transcript is what a voice message said.
	Transcript string `json:"transcript,omitempty"`
	// Problem says, for the user, why the attachment was not used
	// (too large, expired, a kind the backend does not take).
	Problem string `json:"problem,omitempty"`
}

// public is the attachment as the history keeps it: without WeCom's
// download handles.
func (a Attachment) public() Attachment {
	a.MediaID, a.URL, a.AESKey = "", "", ""
	return a
}

// publicAttachments copies attachments for a history entry.
func publicAttachments(as []Attachment) []Attachment {
	if len(as) == 0 {
		return nil
	}
	out := make([]Attachment, len(as))
	for i, a := range as {
		out[i] = a.public()
	}
	return out
}

// MergeAttachments moves the attachments of a held question (src: pictures
// or files sent alone, waiting for the text that usually follows) into the
// next question of the same user (dst), in one transaction: dst's job and
// history entry get them ahead of their own, and src's job and entry are
// removed, its question now being part of dst's. Both jobs are re-read from
// the store; dst is updated in place.
func (s *Store) MergeAttachments(dst, src *Job) error {
	err := s.update(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		var d, sj Job
		v := jobs.Get(idKey(dst.ID))
		if v == nil {
			return ErrNotFound
		}
		if err := decodeJob(v, &d); err != nil {
			return err
		}
		if v = jobs.Get(idKey(src.ID)); v == nil {
			return ErrNotFound
		}
		if err := decodeJob(v, &sj); err != nil {
			return err
		}
		d.Attachments = append(append([]Attachment(nil), sj.Attachments...), d.Attachments...)
		if err := jobs.Put(idKey(d.ID), encodeJob(&d)); err != nil {
			return err
		}
		if err := jobs.Delete(idKey(sj.ID)); err != nil {
			return err
		}
		var e Entry
		switch err := getEntry(tx, d.User, d.ID, &e); {
		case err == nil:
			e.Attachments = publicAttachments(d.Attachments)
			e.Updated = s.now()
			if err := putEntry(tx, &e); err != nil {
				return err
			}
		case !errors.Is(err, ErrNotFound):
			return err
		}
		if err := tx.Bucket(bucketEntries).Delete(idKey(sj.ID)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketUserHist).Delete(histKey(asciiLower(sj.User), sj.ID)); err != nil {
			return err
		}
		*dst = d
		return nil
	})
	if err != nil {
		return fmt.Errorf("kv: merge attachments of %d into %d: %w", src.ID, dst.ID, err)
	}
	return nil
}

// SetFetched records what the download of attachments found (File, Name,
// MIME, Size or Problem) in the job as it is now — which may have gained
// attachments of a held question meanwhile (MergeAttachments) — matching
// each by its WeCom handle (MediaID or URL). The history entry follows.
// The job is updated in place from the store.
func (s *Store) SetFetched(j *Job, fetched []Attachment) error {
	err := s.update(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		v := jobs.Get(idKey(j.ID))
		if v == nil {
			return ErrNotFound
		}
		var cur Job
		if err := decodeJob(v, &cur); err != nil {
			return err
		}
		for i := range cur.Attachments {
			a := &cur.Attachments[i]
			if a.File != "" || a.Problem != "" {
				continue
			}
			for _, f := range fetched {
				if f.MediaID == a.MediaID && f.URL == a.URL && (f.File != "" || f.Problem != "") {
					a.File, a.Name, a.MIME, a.Size, a.Problem, a.Transcript = f.File, f.Name, f.MIME, f.Size, f.Problem, f.Transcript
					break
				}
			}
		}
		if err := jobs.Put(idKey(cur.ID), encodeJob(&cur)); err != nil {
			return err
		}
		var e Entry
		switch err := getEntry(tx, cur.User, cur.ID, &e); {
		case err == nil:
			e.Attachments = publicAttachments(cur.Attachments)
			if err := putEntry(tx, &e); err != nil {
				return err
			}
		case !errors.Is(err, ErrNotFound):
			return err
		}
		*j = cur
		return nil
	})
	if err != nil {
		return fmt.Errorf("kv: record fetched attachments of %d: %w", j.ID, err)
	}
	return nil
}
