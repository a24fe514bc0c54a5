package kv

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket names. They are immutable values, not state.
var (
	bucketSeen     = []byte("seen")      // app\x00dedupKey -> received unix nanos
	bucketSeenTime = []byte("seen_time") // BE(unix nanos) app\x00dedupKey -> nil, for pruning
	bucketJobs     = []byte("jobs")      // BE(id) -> Job JSON
	bucketConv     = []byte("conv")      // app\x00user -> Conversation JSON
	bucketEntries  = []byte("entries")   // BE(id) -> Entry (binary, see binary.go)
	bucketUserHist = []byte("hist_idx")  // BE32(epoch) fold(user)\x00BE(id) -> nil, built behind the intake
	bucketDedup    = []byte("dedup")     // BE(msg unix seconds) app\x00dedupKey -> nil
	bucketDedupLog = []byte("dedup_log") // BE(seq) -> dedup key not yet moved into bucketDedup
	bucketQuota    = []byte("quota")     // app\x00user -> quota JSON
	bucketNonce    = []byte("nonce")     // key -> BE(expiry unix nanos)
	bucketSession  = []byte("session")   // id -> Session JSON
	bucketMeta     = []byte("meta")      // misc small values
	bucketSends    = []byte("sends")     // BE(unix nanos) app\x00member -> nil, per-member send budget
)

var allBuckets = [][]byte{bucketSeen, bucketSeenTime, bucketJobs, bucketConv, bucketEntries,
	bucketUserHist, bucketDedup, bucketDedupLog, bucketQuota, bucketNonce, bucketSession, bucketMeta, bucketSends}

// bucketHistIndex is kept as a name for backup.go's record count: there is
// one record per history entry in bucketEntries. New code uses statsTx.
var bucketHistIndex = bucketEntries

// Buckets of the previous release, migrated by Open and then dropped.
var (
	legacyHist      = []byte("hist")       // user\x00BE(id) -> Entry JSON
	legacyHistIndex = []byte("hist_index") // BE(id) -> user
	// legacyUserHist is the per-user index of development builds between
	// the two releases (fold(user)\x00BE(id), no epochs); Open drops it and
	// builds bucketUserHist from the entries.
	legacyUserHist = []byte("user_hist")
)

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
	// IndexEvery is how often new history entries are added to the per-user
	// index, in one batch (default 5 s). Entries not indexed yet are found
	// by a scan of the newest entries, so this trades write volume (one leaf
	// rewrite per user per batch instead of per question) for a slightly
	// longer history query under heavy intake.
	IndexEvery time.Duration
	// IndexBatch starts an index batch early once this many entries wait
	// (default 20,000), bounding that scan.
	IndexBatch int
	// AllowEmpty lets Open turn an existing 0-byte file into a fresh
	// database. By default such a file is an error (*CorruptError): an empty
	// file where a database was expected means the data is gone, and the
	// operator should restore a backup rather than silently start over. A
	// missing file is always created.
	AllowEmpty bool
	// FailWrites is a fault hook for tests: when set, it is called before
	// each commit, and a non-nil error fails that commit the way a full disk
	// (ENOSPC) or an I/O error does: the transaction is rolled back, every
	// caller in the group gets the error, and WriteErr reports it until a
	// later commit succeeds. Leave it nil in production.
	FailWrites func() error
}

// Store is the bbolt-backed state of the daemon. It is safe for concurrent use.
type Store struct {
	commitTimes commitStats // durations and sizes of group commits

	db   *bolt.DB
	now  func() time.Time
	log  *slog.Logger
	path string

	writes chan *writeReq
	done   chan struct{}
	closed chan struct{}
	max    int
	fault  func() error

	commits atomic.Uint64 // successful commits, for Stats

	// Dedup marks in bucketDedupLog, for lookups until the index batch
	// moves them into bucketDedup (bounded by Options.IndexBatch). Owned by
	// the committer goroutine: only write transactions use them. txMarks
	// are the current transaction's, merged into recent when it commits.
	recent  map[string]struct{}
	txMarks map[string]struct{}
	txDone  []func() // run after the current transaction commits

	indexEvery time.Duration
	indexBatch int
	unindexed  atomic.Int64
	indexMu    sync.Mutex // one index batch at a time

	indexKick chan struct{}
	indexDone chan struct{}

	trimmedAt atomic.Int64 // file size in use at the last TrimMapped
	trimKick  chan struct{}
	trimDone  chan struct{}

	werrMu sync.Mutex
	werr   error // last commit-level failure, cleared by a successful commit
}

