package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// profileRun is where the daemon's CPU went while it took callbacks,
// pinned like the pinned phase, in one of two loads.
type profileRun struct {
	label   string // the load: "flat out" or "2000/s"
	flat    result // the callbacks sent while sampling
	samples int
	cats    []category
	alloc   int // samples under runtime.mallocgc, whatever the category
	kernel  int // samples in the kernel
}

type category struct {
	name           string
	samples, inKer int
}

// profile samples the daemon with perf(1) (cpu-clock, call graphs through
// Go's frame pointers), first while it takes callbacks at -rate and then
// flat out, and attributes each sample to the innermost frame that is not
// the Go runtime, the kernel or syscall glue, so that allocation and system
// calls are charged to the code that made them; garbage collection is its
// own line. The two loads cost differently per callback: at -rate the
// commit groups are small, so what every commit pays is shared by fewer.
func (e *env) profile() error {
	if _, err := exec.LookPath("perf"); err != nil {
		e.rep.notes = append(e.rep.notes, "profile phase skipped: perf(1) is not installed (apt-get install linux-perf)")
		return nil
	}
	cpu := ""
	if runtime.NumCPU() >= 2 {
		cpu = e.o.pinDaemon
		if err := pinSelf(e.o.pinLoad); err != nil {
			return err
		}
		defer pinSelf("")
	}
	step(fmt.Sprintf("profile: daemon (CPU %q), empty store", cpu))
	p, base, err := e.daemonWith(daemonOpts{name: "profile", db: filepath.Join("profile", "bridge.db"), cpu: cpu})
	if err != nil {
		return err
	}
	defer p.stop()
	time.Sleep(2 * time.Second)
	shots, err := e.shots(e.o.flatShots)
	if err != nil {
		return err
	}
	f := e.firer(p, e.o.conc)
	f.flatOut(shots[:min(2000, len(shots))], time.Second, false) // warm up
	if err := e.drain(base, time.Minute); err != nil {
		return err
	}
	shots = shots[min(2000, len(shots)):]

	paced, err := e.shots(int(e.o.rate * e.o.profileFor.Seconds()))
	if err != nil {
		return err
	}
	load := fmt.Sprintf("%.0f/s", e.o.rate)
	if err := e.record(p, load, func(d time.Duration) result {
		n := min(len(paced), int(e.o.rate*d.Seconds()))
		return f.paced(paced[:n], e.o.rate, nil)
	}); err != nil {
		return err
	}
	if err := e.drain(base, 5*time.Minute); err != nil {
		return err
	}
	if err := e.record(p, "flat out", func(d time.Duration) result { return f.flatOut(shots, d, false) }); err != nil {
		return err
	}
	return e.drain(base, 5*time.Minute)
}

// record samples p with perf(1) for -profile-for while fire sends
// callbacks (for the duration it is given), and adds what it found to the
// report.
func (e *env) record(p *proc, label string, fire func(d time.Duration) result) error {
	e.slowLLM(defaultWorkers, e.o.profileFor)
	data := filepath.Join(e.dir, "perf-"+strings.NewReplacer(" ", "-", "/", "-").Replace(label)+".data")
	rec := exec.Command("perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-g",
		"-p", strconv.Itoa(p.pid()), "-o", data, "--", "sleep", fmt.Sprint(e.o.profileFor.Seconds()))
	var recErr bytes.Buffer
	rec.Stderr = &recErr
	step(fmt.Sprintf("profile: perf record for %v, %s", e.o.profileFor, label))
	if err := rec.Start(); err != nil {
		return fmt.Errorf("perf record: %w", err)
	}
	time.Sleep(200 * time.Millisecond) // perf attaches
	r := fire(e.o.profileFor - 200*time.Millisecond)
	if err := rec.Wait(); err != nil {
		e.rep.notes = append(e.rep.notes, fmt.Sprintf("profile phase (%s): perf record failed (%v): %s", label, err, strings.TrimSpace(recErr.String())))
		return nil
	}
	fmt.Fprintln(os.Stderr, "   ", r)
	out, err := exec.Command("perf", "script", "-i", data, "-F", "ip,sym,dso").Output()
	if err != nil {
		return fmt.Errorf("perf script: %w", err)
	}
	pr := attribute(bytes.NewReader(out))
	pr.label, pr.flat = label, r
	e.rep.profs = append(e.rep.profs, &pr)
	fmt.Fprintf(os.Stderr, "    %d samples\n", pr.samples)
	return nil
}

