package kv

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// SetEntryFeedback records a user's rating of an answer ("like",
// "dislike", or "" when withdrawn) and their comment.
func (s *Store) SetEntryFeedback(user string, id uint64, rating, comment string) error {
	err := s.update(func(tx *bolt.Tx) error {
		var e Entry
		if err := getEntry(tx, user, id, &e); err != nil {
			return err
		}
		e.Feedback, e.FeedbackComment = rating, comment
		e.Updated = s.now()
		return putEntry(tx, &e)
	})
	if err != nil {
		return fmt.Errorf("kv: set feedback %d: %w", id, err)
	}
	return nil
}
