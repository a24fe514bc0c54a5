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
var migrateChunk = 50_000 // a variable so the test can make several chunks cheaply

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
	return s.reindex()
}

// reindex replaces the per-user index of development builds (bucket
// "user_hist", without epochs) by bucketUserHist, built from the entries
// in transactions of indexRead keys. A crash part way leaves the old
// bucket gone and the watermark where the rebuild got to; the indexer
// finishes the rest.
func (s *Store) reindex() error {
	found := false
	err := s.guard("reindex", func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			if tx.Bucket(legacyUserHist) == nil {
				return nil
			}
			found = true
			if err := tx.DeleteBucket(legacyUserHist); err != nil {
				return err
			}
			return tx.Bucket(bucketMeta).Put(metaIndexed, idKey(0))
		})
	})
	if err != nil || !found {
		return err
	}
	start := time.Now()
	total := 0
	commit := func(fn func(*bolt.Tx) error) error {
		return s.guard("reindex", func() error {
			return s.db.Update(func(tx *bolt.Tx) error {
				setFill(tx)
				return fn(tx)
			})
		})
	}
	for {
		n, err := s.indexRound(indexRead, commit)
		if err != nil {
			return fmt.Errorf("kv: rebuild the history index: %w", err)
		}
		total += n
		if n < indexRead {
			break
		}
	}
	s.log.Info("kv: rebuilt the history index", "entries", total, "took", time.Since(start).String())
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
			setFill(tx)
			eb, ub := tx.Bucket(bucketEntries), tx.Bucket(bucketUserHist)
			move := func(k, v []byte) error {
				var e Entry
				if err := decode(v, &e); err != nil {
					return s.corruptAtStart(fmt.Sprintf("history entry %q", k), err)
				}
				if len(k) >= 8 {
					e.ID = binary.BigEndian.Uint64(k[len(k)-8:])
				}
				if err := eb.Put(idKey(e.ID), encodeEntry(&e)); err != nil {
					return err
				}
				return ub.Put(histKey(asciiLower(e.User), e.ID), nil)
			}
			// In id order (through the old id index), so the new entries
			// append; the watermark records the progress, so a crash part
			// way resumes where it stopped.
			wm := indexedUpTo(tx)
			if idx := tx.Bucket(legacyHistIndex); idx != nil {
				c := idx.Cursor()
				for k, user := c.Seek(idKey(wm + 1)); k != nil; k, user = c.Next() {
					if n == migrateChunk {
						more = true
						break
					}
					id := binary.BigEndian.Uint64(k)
					hk := histKey(string(user), id)
					if v := old.Get(hk); v != nil {
						if err := move(hk, v); err != nil {
							return err
						}
					}
					wm = id
					n++
				}
				if err := tx.Bucket(bucketMeta).Put(metaIndexed, idKey(wm)); err != nil {
					return err
				}
				if more {
					return nil
				}
			}
			// Entries the old index missed, if any; then the old buckets go.
			err := old.ForEach(func(k, v []byte) error {
				if len(k) < 8 || eb.Get(k[len(k)-8:]) != nil {
					return nil
				}
				n++
				if id := binary.BigEndian.Uint64(k[len(k)-8:]); id > wm {
					wm = id
				}
				return move(k, v)
			})
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketMeta).Put(metaIndexed, idKey(wm)); err != nil {
				return err
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
