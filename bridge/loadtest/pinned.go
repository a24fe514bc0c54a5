package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// pinnedRun is what the pinned phase measured for one server.
type pinnedRun struct {
	flat, paced result
	pacedRuns   []result
	flatBytes   int64 // daemon only: written during the flat-out run
}

func cpuPer(r result) float64 { return float64(r.cpu.Microseconds()) / float64(max(r.ok, 1)) }

// pinnedRuns runs the bare server and then the daemon pinned to
// -pin-daemon, with this process (load generator and fakes) pinned to
// -pin-load, as on a 1-vCPU VM with the clients elsewhere.
func (e *env) pinnedRuns() error {
	if runtime.NumCPU() < 2 {
		e.rep.notes = append(e.rep.notes, "pinned phase skipped: it needs 2 CPUs")
		return nil
	}
	if err := pinSelf(e.o.pinLoad); err != nil {
		return err
	}
	defer func() {
		if err := pinSelf(""); err != nil {
			fmt.Fprintln(os.Stderr, "    ", err)
		}
	}()

	// The bare server, pinned the same way.
	bp, err := e.startBare(e.o.pinDaemon, "bare-pinned.log")
	if err != nil {
		return err
	}
	shots, err := e.shots(int(e.o.rate * e.o.duration.Seconds()))
	if err != nil {
		bp.stop()
		return err
	}
	f := e.firer(bp, e.o.conc)
	f.flatOut(shots[:min(len(shots), 2000)], time.Second, true)
	step(fmt.Sprintf("pinned: bare fasthttp on CPU %s, flat out", e.o.pinDaemon))
	e.rep.pinBare.flat = f.flatOut(shots, e.o.flat, true)
	fmt.Fprintln(os.Stderr, "   ", e.rep.pinBare.flat)
	time.Sleep(time.Second)
	step(fmt.Sprintf("pinned: bare fasthttp, %.0f/s", e.o.rate))
	e.rep.pinBare.paced = f.paced(shots, e.o.rate, nil)
	fmt.Fprintln(os.Stderr, "   ", e.rep.pinBare.paced)
	bp.stop()

	step(fmt.Sprintf("pinned: daemon on CPU %s, empty store", e.o.pinDaemon))
	p, base, err := e.daemonWith(daemonOpts{name: "pinned", db: filepath.Join("pinned", "bridge.db"), cpu: e.o.pinDaemon})
	if err != nil {
		return err
	}
	defer p.stop()
	time.Sleep(2 * time.Second)
	f = e.firer(p, e.o.conc)
	step(fmt.Sprintf("pinned: daemon, %.0f/s for %v, %d times, LLM answering in %v", e.o.rate, e.o.duration, e.o.reps, llmAnswerTime))
	if e.rep.pinDaemon.paced, e.rep.pinDaemon.pacedRuns, err = e.pacedRuns(f, base); err != nil {
		return err
	}
	shots, err = e.shots(e.o.flatShots)
	if err != nil {
		return err
	}
	e.slowLLM(defaultWorkers, e.o.flat)
	step(fmt.Sprintf("pinned: daemon flat out for %v", e.o.flat))
	w0, err := p.written()
	if err != nil {
		return err
	}
	e.rep.pinDaemon.flat = f.flatOut(shots, e.o.flat, false)
	w1, err := p.written()
	if err != nil {
		return err
	}
	d := w1.sub(w0)
	e.rep.pinDaemon.flatBytes = d.disk()
	per := func(n int64) float64 { return float64(n) / float64(max(e.rep.pinDaemon.flat.ok, 1)) }
	fmt.Fprintf(os.Stderr, "    %v, %.0f B written to the disk per callback (write(2): %.0f B, page cache dirtied: %.0f B)\n",
		e.rep.pinDaemon.flat, per(d.disk()), per(d.wchar), per(d.dirtied))
	if e.rep.pinDaemon.flat.sent >= len(shots) {
		fmt.Fprintln(os.Stderr, "    (ran out of callbacks before -flat ended; raise -flat-shots)")
	}
	step("pinned: answering the backlog")
	return e.drain(base, 10*time.Minute)
}