// attribute reads `perf script -F ip,sym,dso` call graphs (innermost frame
// first) and sorts the samples into categories.
func attribute(r io.Reader) profileRun {
	var pr profileRun
	counts := map[string]*category{}
	var stack []frame
	flush := func() {
		if len(stack) == 0 {
			return
		}
		pr.samples++
		name := categorize(stack)
		c := counts[name]
		if c == nil {
			c = &category{name: name}
			counts[name] = c
		}
		c.samples++
		if stack[0].kernel {
			c.inKer++
			pr.kernel++
		}
		for _, f := range stack {
			if f.sym == "runtime.mallocgc" {
				pr.alloc++
				break
			}
		}
		stack = stack[:0]
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		t := strings.TrimSpace(line)
		if t == "" {
			flush()
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			flush()
			continue
		}
		// "addr sym+off (dso)" or "addr sym (dso)"
		_, rest, _ := strings.Cut(t, " ")
		dso := ""
		if i := strings.LastIndex(rest, " ("); i >= 0 {
			dso, rest = strings.Trim(rest[i+2:], "()"), rest[:i]
		}
		if i := strings.LastIndex(rest, "+0x"); i >= 0 {
			rest = rest[:i]
		}
		stack = append(stack, frame{sym: rest, kernel: strings.Contains(dso, "kernel")})
	}
	flush()
	for _, c := range counts {
		pr.cats = append(pr.cats, *c)
	}
	slices.SortFunc(pr.cats, func(a, b category) int { return b.samples - a.samples })
	return pr
}

type frame struct {
	sym    string
	kernel bool
}

const module = "github.com/wecom-bridge/wecom-bridge/"

// categorize names what one sample's CPU time was spent for.
func categorize(stack []frame) string {
	for _, f := range stack {
		switch {
		case f.sym == "runtime.gcBgMarkWorker", f.sym == "runtime.bgsweep", f.sym == "runtime.bgscavenge":
			return "GC, background (mark, sweep)"
		case f.sym == "runtime.gcAssistAlloc":
			return "GC, assists (while allocating)"
		}
	}
	for _, f := range stack {
		if f.kernel && strings.Contains(f.sym, "fdatasync") || f.sym == "syscall.Fdatasync" {
			return "fdatasync (kernel)"
		}
	}
	for _, f := range stack {
		if f.kernel || transparent(f.sym) {
			continue
		}
		s := f.sym
		switch {
		case strings.HasPrefix(s, "go.etcd.io/bbolt"):
			return "bbolt (B+tree pages, freelist, pwrite)"
		case strings.HasPrefix(s, module+"kv."):
			return "kv (records, encoding, group commit)"
		case strings.HasPrefix(s, "encoding/json"):
			return "JSON encode/decode"
		case strings.HasPrefix(s, "encoding/xml"):
			return "XML parse"
		case strings.HasPrefix(s, "crypto/"), strings.HasPrefix(s, "encoding/base64"), strings.HasPrefix(s, "encoding/hex"):
			return "signature + AES decrypt (crypto, base64)"
		case strings.HasPrefix(s, "github.com/valyala/fasthttp"):
			return "fasthttp (HTTP parse, response, sockets)"
		case strings.HasPrefix(s, "net/http"), strings.HasPrefix(s, "net/textproto"):
			return "outbound HTTP (LLM, WeCom API)"
		case strings.HasPrefix(s, "log/slog"):
			return "logging"
		case strings.HasPrefix(s, module+"wecom"):
			return "wecom (callback checks, message parse)"
		case strings.HasPrefix(s, module+"bridge"):
			return "bridge (intake, queue, metrics)"
		case strings.HasPrefix(s, module+"llm"):
			return "llm"
		default:
			return "other: " + pkgOf(s)
		}
	}
	if stack[0].kernel {
		return "kernel, no Go caller (scheduler, network, timers)"
	}
	return "Go runtime (scheduler, netpoll, timers)"
}

// transparent reports whether a frame is plumbing that works for its
// caller (the runtime, the standard library's I/O, strings and bytes,
// assembly helpers), so that its time is charged further out.
func transparent(sym string) bool {
	if sym == "" || sym == "[unknown]" || !strings.Contains(sym, ".") {
		return true // assembly helpers, vdso
	}
	switch pkgOf(sym) {
	case "runtime", "syscall", "sync", "sync/atomic", "net", "os", "io", "bufio", "bytes", "strings",
		"strconv", "unicode", "unicode/utf8", "unicode/utf16", "time", "sort", "slices", "maps", "reflect",
		"math", "math/bits", "errors", "fmt", "context", "container/list", "container/heap", "iter", "unique", "weak":
		return true
	}
	return strings.HasPrefix(sym, "internal/") || strings.HasPrefix(sym, "vendor/")
}

// pkgOf is the import path of a Go symbol such as
// "github.com/a/b.(*T).M" or "net.(*conn).Read".
func pkgOf(sym string) string {
	i := strings.LastIndex(sym, "/")
	if j := strings.Index(sym[i+1:], "."); j >= 0 {
		return sym[:i+1+j]
	}
	return sym
}
