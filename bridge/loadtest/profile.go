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

// profileRun is where the daemon's CPU went while it took callbacks flat
// out, pinned like the pinned phase.
type profileRun struct {
	flat    result
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
// Go's frame pointers) during a flat-out run and attributes each sample to
// the innermost frame that is not the Go runtime, the kernel or syscall
// glue, so that allocation and system calls are charged to the code that
// made them; garbage collection is its own line.
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
	f := newFirer(p, e.o.conc)
	f.flatOut(shots[:min(2000, len(shots))], time.Second, false) // warm up
	if err := e.drain(base, time.Minute); err != nil {
		return err
	}
	shots = shots[min(2000, len(shots)):]
	e.slowLLM(defaultWorkers, e.o.profileFor)
	data := filepath.Join(e.dir, "perf.data")
	rec := exec.Command("perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-g",
		"-p", strconv.Itoa(p.pid()), "-o", data, "--", "sleep", fmt.Sprint(e.o.profileFor.Seconds()))
	var recErr bytes.Buffer
	rec.Stderr = &recErr
	step(fmt.Sprintf("profile: perf record while flat out for %v", e.o.profileFor))
	if err := rec.Start(); err != nil {
		return fmt.Errorf("perf record: %w", err)
	}
	time.Sleep(200 * time.Millisecond) // perf attaches
	r := f.flatOut(shots, e.o.profileFor-200*time.Millisecond, false)
	if err := rec.Wait(); err != nil {
		e.rep.notes = append(e.rep.notes, fmt.Sprintf("profile phase: perf record failed (%v): %s", err, strings.TrimSpace(recErr.String())))
		return e.drain(base, 5*time.Minute)
	}
	fmt.Fprintln(os.Stderr, "   ", r)
	out, err := exec.Command("perf", "script", "-i", data, "-F", "ip,sym,dso").Output()
	if err != nil {
		return fmt.Errorf("perf script: %w", err)
	}
	pr := attribute(bytes.NewReader(out))
	pr.flat = r
	e.rep.prof = &pr
	fmt.Fprintf(os.Stderr, "    %d samples\n", pr.samples)
	return e.drain(base, 5*time.Minute)
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
