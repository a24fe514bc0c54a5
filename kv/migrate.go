package kv

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// migrateChunk is how many legacy entries one migration transaction moves,
// so a large file is converted in bounded transactions and a crash part way
// simply resumes at the next Open.
const migrateChunk = 5000

// migrate brings records written by older releases up to date. It runs in
// Open, before the committer starts: history entries of the previous
// release (JSON in bucket "hist", keyed by user, with "hist_index") move to
// the id-keyed binary layout with a case-folded per-user index. Pending jobs
// and dedup marks keep their old encoding (still read as they are).
func (s *Store) migrate() error {
	start := time.Now()
	total := 0
	for {
		n, more, err := s.migrateChunk()
		if err != nil {
			return fmt.Errorf("kv: migrate history: %w", err)
		}
		total += n
		if !more {
			break
		}
	}
	if total > 0 {
		s.log.Info("kv: migrated history to the new layout", "entries", total, "took", time.Since(start).String())
	}
	return nil
}

func (s *Store) migrateChunk() (n int, more bool, err error) {
	err = s.guard("migrate", func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			n, more = 0, false
			old := tx.Bucket(legacyHist)
			if old == nil {
				return nil
			}
			eb, ub := tx.Bucket(bucketEntries), tx.Bucket(bucketUserHist)
			wm := indexedUpTo(tx)
			c := old.Cursor()
			for k, v := c.First(); k != nil; k, v = c.First() {
				if n == migrateChunk {
					more = true
					break
				}
				var e Entry
				if err := decode(v, &e); err != nil {
					return s.corruptAtStart("history entry "+fmt.Sprintf("%q", k), err)
				}
				if len(k) >= 8 {
					e.ID = binary.BigEndian.Uint64(k[len(k)-8:])
				}
				if err := eb.Put(idKey(e.ID), encodeEntry(&e)); err != nil {
					return err
				}
				if err := ub.Put(histKey(asciiLower(e.User), e.ID), nil); err != nil {
					return err
				}
				if e.ID > wm {
					wm = e.ID
				}
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
			if n > 0 {
				if err := tx.Bucket(bucketMeta).Put(metaIndexed, idKey(wm)); err != nil {
					return err
				}
			}
			if more {
				return nil
			}
			if err := tx.DeleteBucket(legacyHist); err != nil {
				return err
			}
			if tx.Bucket(legacyHistIndex) != nil {
				return tx.DeleteBucket(legacyHistIndex)
			}
			return nil
		})
	})
	return n, more, err
}
