package kv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// WriteSnapshot writes a consistent copy of the whole database to w: one
// read transaction, so the copy is the state after some commit, with every
// write acknowledged before the call. Writers go on meanwhile, except that
// the file cannot grow its memory map until the copy is done. The copy is a
// valid bbolt file; it returns the bytes written. Cancelling ctx stops the
// copy at the next write.
func (s *Store) WriteSnapshot(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(ctxWriter{ctx: ctx, w: w})
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err() // bbolt does not wrap the writer's error
		}
		return n, fmt.Errorf("kv: snapshot: %w", err)
	}
	return n, nil
}

// SnapshotFile writes a consistent copy of the database file at path to w
// without a running Store: it opens the file read-only, which only works
// while no daemon holds it (bbolt's lock), waiting at most lockTimeout.
func SnapshotFile(ctx context.Context, path string, w io.Writer, lockTimeout time.Duration) (int64, error) {
	db, err := openReadOnly(path, lockTimeout)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int64
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(ctxWriter{ctx: ctx, w: w})
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return n, fmt.Errorf("kv: snapshot %s: %w", path, err)
	}
	return n, nil
}

// ErrLocked is returned by SnapshotFile and VerifySnapshot when another
// process (a running daemon) holds the file.
var ErrLocked = errors.New("kv: the database file is locked by another process (is wecom-bridge running?)")

// VerifySnapshot checks that the file at path is a whole wecom-bridge
// database: bbolt opens it read-only, every page is consistent (bbolt's own
// check) and every bucket is there. It returns the record counts.
func VerifySnapshot(path string) (st Stats, err error) {
	// bbolt trusts the page ids it reads: on a damaged file it panics, or
	// reads past the end of its memory map, which is a fault, not a panic.
	// This makes faults on this goroutine panics, recovered below.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kv: verify %s: the file is damaged: %v", path, r)
		}
	}()
	db, err := openReadOnly(path, time.Second)
	if err != nil {
		return st, err
	}
	defer db.Close()
	fi, err := os.Stat(path)
	if err != nil {
		return st, fmt.Errorf("kv: verify: %w", err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Size() > fi.Size() {
			return fmt.Errorf("the file is truncated: %d bytes, its pages need %d", fi.Size(), tx.Size())
		}
		// Every release has these; the others may be missing from the
		// backup of an older release (Open adds and migrates them).
		for _, b := range [][]byte{bucketJobs, bucketConv, bucketMeta} {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("bucket %q is missing (not a wecom-bridge database?)", b)
			}
		}
		for _, b := range allBuckets {
			bk := tx.Bucket(b)
			if bk == nil {
				continue
			}
			// Read every record here, where a fault is recovered, before
			// bbolt's own check walks the pages on a goroutine of its own.
			if err := bk.ForEach(func(k, v []byte) error { return nil }); err != nil {
				return fmt.Errorf("bucket %q: %w", b, err)
			}
		}
		var errs []error
		for e := range tx.Check() {
			errs = append(errs, e)
			if len(errs) == 10 {
				break
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("the file is damaged: %w", errors.Join(errs...))
		}
		st.PendingJobs = tx.Bucket(bucketJobs).Stats().KeyN
		for _, name := range [][]byte{bucketHistIndex, []byte("hist_index")} { // this release, the one before
			if bk := tx.Bucket(name); bk != nil {
				st.HistoryEntries = bk.Stats().KeyN
				break
			}
		}
		if bk := tx.Bucket(bucketSeen); bk != nil {
			st.SeenKeys = bk.Stats().KeyN
		}
		st.FileBytes = tx.Size()
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("kv: verify %s: %w", path, err)
	}
	return st, nil
}

// InUse reports whether a process holds the database file at path open (a
// running daemon): bbolt's lock is taken. A missing or damaged file is not
// in use.
func InUse(path string) bool {
	db, err := openReadOnly(path, 20*time.Millisecond)
	if err != nil {
		return errors.Is(err, ErrLocked)
	}
	_ = db.Close()
	return false
}

// openReadOnly opens an existing database file read-only (never creating
// one), recovering from bbolt's panics on a damaged file.
func openReadOnly(path string, lockTimeout time.Duration) (db *bolt.DB, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("kv: %w", err)
	}
	if fi.Size() == 0 {
		return nil, fmt.Errorf("kv: %s is empty, not a database", path)
	}
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("kv: open %s: the file is damaged: %v", path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("kv: open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("kv: open %s: %w", path, err)
	}
	return db, nil
}

// ctxWriter stops a long copy once its context is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
