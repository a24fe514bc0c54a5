package bridge

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// pool runs jobs on at most n workers at once. Jobs of one (app, user) form
// a lane and run strictly one after another, in submission order; lanes run
// in parallel. Submitting never blocks: a job waiting for a worker is
// already durable in storage, so a full pool loses nothing.
//
// A waiting job costs only its record: lanes with work wait in a FIFO of
// ready lanes, and workers exist only while there is work (at most n). A
// burst of callbacks from thousands of users therefore queues without a
// goroutine per user.
type pool struct {
	n int
	// run runs a job; a positive result parks its lane (see park).
	run func(ctx context.Context, r jobRef) time.Duration
	log *slog.Logger
	wg  sync.WaitGroup

	mu      sync.Mutex
	lane    map[string]*lane // lanes with a job queued or running
	ready   laneQueue        // lanes with a job queued and none running
	workers int              // worker goroutines alive

	// stopped lanes take no new job (shutdown); queued jobs stay pending.
	stopped atomic.Bool
	queued  atomic.Int64
	active  atomic.Int64
}

// jobRef is what the pool keeps of a queued job: its id and lane. The job
// itself stays on disk until a worker takes it, so a backlog of a hundred
// thousand questions costs a few megabytes, not the records themselves.
type jobRef struct {
	ID   uint64
	Lane string
}

type lane struct {
	key     string
	jobs    []jobRef
	running bool // a worker is running one of its jobs (or it is parked)
	isReady bool // it is in pool.ready

	// A parked lane waits, without a worker, for the next job of its user
	// or for its timer: a picture sent alone waits for the question that
	// usually follows. parked is the job to run again then.
	parked *jobRef
	timer  *time.Timer
}

func newPool(n int, run func(context.Context, jobRef) time.Duration, log *slog.Logger) *pool {
	return &pool{n: n, run: run, log: log, lane: map[string]*lane{}}
}

func laneKey(app, user string) string { return app + "\x00" + user }

// submit queues a job on its lane and makes sure a worker will take it.
func (p *pool) submit(ctx context.Context, j *kv.Job) {
	key := laneKey(j.App, j.Owner())
	p.mu.Lock()
	// Checked under the lock that stop takes, so that no worker is added
	// (wg.Add) once stop has returned and wait may be running.
	if p.stopped.Load() {
		p.mu.Unlock()
		return
	}
	p.queued.Add(1)
	l := p.lane[key]
	if l == nil {
		l = &lane{key: key}
		p.lane[key] = l
	}
	l.jobs = append(l.jobs, jobRef{ID: j.ID, Lane: l.key}) // one string per lane, not per job
	if l.parked != nil {
		p.unparkLocked(l) // the parked job now has a successor to look at
	}
	if !l.running && !l.isReady {
		l.isReady = true
		p.ready.push(l)
	}
	start := p.claimWorkerLocked()
	p.mu.Unlock()
	if start {
		go p.work(ctx)
	}
}

// claimWorkerLocked reports whether the caller must start a worker for
// work just made ready (there are fewer than n); it counts it already.
// Call with p.mu held.
func (p *pool) claimWorkerLocked() bool {
	if p.workers >= p.n {
		return false
	}
	p.workers++
	p.wg.Add(1)
	return true
}

// unparkLocked puts a parked lane's job back in front of its queue and the
// lane in the ready queue. Call with p.mu held; the caller starts a worker.
func (p *pool) unparkLocked(l *lane) {
	if l.parked == nil {
		return
	}
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	p.queued.Add(1)
	l.jobs = append([]jobRef{*l.parked}, l.jobs...)
	l.parked = nil
	l.running = false
	if !l.isReady {
		l.isReady = true
		p.ready.push(l)
	}
}

// wake ends a lane's parking when its timer fires.
func (p *pool) wake(ctx context.Context, l *lane) {
	p.mu.Lock()
	if p.stopped.Load() || l.parked == nil {
		p.mu.Unlock()
		return
	}
	p.unparkLocked(l)
	start := p.claimWorkerLocked()
	p.mu.Unlock()
	if start {
		go p.work(ctx)
	}
}

// peek returns the job queued after the running one of a lane, if any.
func (p *pool) peek(key string) (jobRef, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.lane[key]
	if l == nil || len(l.jobs) == 0 {
		return jobRef{}, false
	}
	return l.jobs[0], true
}

// work runs the first job of ready lanes until none is left, then exits.
// A lane with more jobs goes to the back of the queue after each one, so a
// user with many questions does not hold a worker while others wait.
func (p *pool) work(ctx context.Context) {
	defer p.wg.Done()
	p.mu.Lock()
	for {
		if p.ready.len() == 0 || p.stopped.Load() || ctx.Err() != nil {
			p.workers--
			p.mu.Unlock()
			return
		}
		l := p.ready.pop()
		l.isReady = false
		j := l.jobs[0]
		l.jobs = l.jobs[1:]
		l.running = true
		p.mu.Unlock()

		p.queued.Add(-1)
		p.active.Add(1)
		park := p.safeRun(ctx, j)
		p.active.Add(-1)

		p.mu.Lock()
		if park > 0 && !p.stopped.Load() {
			if len(l.jobs) == 0 {
				// Park: the lane stays busy (running) but holds no worker.
				jr := j
				l.parked = &jr
				l.timer = time.AfterFunc(park, func() { p.wake(ctx, l) })
				continue
			}
			// A successor is already queued: run the job again at once.
			l.jobs = append([]jobRef{j}, l.jobs...)
			p.queued.Add(1)
		}
		l.running = false
		switch {
		case p.stopped.Load():
			// Shutdown began: what is queued stays pending for the next
			// start (stop has already dropped it from the gauge).
		case len(l.jobs) > 0:
			l.isReady = true
			p.ready.push(l)
			continue
		}
		delete(p.lane, l.key)
	}
}

func (p *pool) safeRun(ctx context.Context, j jobRef) (park time.Duration) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic while answering; the job stays pending", "job", j.ID, "panic", r, "stack", string(debug.Stack()))
			park = 0
		}
	}()
	return p.run(ctx, j)
}

// stop makes lanes take no further job; running jobs go on. Jobs still
// queued are left pending in storage for the next start.
func (p *pool) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped.Store(true)
	n := 0
	for key, l := range p.lane {
		n += len(l.jobs)
		l.jobs = nil
		if l.parked != nil { // stays pending; resumes at the next start
			if l.timer != nil {
				l.timer.Stop()
			}
			l.parked, l.running = nil, false
		}
		if !l.running {
			delete(p.lane, key)
		}
	}
	p.ready = laneQueue{}
	p.queued.Add(-int64(n))
}

// wait blocks until every lane has finished or ctx is done; it reports
// whether all finished.
func (p *pool) wait(ctx context.Context) bool {
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// laneQueue is a FIFO of lanes that reuses its storage.
type laneQueue struct {
	buf  []*lane
	head int
}

func (q *laneQueue) len() int { return len(q.buf) - q.head }

func (q *laneQueue) push(l *lane) {
	if q.head > 0 && q.head == len(q.buf) {
		q.buf, q.head = q.buf[:0], 0
	} else if q.head > 1024 && q.head*2 > len(q.buf) {
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, l)
}

func (q *laneQueue) pop() *lane {
	l := q.buf[q.head]
	q.buf[q.head] = nil
	q.head++
	return l
}
