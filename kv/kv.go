package kv

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket names. They are immutable values, not state.
var (
	bucketSeen      = []byte("seen")       // app\x00dedupKey -> received unix nanos
	bucketSeenTime  = []byte("seen_time")  // BE(unix nanos) app\x00dedupKey -> nil, for pruning
	bucketJobs      = []byte("jobs")       // BE(id) -> Job JSON
	bucketConv      = []byte("conv")       // app\x00user -> Conversation JSON
	bucketHist      = []byte("hist")       // user\x00BE(id) -> Entry JSON
	bucketHistIndex = []byte("hist_index") // BE(id) -> user, for retention and lookups
	bucketQuota     = []byte("quota")      // app\x00user -> quota JSON
	bucketNonce     = []byte("nonce")      // key -> BE(expiry unix nanos)
	bucketSession   = []byte("session")    // id -> Session JSON
	bucketMeta      = []byte("meta")       // misc small values
)

var allBuckets = [][]byte{bucketSeen, bucketSeenTime, bucketJobs, bucketConv, bucketHist,
	bucketHistIndex, bucketQuota, bucketNonce, bucketSession, bucketMeta}

// ErrNotFound is returned when a requested record does not exist.
var ErrNotFound = errors.New("kv: not found")

// Options tunes Open. The zero value is usable.
type Options struct {
	// LockTimeout bounds the wait for bbolt's file lock (another process
	// holding the file). Default 1 s.
	LockTimeout time.Duration
	// MaxBatch caps how many callers share one write transaction. Default 256.
	MaxBatch int
	// NoSync skips fsync on commit. Only for tests and benchmarks: a crash may
	// then lose acknowledged questions.
	NoSync bool
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives bbolt-level warnings; default discards.
	Logger *slog.Logger
}

// Store is the bbolt-backed state of the daemon. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	now  func() time.Time
	log  *slog.Logger
	path string

	writes chan *writeReq
	done   chan struct{}
	closed chan struct{}
	max    int
}

// Open opens (creating if needed) the database file at path, creates every
// bucket, and starts the group committer.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("kv: storage.path is empty")
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("kv: create directory for storage.path: %w", err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.LockTimeout,
		NoSync:       opts.NoSync,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("kv: open %s: the file is locked by another process (is another wecom-bridge running?)", path)
		}
		return nil, fmt.Errorf("kv: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("kv: create buckets: %w", err)
	}
	s := &Store{
		db:     db,
		now:    opts.Now,
		log:    opts.Logger,
		path:   path,
		writes: make(chan *writeReq, opts.MaxBatch),
		done:   make(chan struct{}),
		closed: make(chan struct{}),
		max:    opts.MaxBatch,
	}
	go s.committer()
	return s, nil
}

// Path returns the database file path.
func (s *Store) Path() string { return s.path }

// Close stops the committer (after the writes already queued) and closes the
// file. It is safe to call more than once.
func (s *Store) Close() error {
	select {
	case <-s.done:
		<-s.closed
		return nil
	default:
	}
	close(s.done)
	<-s.closed
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("kv: close: %w", err)
	}
	return nil
}

// Ping checks that the database accepts a write (for /healthz).
func (s *Store) Ping() error {
	return s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte("ping"), appendUint64(nil, uint64(s.now().UnixNano())))
	})
}

// Stats reports sizes for metrics.
type Stats struct {
	PendingJobs    int
	HistoryEntries int
	SeenKeys       int
	FileBytes      int64
}

// Stats returns record counts.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.db.View(func(tx *bolt.Tx) error {
		st.PendingJobs = tx.Bucket(bucketJobs).Stats().KeyN
		st.HistoryEntries = tx.Bucket(bucketHistIndex).Stats().KeyN
		st.SeenKeys = tx.Bucket(bucketSeen).Stats().KeyN
		st.FileBytes = tx.Size()
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("kv: stats: %w", err)
	}
	return st, nil
}

// writeReq is one caller's change waiting for the group committer.
type writeReq struct {
	fn  func(*bolt.Tx) error
	err chan error
}

var errStoreClosed = errors.New("kv: store is closed")

// update runs fn in a read-write transaction shared with other concurrent
// callers, and returns once that transaction is durably committed.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	select {
	case <-s.done:
		return errStoreClosed
	default:
	}
	req := &writeReq{fn: fn, err: make(chan error, 1)}
	select {
	case s.writes <- req:
	case <-s.done:
		return errStoreClosed
	}
	select {
	case err := <-req.err:
		return err
	case <-s.closed:
		// The committer drains the queue before it stops, so the result
		// may be there already; otherwise the request raced with Close.
		select {
		case err := <-req.err:
			return err
		default:
			return errStoreClosed
		}
	}
}

// committer takes one request, then everything else already waiting (up to
// MaxBatch), and commits them in one transaction. While a commit's fsync
// runs, new requests queue up and form the next group, so the batch size
// follows the load and an idle store adds no delay.
func (s *Store) committer() {
	defer close(s.closed)
	batch := make([]*writeReq, 0, s.max)
	for {
		var first *writeReq
		select {
		case first = <-s.writes:
		case <-s.done:
			// Drain what is queued so no caller hangs.
			for {
				select {
				case r := <-s.writes:
					s.commit([]*writeReq{r})
				default:
					return
				}
			}
		}
		batch = append(batch[:0], first)
	drain:
		for len(batch) < s.max {
			select {
			case r := <-s.writes:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		s.commit(batch)
	}
}

// commit runs the batch in one transaction. If one function fails, the
// transaction is rolled back and each function is run on its own, so one
// caller's error never fails another caller.
func (s *Store) commit(batch []*writeReq) {
	var failed int = -1
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i, r := range batch {
			if err := r.fn(tx); err != nil {
				failed = i
				return err
			}
		}
		return nil
	})
	if err == nil {
		for _, r := range batch {
			r.err <- nil
		}
		return
	}
	if len(batch) == 1 || failed < 0 {
		// A commit-level failure (disk full, I/O error): everyone sees it.
		if len(batch) > 1 {
			s.log.Warn("kv: group commit failed", "callers", len(batch), "err", err)
		}
		for _, r := range batch {
			r.err <- err
		}
		return
	}
	for _, r := range batch {
		r.err <- s.db.Update(r.fn)
	}
}
