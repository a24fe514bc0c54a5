package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a server under test running as a child process, so that its
// memory can be read from /proc and it shares nothing with the load
// generator but the two CPUs.
type proc struct {
	name string
	cmd  *exec.Cmd
	addr string
	logf *os.File
	done chan error
	// devStat is the sysfs stat file of the block device holding the
	// working directory ("" when there is none, as on tmpfs or overlay).
	devStat string
}

// startProc starts cmd, whose stderr goes to logPath, and waits until
// healthURL (or a TCP connect to addr when healthURL is "") succeeds.
func startProc(name string, cmd *exec.Cmd, addr, healthURL, logPath string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, addr: addr, logf: logf, done: make(chan error, 1), devStat: blockDevStat(filepath.Dir(logPath))}
	go func() { p.done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if healthURL != "" {
			resp, err := http.Get(healthURL)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return p, nil
				}
			}
		} else if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return p, nil
		}
		select {
		case err := <-p.done:
			logf.Close()
			return nil, fmt.Errorf("%s exited during start-up (%v); log:\n%s", name, err, tail(logPath, 30))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("%s did not become ready in 30s; log:\n%s", name, tail(logPath, 30))
		}
	}
}

// stop sends SIGTERM and waits (bounded) for the process to exit.
func (p *proc) stop() error {
	defer p.logf.Close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() < 0 {
			return nil // killed by the signal itself
		}
		return err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s ignored SIGTERM for 30s", p.name)
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
	p.logf.Close()
}

// memory is a process's resident set, from /proc/PID/status.
type memory struct {
	RSS, HWM, Anon, File int64 // bytes
}

func (p *proc) memory() (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		n *= 1024 // kB
		switch k {
		case "VmRSS":
			m.RSS = n
		case "VmHWM":
			m.HWM = n
		case "RssAnon":
			m.Anon = n
		case "RssFile":
			m.File = n
		}
	}
	return m, nil
}

// cpu returns the CPU time the process has used (user + system).
func (p *proc) cpu() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields count from its ")".
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// ioCount is what has been written, counted three ways. Only the device
// counter says what reached the disk: on kernels whose page cache uses
// large folios (ext4 since Linux 6.x), write_bytes counts a whole folio
// (up to megabytes) each time one 4 KiB page in it is dirtied, so a store
// whose pages were read in large folios (a copied file, or one read by
// the start-up check) shows many times the bytes that are written back.
type ioCount struct {
	device  int64 // sectors the working directory's block device wrote, in bytes (the whole machine; -1 when unknown)
	wchar   int64 // bytes the process passed to write(2) and friends
	dirtied int64 // write_bytes less cancelled_write_bytes: page cache the process dirtied
}

func (a ioCount) sub(b ioCount) ioCount {
	d := ioCount{device: -1, wchar: a.wchar - b.wchar, dirtied: a.dirtied - b.dirtied}
	if a.device >= 0 && b.device >= 0 {
		d.device = a.device - b.device
	}
	return d
}

// disk is the best figure for bytes that reached the disk: the device's
// own counter when there is one.
func (a ioCount) disk() int64 {
	if a.device >= 0 {
		return a.device
	}
	return a.dirtied
}

// written reads the process's counters from /proc/PID/io and the device's
// from sysfs. The device counter covers every process on the machine; in
// these runs only the daemon writes while it is being measured (the load
// generator and the fakes keep everything in memory, the daemon logs at
// warn), and ext4's journal writes are counted, as they should be.
func (p *proc) written() (ioCount, error) {
	c := ioCount{device: -1}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", p.cmd.Process.Pid))
	if err != nil {
		return c, err
	}
	var wb, cancelled int64
	found := false
	for _, l := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "write_bytes":
			wb, found = n, true
		case "cancelled_write_bytes":
			cancelled = n
		case "wchar":
			c.wchar = n
		}
	}
	if !found {
		return c, fmt.Errorf("no write_bytes in /proc/%d/io (task I/O accounting off?)", p.cmd.Process.Pid)
	}
	c.dirtied = wb - cancelled
	if p.devStat != "" {
		if data, err := os.ReadFile(p.devStat); err == nil {
			// Field 7 of the block layer's stat file is sectors written,
			// in 512-byte units whatever the device's sector size.
			if f := strings.Fields(string(data)); len(f) > 6 {
				if n, err := strconv.ParseInt(f[6], 10, 64); err == nil {
					c.device = n * 512
				}
			}
		}
	}
	return c, nil
}

// blockDevStat returns the sysfs stat file of the block device (or
// partition) that holds dir, or "" when dir is not on one.
func blockDevStat(dir string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return ""
	}
	dev := uint64(st.Dev)
	major := (dev>>8)&0xfff | (dev>>32)&^uint64(0xfff)
	minor := dev&0xff | (dev>>12)&^uint64(0xff)
	if major == 0 {
		return "" // tmpfs, overlay and other devices without a disk
	}
	p := fmt.Sprintf("/sys/dev/block/%d:%d/stat", major, minor)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// pid is the process id of the server under test.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// dirSize returns the total size of the regular files in dir, so that a