// Open opens (creating if needed) the database file at path, checks its
// structure, creates every bucket, migrates records of older releases, and
// starts the group committer.
//
// A damaged file (truncated, overwritten pages, or 0 bytes without
// Options.AllowEmpty) is refused with a *CorruptError (errors.Is
// ErrCorrupt) that names the file and how to recover; Open never panics on
// one.
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
	if opts.IndexEvery <= 0 {
		opts.IndexEvery = 5 * time.Second
	}
	if opts.IndexBatch <= 0 {
		opts.IndexBatch = 20_000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("kv: create directory for storage.path: %w", err)
		}
	}
	switch st, err := os.Stat(path); {
	case errors.Is(err, fs.ErrNotExist):
		// A new install: bbolt creates the file.
	case err != nil:
		return nil, fmt.Errorf("kv: open %s: %w", path, err)
	case st.Size() == 0:
		if !opts.AllowEmpty {
			return nil, &CorruptError{Path: path, Empty: true}
		}
	default:
		if err := checkFile(path, opts.LockTimeout); err != nil {
			return nil, err
		}
	}
	s := &Store{
		now:    opts.Now,
		log:    opts.Logger,
		path:   path,
		writes: make(chan *writeReq, opts.MaxBatch),
		done:   make(chan struct{}),
		closed: make(chan struct{}),
		max:    opts.MaxBatch,
		fault:  opts.FailWrites,

		indexEvery: opts.IndexEvery,
		indexBatch: opts.IndexBatch,
		indexKick:  make(chan struct{}, 1),
		recent:     make(map[string]struct{}),
		txMarks:    make(map[string]struct{}),
		indexDone:  make(chan struct{}),
		trimKick:   make(chan struct{}, 1),
		trimDone:   make(chan struct{}),
	}
	var db *bolt.DB
	err := s.guard("open", func() (err error) {
		db, err = bolt.Open(path, 0o600, &bolt.Options{
			Timeout:      opts.LockTimeout,
			NoSync:       opts.NoSync,
			FreelistType: bolt.FreelistMapType,
			// The freelist is rebuilt at open (a walk like the check's)
			// instead of written at every commit: on a file with many free
			// pages (after the history migration shrank 1 M entries to a
			// third) it was megabytes per commit.
			NoFreelistSync: true,
		})
		return err
	})
	if err != nil {
		var ce *CorruptError
		switch {
		case errors.As(err, &ce):
			return nil, err
		case errors.Is(err, bolt.ErrTimeout):
			return nil, lockedError(path)
		case errors.Is(err, bolt.ErrInvalid), errors.Is(err, bolt.ErrChecksum), errors.Is(err, bolt.ErrVersionMismatch):
			return nil, &CorruptError{Path: path, Reason: err.Error()}
		}
		return nil, fmt.Errorf("kv: open %s: %w", path, err)
	}
	s.db = db
	err = s.guard("create buckets", func() error {
		return db.Update(func(tx *bolt.Tx) error {
			for _, b := range allBuckets {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err == nil {
		err = s.migrate()
	}
	if err == nil {
		err = s.loadDedupLog()
	}
	if err != nil {
		_ = db.Close()
		var ce *CorruptError
		if errors.As(err, &ce) {
			return nil, err
		}
		return nil, fmt.Errorf("kv: prepare %s: %w", path, err)
	}
	s.unindexed.Store(1) // whatever the last run left unindexed
	go s.committer()
	go s.indexer()
	go s.trimmer()
	return s, nil
}

func lockedError(path string) error {
	return fmt.Errorf("kv: open %s: the file is locked by another process (is another wecom-bridge running?)", path)
}

// guard runs fn so that a bbolt panic or a memory fault on a damaged file
// (debug.SetPanicOnFault) becomes a *CorruptError instead of killing the
// process. bbolt rolls its transaction back on the way out.
func (s *Store) guard(what string, fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("kv: bbolt failed on a damaged database", "op", what, "panic", fmt.Sprint(r))
			err = &CorruptError{Path: s.path, Reason: fmt.Sprintf("%s: %v", what, r)}
		}
	}()
	return fn()
}

// view is db.View under guard.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	return s.guard("read", func() error { return s.db.View(fn) })
}

// appendBuckets only ever grow at their end (time- or id-ordered keys):
// their pages are filled almost completely when they split, instead of
// bbolt's default half, which halves both the pages written per commit and
// the file size.
var appendBuckets = [][]byte{bucketEntries, bucketJobs, bucketDedup, bucketDedupLog, bucketSeenTime, bucketSends}

func setFill(tx *bolt.Tx) {
	for _, name := range appendBuckets {
		if b := tx.Bucket(name); b != nil {
			b.FillPercent = 0.95
		}
	}
}

// WriteErr returns the error of the last commit that failed at the storage
// level (disk full, I/O error, a damaged page), or nil when no commit has
// failed since the last one that succeeded. /healthz reports unhealthy while
// it is set: a tiny probe write may still fit when real writes do not.
func (s *Store) WriteErr() error {
	s.werrMu.Lock()
	defer s.werrMu.Unlock()
	return s.werr
}

func (s *Store) setWriteErr(err error) {
	s.werrMu.Lock()
	s.werr = err
	s.werrMu.Unlock()
}

// indexer adds new history entries to the per-user index in batches.
func (s *Store) indexer() {
	defer close(s.indexDone)
	t := time.NewTicker(s.indexEvery)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		case <-s.indexKick:
		}
		if s.unindexed.Load() == 0 {
			continue
		}
		if err := s.IndexHistory(); err != nil && !errors.Is(err, errStoreClosed) {
			s.log.Warn("kv: indexing history failed; retrying later", "err", err)
		}
	}
}

