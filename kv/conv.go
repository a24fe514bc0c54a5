package kv

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Turn is one question and answer, kept as memory for backends without
// server-side conversations (OpenAI-compatible APIs).
type Turn struct {
	Q string `json:"q"`
	A string `json:"a"`
}

// Conversation is the state of one user's conversation with one app.
type Conversation struct {
	// DifyID is Dify's conversation_id ("" before the first answer).
	DifyID string `json:"dify_id,omitempty"`
	// Turns are the recent turns, oldest first (OpenAI-compatible backends).
	Turns []Turn `json:"turns,omitempty"`
	// Seq numbers the user's conversations with this app; /new increments it.
	Seq int `json:"seq"`
	// Fresh is set by a reset and cleared by the next answer, so that the
	// next history entry shows where the new conversation starts.
	Fresh bool `json:"fresh,omitempty"`
	// LastActive is when the last answer was recorded.
	LastActive time.Time `json:"last_active"`
}

// Conversation returns the stored state for (app, user); a missing one is
// returned as the zero value.
func (s *Store) Conversation(app, user string) (Conversation, error) {
	var c Conversation
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketConv).Get(pairKey(app, user))
		if v == nil {
			return nil
		}
		return decode(v, &c)
	})
	if err != nil {
		return c, fmt.Errorf("kv: conversation: %w", err)
	}
	return c, nil
}

// SetConversation stores the state for (app, user).
func (s *Store) SetConversation(app, user string, c Conversation) error {
	err := s.update(func(tx *bolt.Tx) error {
		return put(tx.Bucket(bucketConv), pairKey(app, user), c)
	})
	if err != nil {
		return fmt.Errorf("kv: set conversation: %w", err)
	}
	return nil
}

// ResetConversation starts a fresh conversation for (app, user): it forgets
// the Dify id and the turns, and bumps the sequence number.
func (s *Store) ResetConversation(app, user string) (Conversation, error) {
	var c Conversation
	err := s.update(func(tx *bolt.Tx) error {
		c = Conversation{}
		b := tx.Bucket(bucketConv)
		k := pairKey(app, user)
		if v := b.Get(k); v != nil {
			if err := decode(v, &c); err != nil {
				return err
			}
		}
		c = Conversation{Seq: c.Seq + 1, Fresh: true, LastActive: s.now()}
		return put(b, k, c)
	})
	if err != nil {
		return c, fmt.Errorf("kv: reset conversation: %w", err)
	}
	return c, nil
}
