package bridge

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// pool runs jobs on at most n workers at once. Jobs of one (app, user) form
// a lane and run strictly one after another, in submission order; lanes run
// in parallel. Submitting never blocks: a job waiting for a worker is
// already durable in storage, so a full pool loses nothing.
type pool struct {
	sem  chan struct{}
	run  func(ctx context.Context, j *kv.Job)
	log  *slog.Logger
	wg   sync.WaitGroup
	mu   sync.Mutex
	lane map[string]*lane
	// stopped lanes take no new job (shutdown); queued jobs stay pending.
	stopped atomic.Bool
	queued  atomic.Int64
	active  atomic.Int64
}

type lane struct {
	jobs []*kv.Job
}

func newPool(n int, run func(context.Context, *kv.Job), log *slog.Logger) *pool {
	return &pool{sem: make(chan struct{}, n), run: run, log: log, lane: map[string]*lane{}}
}

func laneKey(app, user string) string { return app + "\x00" + user }

// submit queues a job on its lane, starting the lane if it is idle.
func (p *pool) submit(ctx context.Context, j *kv.Job) {
	if p.stopped.Load() {
		return
	}
	key := laneKey(j.App, j.User)
	p.queued.Add(1)
	p.mu.Lock()
	l, running := p.lane[key]
	if !running {
		l = &lane{}
		p.lane[key] = l
	}
	l.jobs = append(l.jobs, j)
	p.mu.Unlock()
	if !running {
		p.wg.Add(1)
		go p.drive(ctx, key, l)
	}
}

// drive runs a lane's jobs one by one and retires the lane when empty.
func (p *pool) drive(ctx context.Context, key string, l *lane) {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		if len(l.jobs) == 0 || p.stopped.Load() {
			p.queued.Add(-int64(len(l.jobs)))
			delete(p.lane, key)
			p.mu.Unlock()
			return
		}
		j := l.jobs[0]
		l.jobs = l.jobs[1:]
		p.mu.Unlock()
		p.queued.Add(-1)

		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			p.mu.Lock()
			p.queued.Add(-int64(len(l.jobs)))
			delete(p.lane, key)
			p.mu.Unlock()
			return
		}
		if p.stopped.Load() {
			// Shutdown began while this lane waited for a worker: leave
			// the job pending for the next start.
			<-p.sem
			p.mu.Lock()
			p.queued.Add(-int64(len(l.jobs)))
			delete(p.lane, key)
			p.mu.Unlock()
			return
		}
		p.active.Add(1)
		p.safeRun(ctx, j)
		p.active.Add(-1)
		<-p.sem
	}
}

func (p *pool) safeRun(ctx context.Context, j *kv.Job) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic while answering; the job stays pending", "job", j.ID, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	p.run(ctx, j)
}

// stop makes lanes take no further job; running jobs go on.
func (p *pool) stop() { p.stopped.Store(true) }

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