// Index batches are split into short transactions, each shared with
// whatever intake is committing at the time, so that a batch never holds
// the committer (and every ack behind it) for long. The keys of a batch are
// put in sorted order, so consecutive chunks touch neighbouring leaves of
// the per-user index and the batch as a whole still rewrites each leaf
// about once.
const (
	indexRead  = 50_000 // entries read per round
	indexChunk = 128    // index keys per transaction: at most that many leaves
	dedupChunk = 2_000  // dedup marks moved per transaction (they append)
)

// IndexHistory adds every history entry not indexed yet to the per-user
// index now, and moves the dedup log into the time-keyed set. The store
// does this by itself every Options.IndexEvery; the call is for tests and
// for a clean shutdown.
//
// A crash between two chunks leaves keys above the watermark in the index;
// History ignores those (it scans entries above the watermark directly),
// and the next batch puts them again, which changes nothing.
func (s *Store) IndexHistory() error {
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	for {
		pending := s.unindexed.Load()
		n, err := s.indexRound(indexChunk, s.update)
		if err != nil {
			return fmt.Errorf("kv: index history: %w", err)
		}
		moved := 0
		for moved < indexRead {
			m := 0
			err := s.update(func(tx *bolt.Tx) (err error) {
				m, err = s.moveDedupLog(tx, dedupChunk)
				return err
			})
			if err != nil {
				return fmt.Errorf("kv: index history: move dedup marks: %w", err)
			}
			moved += m
			if m < dedupChunk {
				break
			}
		}
		if n < indexRead && moved < indexRead {
			s.unindexed.Add(-pending)
			return nil
		}
	}
}

