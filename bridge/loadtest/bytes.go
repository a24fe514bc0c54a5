package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// bytesRun is what the disk-write run measured on one store.
type bytesRun struct {
	store       string // "empty", "1000000 stored"
	intake      result
	intakeIO    ioCount // written while the callbacks came in
	totalIO     ioCount // ... and until every question was answered
	sizeBefore  int64   // store files before the run
	sizeIntake  int64   // store files after intake, before the answers
	sizeAfter   int64   // ... after every answer
	allocBefore int64   // disk space allocated to the store files
	allocIntake int64
	drain       time.Duration
}

func (b bytesRun) perCallback() float64 {
	return float64(b.intakeIO.disk()) / float64(max(b.intake.ok, 1))
}

func (b bytesRun) perAnswered() float64 {
	return float64(b.totalIO.disk()) / float64(max(b.intake.ok, 1))
}

// perCallbackOf divides one of the intake's counters by the callbacks.
func (b bytesRun) perCallbackOf(n int64) float64 {
	return float64(n) / float64(max(b.intake.ok, 1))
}

func (b bytesRun) perQuestion() float64 {
	return float64(b.sizeIntake-b.sizeBefore) / float64(max(b.intake.ok, 1))
}

// allocPerQuestion counts the disk blocks the store uses, not the size
// its file was grown to ahead of use.
func (b bytesRun) allocPerQuestion() float64 {
	return float64(b.allocIntake-b.allocBefore) / float64(max(b.intake.ok, 1))
}

// userSet registers n members named prefix00000… with the fake WeCom. Each
// run that answers many questions uses its own members, so WeCom's
// per-member limit (30 a minute) is not spent by the run before.
func (e *env) userSet(prefix string, n int) []string {
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("%s%05d", prefix, i)
		e.wc.AddUser(users[i], 1)
	}
	return users
}

// bytesWritten sends -bytes-n distinct callbacks flat out to the daemon on
// an empty store and, with -fill, on a copy of the filled store, while the
// LLM takes llmAnswerTime per answer; it reads the daemon's write_bytes
// from /proc/PID/io around the intake, and again once every question is
// answered, and the store's size before the answers.
func (e *env) bytesWritten() error {
	stores := []string{""}
	if e.o.fill > 0 {
		stores = append(stores, "filled")
	}
	for i, st := range stores {
		name := fmt.Sprintf("bytes-%d", i)
		db := filepath.Join(name, "bridge.db")
		label := "empty"
		if st == "filled" {
			step(fmt.Sprintf("copying the store with %d answered questions", e.o.fill))
			if err := e.filledCopy(name); err != nil {
				return err
			}
			label = thousands(float64(e.o.fill)) + " stored"
		}
		// Members of their own, so that WeCom's per-member limit is not
		// spent by an earlier run — except on the filled store, where the
		// questions come from the members whose history is stored: their
		// index leaves are the ones a real day's questions rewrite.
		users := e.userSet(fmt.Sprintf("b%d", len(e.rep.bytes)), max(e.o.users, e.o.bytesN/20))
		if st == "filled" && len(e.users) >= e.o.bytesN/30 {
			users = e.users
		}
		r, err := e.bytesOn(name, db, label, users)
		if err != nil {
			return err
		}
		e.rep.bytes = append(e.rep.bytes, r)
		_ = os.RemoveAll(filepath.Join(e.dir, name))
	}
	return nil
}

func (e *env) bytesOn(name, db, label string, users []string) (bytesRun, error) {
	r := bytesRun{store: label}
	n := e.o.bytesN
	step(fmt.Sprintf("bytes written: building %d callbacks", n))
	shots, err := e.maker.make(n, users, func(int) string { return question })
	if err != nil {
		return r, err
	}
	g, err := newGate(e.dify.URL())
	if err != nil {
		return r, err
	}
	defer g.close()
	p, base, err := e.daemonWith(daemonOpts{name: name, db: db, llm: g.url})
	if err != nil {
		return r, err
	}
	defer p.stop()
	time.Sleep(time.Second)
	g.slow(llmAnswerTime)
	dir := filepath.Join(e.dir, name)
	if r.sizeBefore, r.allocBefore, err = dirUsage(dir); err != nil {
		return r, err
	}
	w0, err := p.written()
	if err != nil {
		return r, err
	}
	f := e.firer(p, e.o.conc)
	step(fmt.Sprintf("bytes written: %d distinct callbacks flat out, store %s, LLM answering in %v", n, label, llmAnswerTime))
	r.intake = f.flatOut(shots, 30*time.Minute, false)
	w1, err := p.written()
	if err != nil {
		return r, err
	}
	r.intakeIO = w1.sub(w0)
	if r.sizeIntake, r.allocIntake, err = dirUsage(dir); err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "    %v\n    %s written to the disk, %.0f B per accepted callback (write(2): %.0f B, page cache dirtied: %.0f B); store %s → %s (allocated %s → %s)\n",
		r.intake, mb(r.intakeIO.disk()), r.perCallback(), r.perCallbackOf(r.intakeIO.wchar), r.perCallbackOf(r.intakeIO.dirtied),
		mb(r.sizeBefore), mb(r.sizeIntake), mb(r.allocBefore), mb(r.allocIntake))
	if r.intake.failed > 0 {
		return r, fmt.Errorf("bytes run: %d callbacks failed %v", r.intake.failed, r.intake.statuses)
	}
	step("bytes written: answering them all (LLM now instant)")
	g.pass()
	start := time.Now()
	if err := e.drain(base, 10*time.Minute); err != nil {
		return r, err
	}
	r.drain = time.Since(start)
	w2, err := p.written()
	if err != nil {
		return r, err
	}
	r.totalIO = w2.sub(w0)
	if r.sizeAfter, err = dirSize(dir); err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "    answered in %v; %s written in all, %.0f B per question asked and answered; store %s\n",
		r.drain.Round(100*time.Millisecond), mb(r.totalIO.disk()), r.perAnswered(), mb(r.sizeAfter))
	return r, nil
}
