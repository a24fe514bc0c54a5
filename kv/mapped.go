package kv

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// bbolt reads the file through a read-only shared memory map, so every
// page a transaction has touched stays mapped into the process and counts
// in its resident set: with 100,000 questions waiting, 30 MB of the store
// on top of 30 MB of heap. The pages are clean copies of the file, so the
// store drops them from its mapping now and then (after the file grew by
// trimGrowth, and every trimInterval). They stay in the kernel's page cache
// (the next read is a minor fault, not disk I/O), which reclaims them under
// pressure; what shrinks is the daemon's RSS, which is what operators watch
// and what the OOM killer weighs.
const (
	trimGrowth   = 4 << 20
	trimInterval = time.Second
)

// trimmer drops the mapped pages periodically and when kicked.
func (s *Store) trimmer() {
	defer close(s.trimDone)
	t := time.NewTicker(trimInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		case <-s.trimKick:
		}
		if err := s.TrimMapped(); err != nil {
			s.log.Debug("kv: dropping mapped pages failed", "err", err)
		}
	}
}

// TrimMapped drops the store's pages from this process's mapping (see
// trimGrowth). It runs inside a read transaction, which keeps bbolt from
// remapping the file meanwhile. Where the platform has no way to do this,
// it does nothing.
func (s *Store) TrimMapped() error {
	return s.view(func(tx *bolt.Tx) error {
		size := tx.Size()
		s.trimmedAt.Store(size)
		return dropMapping(s.db.Info().Data, size)
	})
}

// noteSize is called after each commit with the file's size in use, and
// kicks the trimmer once the file has grown by trimGrowth since its last
// run.
func (s *Store) noteSize(size int64) {
	if size-s.trimmedAt.Load() >= trimGrowth {
		select {
		case s.trimKick <- struct{}{}:
		default:
		}
	}
}