// indexRound indexes up to indexRead entries above the watermark, chunk
// keys per transaction run by commit, and moves the watermark with the
// last chunk. It returns how many entries it read.
func (s *Store) indexRound(chunk int, commit func(func(*bolt.Tx) error) error) (int, error) {
	keys, last, err := s.unindexedKeys(indexRead)
	if err != nil {
		return 0, err
	}
	for i := 0; i < len(keys); i += chunk {
		part := keys[i:min(i+chunk, len(keys))]
		final := i+chunk >= len(keys)
		err := commit(func(tx *bolt.Tx) error {
			ub := tx.Bucket(bucketUserHist)
			for _, k := range part {
				if err := ub.Put(k, nil); err != nil {
					return err
				}
			}
			if final && last > indexedUpTo(tx) {
				return tx.Bucket(bucketMeta).Put(metaIndexed, idKey(last))
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

// loadDedupLog fills s.recent from the marks the last run left in the log.
func (s *Store) loadDedupLog() error {
	return s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDedupLog).ForEach(func(_, v []byte) error {
			s.recent[string(v)] = struct{}{}
			return nil
		})
	})
}

// moveDedupLog moves up to max marks from the log into the time-keyed set.
// The batch covers the last seconds of traffic, so it rewrites the few
// newest leaves of that set once, instead of one leaf per question.
func (s *Store) moveDedupLog(tx *bolt.Tx, max int) (int, error) {
	db := tx.Bucket(bucketDedup)
	c := tx.Bucket(bucketDedupLog).Cursor()
	var moved []string
	for k, v := c.First(); k != nil && len(moved) < max; k, v = c.First() {
		if err := db.Put(v, nil); err != nil {
			return 0, err
		}
		moved = append(moved, string(v))
		if err := c.Delete(); err != nil {
			return 0, err
		}
	}
	s.txDone = append(s.txDone, func() {
		for _, k := range moved {
			delete(s.recent, k)
		}
	})
	return len(moved), nil
}

// noteEntries counts new history entries and starts an index batch early
// when enough wait.
func (s *Store) noteEntries(n int) {
	if s.unindexed.Add(int64(n)) >= int64(s.indexBatch) {
		select {
		case s.indexKick <- struct{}{}:
		default:
		}
	}
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
	<-s.indexDone
	<-s.trimDone
	<-s.closed
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("kv: close: %w", err)
	}
	return nil
}

// Ping checks that the database accepts a write (for /healthz). It also
// fails while WriteErr is set: the probe is tiny and may fit on a disk where
// the daemon's real writes do not, so its own success does not clear
// WriteErr.
func (s *Store) Ping() error {
	err := s.submit(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte("ping"), appendUint64(nil, uint64(s.now().UnixNano())))
	}, true)
	if err != nil {
		return fmt.Errorf("kv: ping: %w", err)
	}
	if werr := s.WriteErr(); werr != nil {
		return fmt.Errorf("kv: writes are failing: %w", werr)
	}
	return nil
}

// Stats reports sizes for metrics.
type Stats struct {
	PendingJobs    int
	HistoryEntries int
	SeenKeys       int
	FileBytes      int64
	Commits        uint64 // successful write transactions since Open
}

// Stats returns record counts.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.view(func(tx *bolt.Tx) error {
		st = statsTx(tx)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("kv: stats: %w", err)
	}
	st.Commits = s.commits.Load()
	return st, nil
}

// statsTx counts the records of a file in the current layout.
func statsTx(tx *bolt.Tx) Stats {
	n := func(name []byte) int {
		if b := tx.Bucket(name); b != nil {
			return b.Stats().KeyN
		}
		return 0
	}
	return Stats{
		PendingJobs:    n(bucketJobs),
		HistoryEntries: n(bucketEntries) + n(legacyHist),
		SeenKeys:       n(bucketSeen) + n(bucketDedup) + n(bucketDedupLog),
		FileBytes:      tx.Size(),
	}
}

// writeReq is one caller's change waiting for the group committer.
type writeReq struct {
	fn    func(*bolt.Tx) error
	err   chan error
	probe bool // Ping's write: its success does not clear WriteErr
}

var errStoreClosed = errors.New("kv: store is closed")

// update runs fn in a read-write transaction shared with other concurrent
// callers, and returns once that transaction is durably committed.
func (s *Store) update(fn func(*bolt.Tx) error) error { return s.submit(fn, false) }