// store made of more than one file is counted whole.
func dirSize(dir string) (int64, error) {
	size, _, err := dirUsage(dir)
	return size, err
}

// dirUsage returns the total size of the regular files in dir and the disk
// space allocated to them (a store may grow its file ahead of use, sparse).
func dirUsage(dir string) (size, alloc int64, err error) {
	err = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			size += info.Size()
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				alloc += st.Blocks * 512
			}
		}
		return nil
	})
	return size, alloc, err
}

// pinned returns cmd run under `taskset -c cpu` (the same process: taskset
// execs it), or cmd itself when cpu is "".
func pinned(cpu string, name string, args ...string) *exec.Cmd {
	if cpu == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("taskset", append([]string{"-c", cpu, name}, args...)...)
}

// pinSelf sets the CPU affinity of every thread of this process (new
// threads inherit it) with taskset; cpus "" undoes it (all CPUs).
func pinSelf(cpus string) error {
	if cpus == "" {
		cpus = fmt.Sprintf("0-%d", runtime.NumCPU()-1)
	}
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset -a -p -c %s (util-linux): %v: %s", cpus, err, bytes.TrimSpace(out))
	}
	return nil
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

// tail returns the last n lines of a file, for error reports.
func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// buildDaemon compiles the module's main package into dir.
func buildDaemon(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "wecom-bridge")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/wecom-bridge/wecom-bridge")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build: %w", err)
	}
	return bin, nil
}

// metricsOf fetches the daemon's /metrics and returns each sample by its
// full name with labels, and also the sum of each metric's samples under
// its bare name.
func metricsOf(base string) (map[string]float64, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[:sp]
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		out[name] = v
		if i := strings.IndexByte(name, '{'); i >= 0 {
			if strings.Contains(name, "le=") {
				continue
			}
			out[name[:i]] += v
		}
	}
	return out, sc.Err()
}

// syncProbe overwrites single 4 KiB pages of a file of its own, each
// followed by fdatasync: what a durable bbolt commit does twice (data
// pages, then the meta page). The file's pages are written once when it is
// made, so the probe measures overwrites, not block allocation.
type syncProbe struct {
	f    *os.File
	page []byte
	next int
}

const syncProbePages = 256

func newSyncProbe(dir string) (*syncProbe, error) {
	f, err := os.CreateTemp(dir, "synctest-")
	if err != nil {
		return nil, err
	}
	p := &syncProbe{f: f, page: make([]byte, 4096)}
	if _, err := f.Write(make([]byte, syncProbePages*len(p.page))); err != nil {
		p.close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

// once overwrites the next page and syncs it, returning how long that took.
func (p *syncProbe) once() (time.Duration, error) {
	start := time.Now()
	if _, err := p.f.WriteAt(p.page, int64(p.next%syncProbePages)*int64(len(p.page))); err != nil {
		return 0, err
	}
	p.next++
	if err := syscall.Fdatasync(int(p.f.Fd())); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func (p *syncProbe) close() {
	p.f.Close()
	os.Remove(p.f.Name())
}

// syncLatency measures the disk under dir with n syncs back to back; these
// figures bound how fast an ack can be.
func syncLatency(dir string, n int) (p50, p99 time.Duration, err error) {
	p, err := newSyncProbe(dir)
	if err != nil {
		return 0, 0, err
	}
	defer p.close()
	lat := make([]time.Duration, n)
	for i := range lat {
		if lat[i], err = p.once(); err != nil {
			return 0, 0, err
		}
	}
	slices.Sort(lat)
	return lat[n/2], lat[n*99/100], nil
}

// diskStalls watches the disk under dir while an ack run goes on: one sync
// every 20 ms, a load of 50 a second beside the daemon's thousands. A
// virtual disk can stall every sync on it for tens or hundreds of
// milliseconds; every ack waiting meanwhile waits as long, and at 2,000/s
// one 100 ms stall is 1% of a 10 s run. stop ends the watch and returns the
// longest sync seen and how many took over 10 ms.
func diskStalls(dir string) (stop func() (longest time.Duration, over10ms int)) {
	done := make(chan struct{})
	var longest time.Duration
	over := 0
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		p, err := newSyncProbe(dir)
		if err != nil {
			return
		}
		defer p.close()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for { // one sync at once, so even a short watch has a figure
			d, err := p.once()
			if err != nil {
				return
			}
			longest = max(longest, d)
			if d > 10*time.Millisecond {
				over++
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() (time.Duration, int) {
		close(done)
		<-finished
		return longest, over
	}
}
