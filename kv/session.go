package kv

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// PutNonce stores a one-time value (an OAuth state, say) until expires.
func (s *Store) PutNonce(key string, expires time.Time) error {
	err := s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNonce).Put([]byte(key), appendUint64(nil, uint64(expires.UnixNano())))
	})
	if err != nil {
		return fmt.Errorf("kv: put nonce: %w", err)
	}
	return nil
}

// TakeNonce consumes a one-time value. It reports false if the value is
// unknown, already used or expired; either way the value is gone afterwards.
func (s *Store) TakeNonce(key string) (bool, error) {
	ok := false
	err := s.update(func(tx *bolt.Tx) error {
		ok = false
		b := tx.Bucket(bucketNonce)
		v := b.Get([]byte(key))
		if v == nil {
			return nil
		}
		ok = len(v) == 8 && int64(binary.BigEndian.Uint64(v)) > s.now().UnixNano()
		return b.Delete([]byte(key))
	})
	if err != nil {
		return false, fmt.Errorf("kv: take nonce: %w", err)
	}
	return ok, nil
}

// Session is a signed-in history-page user.
type Session struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
}

// PutSession stores a session.
func (s *Store) PutSession(sess Session) error {
	err := s.update(func(tx *bolt.Tx) error {
		return put(tx.Bucket(bucketSession), []byte(sess.ID), sess)
	})
	if err != nil {
		return fmt.Errorf("kv: put session: %w", err)
	}
	return nil
}

// Session returns a live session; expired or unknown ones are ErrNotFound.
func (s *Store) Session(id string) (Session, error) {
	var sess Session
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSession).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		if err := decode(v, &sess); err != nil {
			return err
		}
		if !sess.Expires.After(s.now()) {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return Session{}, fmt.Errorf("kv: session: %w", err)
	}
	return sess, nil
}

// DeleteSession removes a session (logout).
func (s *Store) DeleteSession(id string) error {
	err := s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSession).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("kv: delete session: %w", err)
	}
	return nil
}

// PruneExpired removes expired nonces and sessions.
func (s *Store) PruneExpired() error {
	now := s.now()
	err := s.update(func(tx *bolt.Tx) error {
		var dead [][]byte
		nb := tx.Bucket(bucketNonce)
		if err := nb.ForEach(func(k, v []byte) error {
			if len(v) != 8 || int64(binary.BigEndian.Uint64(v)) <= now.UnixNano() {
				dead = append(dead, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range dead {
			if err := nb.Delete(k); err != nil {
				return err
			}
		}
		dead = dead[:0]
		sb := tx.Bucket(bucketSession)
		if err := sb.ForEach(func(k, v []byte) error {
			var sess Session
			if decode(v, &sess) != nil || !sess.Expires.After(now) {
				dead = append(dead, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range dead {
			if err := sb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kv: prune expired: %w", err)
	}
	return nil
}

// SecretKey returns a random 32-byte key stored under name, creating it on
// first use. The history page signs its cookies with it when the config does
// not give a key, so sessions survive restarts.
func (s *Store) SecretKey(name string) ([]byte, error) {
	var key []byte
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		k := []byte("secret:" + name)
		if v := b.Get(k); len(v) == 32 {
			key = append([]byte(nil), v...)
			return nil
		}
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		return b.Put(k, key)
	})
	if err != nil {
		return nil, fmt.Errorf("kv: secret key: %w", err)
	}
	return key, nil
}