func (s *Store) submit(fn func(*bolt.Tx) error, probe bool) error {
	select {
	case <-s.done:
		return errStoreClosed
	default:
	}
	req := &writeReq{fn: fn, err: make(chan error, 1), probe: probe}
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

// maxYields bounds how often the committer yields to let a group fill.
const maxYields = 8

// committer takes one request, then everything else already waiting (up to
// MaxBatch), and commits them in one transaction. While a commit's fsync
// runs, new requests queue up and form the next group, so the batch size
// follows the load and an idle store adds no delay.
func (s *Store) committer() {
	defer close(s.closed)
	batch := make([]*writeReq, 0, s.max)
	errs := make([]error, 0, s.max) // per-caller results, reused
	for {
		var first *writeReq
		select {
		case first = <-s.writes:
		case <-s.done:
			// Drain what is queued so no caller hangs.
			for {
				select {
				case r := <-s.writes:
					errs = s.timedCommit([]*writeReq{r}, errs)
				default:
					return
				}
			}
		}
		batch = append(batch[:0], first)
		// The first request wakes this goroutine at once (a channel send
		// runs the receiver next), so on a busy core the group would be
		// that one request while other handlers are still mid-parse, and
		// the next group only what arrived during this commit's fsync.
		// Yielding first lets every goroutine that is ready run up to its
		// own submit; it stops as soon as a yield brings no one, so an
		// idle store adds no delay.
		for range maxYields {
			n := len(s.writes)
			if n >= s.max-1 {
				break
			}
			runtime.Gosched()
			if len(s.writes) == n {
				break
			}
		}
	drain:
		for len(batch) < s.max {
			select {
			case r := <-s.writes:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		errs = s.timedCommit(batch, errs)
	}
}

// timedCommit commits the batch, records how long it took, and only then
// hands each caller its result, so a caller that has returned is already
// counted in CommitStats. errs is scratch space, returned for reuse.
func (s *Store) timedCommit(batch []*writeReq, errs []error) []error {
	start := time.Now()
	errs = s.commit(batch, errs[:0])
	s.commitTimes.observe(time.Since(start), len(batch))
	for i, r := range batch {
		r.err <- errs[i]
	}
	clear(errs)
	return errs
}

// commit runs the batch in one transaction and appends each caller's result
// to errs. If one function fails, the transaction is rolled back and each
// function is run on its own, so one caller's error never fails another
// caller. A failure of the commit itself (or of the FailWrites hook) rolls
// everything back and fails every caller: nothing of the group is
// half-written, and each caller's function will be run afresh by its retry.
func (s *Store) commit(batch []*writeReq, errs []error) []error {
	failed := -1
	err := s.runTx(func(tx *bolt.Tx) error {
		for i, r := range batch {
			if err := r.fn(tx); err != nil {
				failed = i
				return err
			}
		}
		return nil
	}, batch)
	if err == nil {
		for range batch {
			errs = append(errs, nil)
		}
		return errs
	}
	var ce *CorruptError
	if len(batch) == 1 || (failed < 0 && !errors.As(err, &ce)) {
		// A commit-level failure (disk full, I/O error): everyone sees it.
		if len(batch) > 1 {
			s.log.Warn("kv: group commit failed", "callers", len(batch), "err", err)
		}
		for range batch {
			errs = append(errs, err)
		}
		return errs
	}
	for _, r := range batch {
		errs = append(errs, s.runTx(r.fn, []*writeReq{r}))
	}
	return errs
}

// runTx runs fn in one read-write transaction under guard, applies the
// FailWrites hook, and keeps WriteErr up to date.
func (s *Store) runTx(fn func(*bolt.Tx) error, batch []*writeReq) error {
	callerErr := false
	var size int64
	err := s.guard("write", func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			clear(s.txMarks)
			s.txDone = s.txDone[:0]
			setFill(tx)
			if err := fn(tx); err != nil {
				callerErr = true
				return err
			}
			if s.fault != nil {
				if err := s.fault(); err != nil {
					return fmt.Errorf("kv: commit: %w", err)
				}
			}
			size = tx.Size()
			return nil
		})
	})
	if err == nil {
		for k := range s.txMarks {
			s.recent[k] = struct{}{}
		}
		for _, f := range s.txDone {
			f()
		}
	}
	clear(s.txMarks)
	s.txDone = s.txDone[:0]
	switch {
	case err == nil:
		s.commits.Add(1)
		s.noteSize(size)
		for _, r := range batch {
			if !r.probe {
				s.setWriteErr(nil)
				break
			}
		}
	case !callerErr:
		s.setWriteErr(err)
	}
	return err
}
