// Command loadtest measures wecom-bridge under load on this machine, over
// loopback, and prints the figures published in the README:
//
//	go run ./bridge/loadtest                                  # every phase, 1 M stored entries, about 16 minutes
//	go run ./bridge/loadtest -phases bytes,pinned,rss,stored  # issue 13's table
//	go run ./bridge/loadtest -quick                           # every phase, small counts, about 5 minutes
//
// It builds the daemon (or uses -bin) and runs it as a child process, so
// that its memory, CPU time and disk writes can be read from /proc, against
// an in-process fake WeCom (wecomtest) and fake Dify (llmtest), and fires
// encrypted callbacks built before each timed run. The phases (-phases,
// comma-separated; default all), in order:
//
//   - bare: the ceiling, a bare fasthttp server in its own process, set up
//     like the daemon's, that answers 200 — flat out, then at -rate;
//   - unpinned: the daemon on an empty store: RSS when idle; ack latency
//     at -rate and throughput flat out while the fake LLM takes 2 s per
//     answer; ack latency while every question is answered at once; the
//     time from a callback to the first WeCom message when the LLM streams;
//   - stream: -stream answers streaming at once: peak RSS;
//   - bytes: -bytes-n distinct callbacks flat out, on an empty store and on
//     a copy of the store with -fill answered questions: bytes the daemon
//     wrote (the block device's sectors written, with /proc/PID/io's wchar
//     and write_bytes beside it) per accepted callback, during intake
//     and until every question is answered; store size per question;
//   - pinned: the daemon, and then the bare server, pinned to -pin-daemon
//     (taskset), this process to -pin-load: throughput flat out, ack
//     latency at -rate, CPU time per callback (/proc/PID/stat);
//   - rss: -backlog questions while the LLM hangs: peak RSS (VmHWM); then
//     the LLM comes back and the backlog drains: how long, and whether each
//     member's answers reached WeCom in the order asked;
//   - stored: ack latency at -rate on an empty store and on a copy of the
//     filled one, runs alternating (-reps each);
//   - profile: where the daemon's CPU goes per callback (pinned, at -rate and flat out),
//     sampled with perf(1) — skipped with a note when perf is missing.
//
// The filled store is written once per run with kv directly (NoSync),
// -fill answered questions spread over -fill-span with old dedup marks
// pruned as the daemon does, and cached in -fill-cache under a key made
// of the kv package's source, so that runs on the same code reuse it.
//
// Acks are durable (fsync) as in production. Latency is counted from the
// moment a callback was due, so a server that falls behind is not
// flattered. WeCom allows 30 messages a minute to each member, and the fake
// enforces it, so questions come from many members, and each phase that
// answers many has members of its own. Every run is bounded in count and
// time.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

// defaultWorkers is the daemon's default [workers] count.
const defaultWorkers = 64

const (
	corpID   = "ww0123456789abcdef"
	aesKey   = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	cbToken  = "QDG6eK"
	secret   = "secret-load"
	agentID  = 1000002
	appName  = "load"
	question = "请问差旅报销需要哪些材料？"
)

// allPhases are the phases in the order they run.
var allPhases = []string{"bare", "unpinned", "stream", "bytes", "pinned", "rss", "stored", "profile"}

type options struct {
	rate           float64
	duration       time.Duration
	flat           time.Duration
	flatShots      int
	users          int
	conc           int
	stream         int
	first          int
	reps           int
	fill           int
	fillSpan       time.Duration
	fillCache      string
	bytesN         int
	backlog        int
	backlogPerUser int
	pinDaemon      string
	pinLoad        string
	profileFor     time.Duration
	bin            string
	keep           bool
	timeline       bool
	phases         map[string]bool
	skip           map[string]bool
}

func main() {
	o, bare, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(2)
	}
	if bare != "" {
		if err := serveBare(bare); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, string, error) {
	var o options
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	bare := fs.String("bare-serve", "", "internal: serve the bare fasthttp ceiling on this address")
	fs.Float64Var(&o.rate, "rate", 2000, "callbacks per second for the latency runs")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each latency run")
	fs.DurationVar(&o.flat, "flat", 5*time.Second, "length of the flat-out throughput runs")
	fs.IntVar(&o.flatShots, "flat-shots", 80000, "callbacks built for each of the daemon's flat-out runs (each is sent once)")
	fs.IntVar(&o.users, "users", 5000, "members the questions come from (WeCom allows 30 messages a minute to each)")
	fs.IntVar(&o.conc, "conc", 64, "client connections")
	fs.IntVar(&o.stream, "stream", 1000, "stream phase: answers streaming at once")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of the latency runs (the median is reported)")
	fs.IntVar(&o.first, "first", 200, "unpinned phase: questions for the first-message run (0 skips it)")
	fs.IntVar(&o.fill, "fill", 1000000, "answered questions in the filled store (bytes and stored phases; 0: no filled store)")
	fs.DurationVar(&o.fillSpan, "fill-span", 90*24*time.Hour, "the -fill questions are spread over this much past time (dedup marks older than 72h are pruned, as the daemon does); 48h keeps every mark")
	cache, _ := os.UserCacheDir()
	if cache != "" {
		cache = filepath.Join(cache, "wecom-bridge-loadtest")
	}
	fs.StringVar(&o.fillCache, "fill-cache", cache, "directory to keep filled stores in, keyed by the kv source (\"\": build every run)")
	fs.IntVar(&o.bytesN, "bytes-n", 100000, "bytes phase: distinct callbacks per store")
	fs.IntVar(&o.backlog, "backlog", 100000, "rss phase: questions waiting while the LLM hangs")
	fs.IntVar(&o.backlogPerUser, "backlog-per-user", 10, "rss phase: questions from each member (WeCom allows 30 messages a minute to each)")
	fs.StringVar(&o.pinDaemon, "pin-daemon", "1", "pinned phase: taskset CPU list for the server under test")
	fs.StringVar(&o.pinLoad, "pin-load", "0", "pinned phase: taskset CPU list for this process (load generator and fakes)")
	fs.DurationVar(&o.profileFor, "profile-for", 5*time.Second, "profile phase: how long to sample the daemon at -rate, and again flat out")
	fs.StringVar(&o.bin, "bin", "", "daemon binary (default: go build the module)")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory (stores, logs)")
	fs.BoolVar(&o.timeline, "timeline", false, "print each paced run's latency second by second (a disk stall shows as one bad second)")
	phases := fs.String("phases", "all", "comma-separated phases to run: "+strings.Join(allPhases, ", ")+" (or all)")
	skip := fs.String("skip", "", "comma-separated runs to leave out: any phase, or flat, echo, first (parts of unpinned); fill means stored")
	quick := fs.Bool("quick", false, "small counts for a check that everything works: -duration 2s -flat 2s -flat-shots 10000 -reps 1 -stream 100 -first 20 -fill 20000 -bytes-n 10000 -backlog 10000 -profile-for 2s (flags given explicitly win)")
	if err := fs.Parse(args); err != nil {
		return o, "", err
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range map[string]string{
			"duration": "2s", "flat": "2s", "flat-shots": "10000", "reps": "1", "stream": "100", "first": "20",
			"fill": "20000", "bytes-n": "10000", "backlog": "10000", "profile-for": "2s",
		} {
			if !set[name] {
				_ = fs.Set(name, v)
			}
		}
	}
	o.skip = map[string]bool{}
	for _, s := range strings.Split(*skip, ",") {
		if s = strings.TrimSpace(s); s == "fill" {
			s = "stored"
		}
		o.skip[s] = true
	}
	o.phases = map[string]bool{}
	for _, s := range strings.Split(*phases, ",") {
		s = strings.TrimSpace(s)
		switch {
		case s == "all":
			for _, p := range allPhases {
				o.phases[p] = true
			}
		case s == "fresh":
			o.phases["unpinned"] = true
		case slices.Contains(allPhases, s):
			o.phases[s] = true
		case s != "":
			return o, "", fmt.Errorf("-phases: unknown phase %q (phases: %s)", s, strings.Join(allPhases, ", "))
		}
	}
	for p := range o.skip {
		delete(o.phases, p)
	}
	if o.stream <= 0 {
		delete(o.phases, "stream")
	}
	if o.fill <= 0 {
		delete(o.phases, "stored")
	}
	if o.bytesN <= 0 {
		delete(o.phases, "bytes")
	}
	if o.backlog <= 0 || o.backlogPerUser <= 0 {
		delete(o.phases, "rss")
	}
	if o.rate <= 0 || o.conc <= 0 || o.users <= 0 {
		return o, "", fmt.Errorf("-rate, -conc and -users must be positive")
	}
	return o, *bare, nil
}

// env is the shared state of a run.
type env struct {
	o     options
	dir   string
	bin   string
	wc    *wecomtest.Server
	dify  *llmtest.Dify
	users []string
	maker *shotMaker
	rep   report

	fillDir string // the filled store, built once

	mu           sync.Mutex
	first        map[string]time.Time // user -> first message delivered
	count        map[string]int       // user -> messages delivered
	backlogGot   map[string][]int     // rss phase: user -> question numbers answered, in order
	backlogOther map[string][]string  // rss phase: user -> other messages
	drops        int                  // messages the fake WeCom dropped over its per-member limits
}

func run(o options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	dir, err := os.MkdirTemp("", "wecom-bridge-load-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Println("working directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	e := &env{o: o, dir: dir, first: map[string]time.Time{}, count: map[string]int{}}
	e.bin = o.bin
	if e.bin == "" {
		step("building the daemon")
		if e.bin, err = buildDaemon(ctx, dir); err != nil {
			return err
		}
	}
	e.rep.commit = commitOf(e.bin)
	e.wc = wecomtest.NewServer(wecomtest.Options{})
	defer e.wc.Close()
	e.wc.AddApp(corpID, secret, agentID)
	e.users = make([]string, max(o.users, o.stream, o.first))
	for i := range e.users {
		e.users[i] = fmt.Sprintf("u%05d", i)
		e.wc.AddUser(e.users[i], 1)
	}
	e.wc.OnSend(func(m wecomtest.SentMessage) {
		now := time.Now()
		e.mu.Lock()
		if _, ok := e.first[m.ToUser]; !ok {
			e.first[m.ToUser] = now
		}
		e.count[m.ToUser]++
		e.onBacklogAnswer(m.ToUser, m.Content)
		e.mu.Unlock()
	})
	e.wc.OnDrop(func(m wecomtest.SentMessage) {
		if m.Drop == wecomtest.DropMinuteLimit || m.Drop == wecomtest.DropHourLimit {
			e.mu.Lock()
			e.drops++
			e.mu.Unlock()
		}
	})
	e.dify = llmtest.NewDify()
	defer e.dify.Close()
	e.maker = &shotMaker{token: cbToken, aesKey: aesKey, corp: corpID, agent: agentID, path: "/wecom/" + appName}

	e.rep.machine = machine()
	e.rep.opts = o
	if e.rep.sync50, e.rep.sync99, err = syncLatency(dir, 500); err != nil {
		return err
	}
	var names []string
	for _, p := range allPhases {
		if o.phases[p] {
			names = append(names, p)
		}
	}
	fmt.Fprintf(os.Stderr, "phases: %s\n", strings.Join(names, ", "))
	phases := map[string]func() error{
		"bare": e.ceiling, "unpinned": e.fresh, "stream": e.streaming, "bytes": e.bytesWritten,
		"pinned": e.pinnedRuns, "rss": e.backlog, "stored": e.stored, "profile": e.profile,
	}
	for _, name := range names {
		start := time.Now()
		load := loadAvg()
		st0, all0 := cpuSteal()
		if err := phases[name](); err != nil {
			return fmt.Errorf("%s phase: %w", name, err)
		}
		st1, all1 := cpuSteal()
		steal := float64(st1-st0) / float64(max(all1-all0, 1))
		e.rep.took = append(e.rep.took, phaseTime{name, time.Since(start), load, steal})
		fmt.Fprintf(os.Stderr, "   (%s phase took %v; the hypervisor took %.0f%% of the CPU time)\n", name, time.Since(start).Round(time.Second), 100*steal)
	}
	e.rep.print(os.Stdout)
	return nil
}

// loadAvg is the machine's 1-minute load average, to show how shared the
// machine was when a phase ran.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// cpuSteal returns the machine's steal time (CPU time the hypervisor gave
// to other guests) and all CPU time so far, in clock ticks, from
// /proc/stat; zeros where it cannot be read. On a shared VM a run with
// much steal has longer tails whatever the daemon does.
func cpuSteal() (steal, all int64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	return parseSteal(string(data))
}

// parseSteal reads the first line of /proc/stat.
func parseSteal(stat string) (steal, all int64) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal guest guest_nice
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		if i >= 8 {
			break // guest time is already counted in user
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		all += n
		if i == 7 {
			steal = n
		}
	}
	return steal, all
}

// commitOf returns the VCS revision the daemon binary was built from, as
// `go version -m` reports it, or "".
func commitOf(bin string) string {
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		return ""
	}
	rev, modified := "", ""
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "build" {
			if v, ok := strings.CutPrefix(f[1], "vcs.revision="); ok {
				rev = v
			}
			if v, ok := strings.CutPrefix(f[1], "vcs.modified="); ok && v == "true" {
				modified = " (with uncommitted changes)"
			}
		}
	}
	if rev == "" {
		return ""
	}
	return rev[:min(12, len(rev))] + modified
}

func step(s string) { fmt.Fprintf(os.Stderr, "== %s %s\n", time.Now().Format("15:04:05"), s) }

// shots builds n question callbacks from e.users, before a timed run.
func (e *env) shots(n int) ([]shot, error) {
	return e.maker.make(n, e.users, func(int) string { return question })
}

// startBare starts the bare fasthttp server (this binary with
// -bare-serve) on a free port, under taskset -c cpu unless cpu is "".
func (e *env) startBare(cpu, logName string) (*proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	return startProc("bare", pinned(cpu, self, "-bare-serve", addr), addr, "", filepath.Join(e.dir, logName))
}

// ceiling measures the bare fasthttp server with the same client and the
// same requests.
func (e *env) ceiling() error {
	p, err := e.startBare("", "bare.log")
	if err != nil {
		return err
	}
	defer p.stop()
	shots, err := e.shots(int(e.o.rate * e.o.duration.Seconds()))
	if err != nil {
		return err
	}
	f := e.firer(p, e.o.conc)
	f.flatOut(shots[:min(len(shots), 2000)], time.Second, true) // warm up connections
	step("bare fasthttp: flat out")
	e.rep.bareFlat = f.flatOut(shots, e.o.flat, true)
	fmt.Fprintln(os.Stderr, "   ", e.rep.bareFlat)
	time.Sleep(time.Second)
	step(fmt.Sprintf("bare fasthttp: %.0f/s", e.o.rate))
	e.rep.barePaced = f.paced(shots, e.o.rate, nil)
	fmt.Fprintln(os.Stderr, "   ", e.rep.barePaced)
	return nil
}

// pacedRuns measures ack latency at -rate -reps times, each run followed by
// answering the backlog, and returns the run with the median p99 and all
// runs. Repeating makes the comparison less subject to the noise of a
// shared machine.
func (e *env) pacedRuns(f *firer, base string) (result, []result, error) {
	var runs []result
	for range max(e.o.reps, 1) {
		r, err := e.pacedRun(f, base)
		if err != nil {
			return result{}, nil, err
		}
		fmt.Fprintln(os.Stderr, "   ", r)
		runs = append(runs, r)
	}
	return median(runs), runs, nil
}

// pacedRun is one ack-latency run at -rate with the LLM taking
// llmAnswerTime, then answering the backlog.
func (e *env) pacedRun(f *firer, base string) (result, error) {
	shots, err := e.shots(int(e.o.rate * e.o.duration.Seconds()))
	if err != nil {
		return result{}, err
	}
	e.slowLLM(defaultWorkers, e.o.duration)
	_, disk99, err := syncLatency(e.dir, 200)
	if err != nil {
		return result{}, err
	}
	m0, err := metricsOf(base)
	if err != nil {
		return result{}, err
	}
	st0, all0 := cpuSteal()
	stalls := diskStalls(e.dir)
	r := f.paced(shots, e.o.rate, nil)
	r.diskMax, r.diskStalls = stalls()
	st1, all1 := cpuSteal()
	m1, err := metricsOf(base)
	if err != nil {
		return result{}, err
	}
	r.diskP99, r.steal = disk99, float64(st1-st0)/float64(max(all1-all0, 1))
	r.commitP99, r.commitP999 = histQuantile(m0, m1, commitHist, 0.99), histQuantile(m0, m1, commitHist, 0.999)
	r.commitMax = histQuantile(m0, m1, commitHist, 1)
	if n := m1[commitHist+"_count"] - m0[commitHist+"_count"]; n > 0 {
		r.group = (m1["wecom_bridge_store_commit_writes_total"] - m0["wecom_bridge_store_commit_writes_total"]) / n
	}
	if err := e.drain(base, 3*time.Minute); err != nil {
		return r, err
	}
	e.quiet(f.srv)
	return r, nil
}

// commitHist is the daemon's histogram of its store's group commits.
const commitHist = "wecom_bridge_store_commit_seconds"

// histQuantile returns the upper bound of the bucket that holds the q-th
// quantile of what a Prometheus histogram counted between two scrapes
// (+Inf when it is above every bound, 0 when nothing was counted).
func histQuantile(before, after map[string]float64, name string, q float64) time.Duration {
	type bucket struct{ le, n float64 }
	var bs []bucket
	prefix := name + `_bucket{le="`
	for k, v := range after {
		le, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		le = strings.TrimSuffix(le, `"}`)
		f, err := strconv.ParseFloat(le, 64)
		if le == "+Inf" {
			f, err = math.Inf(1), nil
		}
		if err == nil {
			bs = append(bs, bucket{f, v - before[k]})
		}
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	total := after[name+"_count"] - before[name+"_count"]
	if total <= 0 {
		return 0
	}
	for _, b := range bs {
		if b.n >= q*total {
			if math.IsInf(b.le, 1) {
				return time.Duration(math.MaxInt64)
			}
			return time.Duration(b.le * float64(time.Second))
		}
	}
	return time.Duration(math.MaxInt64)
}

// quiet waits until p has been idle (under 4% of a CPU) for two half
// seconds in a row, at most a minute: after the backlog is answered the
// daemon still indexes history and trims its mapping, and a run that
// starts meanwhile (on this daemon or another) measures that work too.
func (e *env) quiet(p *proc) {
	const window, busy = 500 * time.Millisecond, 20 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	for calm := 0; calm < 2; {
		if time.Now().After(deadline) {
			e.rep.notes = append(e.rep.notes, fmt.Sprintf("%s: still busy a minute after answering its backlog", p.name))
			return
		}
		c0 := p.cpu()
		time.Sleep(window)
		if p.cpu()-c0 < busy {
			calm++
		} else {
			calm = 0
		}
	}
}

// median returns the run with the median p99.
func median(runs []result) result {
	if len(runs) == 0 {
		return result{}
	}
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b result) int { return int(a.pct(99) - b.pct(99)) })
	return sorted[len(sorted)/2]
}

// llmAnswerTime is how long the fake LLM takes per answer in the ack runs.
const llmAnswerTime = 2 * time.Second

// slowLLM makes the fake LLM take llmAnswerTime per answer for about d:
// enough scripts for every worker, one after another. A real LLM answers
// in seconds, so the workers mostly wait on it and the daemon's CPU goes
// to intake; the backlog is answered at once afterwards (the fake echoes
// when its scripts run out).
func (e *env) slowLLM(workers int, d time.Duration) {
	n := workers * (int(d/llmAnswerTime) + 1)
	for range n {
		e.dify.Push(llmtest.Script{Deltas: 4, DeltaDelay: llmAnswerTime / 4})
	}
}

// daemon starts the daemon with the given [workers] count (0: default) on
// the database db (a path under the working directory).
func (e *env) daemon(name, db string, workers int) (*proc, string, error) {
	return e.daemonWith(daemonOpts{name: name, db: db, workers: workers})
}

// daemonOpts are the settings the runs vary.
type daemonOpts struct {
	name, db string
	workers  int    // [workers] count; 0: default
	llm      string // Dify base URL; "": the fake itself
	cpu      string // taskset -c list; "": not pinned
	// slowLLM lifts the LLM time limits, for an LLM that hangs for
	// minutes on purpose.
	slowLLM bool
}

func (e *env) daemonWith(d daemonOpts) (*proc, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	w := ""
	if d.workers > 0 {
		w = fmt.Sprintf("\n[workers]\ncount = %d\n", d.workers)
	}
	llm := d.llm
	if llm == "" {
		llm = e.dify.URL()
	}
	limits := ""
	if d.slowLLM {
		limits = "idle_timeout = \"30m\"\ntimeout = \"30m\"\n"
	}
	dbPath := filepath.Join(e.dir, d.db)
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o700); err != nil {
		return nil, "", err
	}
	cfg := fmt.Sprintf(`[server]
listen = %q
public_url = "http://%s"

[log]
level = "warn"

[storage]
path = %q
%s
[wecom]
corp_id = %q
api_base = %q
oauth_base = %q
sso_base = %q

[[apps]]
name = %q
agent_id = %d
secret = %q
token = %q
encoding_aes_key = %q
backend = "kb"

[backends.kb]
type = "dify"
base_url = %q
api_key = "app-llmtest"
%s`, addr, addr, dbPath, w, corpID, e.wc.URL(), e.wc.URL(), e.wc.URL(),
		appName, agentID, secret, cbToken, aesKey, llm, limits)
	path := filepath.Join(e.dir, d.name+".toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, "", err
	}
	base := "http://" + addr
	p, err := startProc("daemon", pinned(d.cpu, e.bin, "-config", path), addr, base+"/healthz", filepath.Join(e.dir, d.name+".log"))
	return p, base, err
}

// drain waits until every accepted question is answered.
func (e *env) drain(base string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		m, err := metricsOf(base)
		if err != nil {
			return err
		}
		acc := m[`wecom_bridge_callbacks_total{app="load",result="accepted"}`]
		done := m["wecom_bridge_answers_total"]
		if done >= acc && m["wecom_bridge_queue_depth"] == 0 && m["wecom_bridge_answers_in_flight"] == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("daemon still busy after %v: %.0f of %.0f answered, queue %.0f", limit, done, acc, m["wecom_bridge_queue_depth"])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fresh runs the daemon on an empty database.
func (e *env) fresh() error {
	step("daemon: start on an empty database")
	p, base, err := e.daemon("fresh", "bridge.db", 0)
	if err != nil {
		return err
	}
	defer p.stop()
	time.Sleep(2 * time.Second)
	if e.rep.idle, err = p.memory(); err != nil {
		return err
	}
	f := e.firer(p, e.o.conc)

	step(fmt.Sprintf("daemon: %.0f/s for %v, %d times, LLM answering in %v", e.o.rate, e.o.duration, e.o.reps, llmAnswerTime))
	if e.rep.paced, e.rep.pacedRuns, err = e.pacedRuns(f, base); err != nil {
		return err
	}

	if !e.o.skip["flat"] {
		shots, err := e.shots(e.o.flatShots)
		if err != nil {
			return err
		}
		e.slowLLM(defaultWorkers, e.o.flat)
		step(fmt.Sprintf("daemon: flat out for %v, LLM answering in %v", e.o.flat, llmAnswerTime))
		e.rep.flat = f.flatOut(shots, e.o.flat, false)
		fmt.Fprintln(os.Stderr, "   ", e.rep.flat)
		if e.rep.flat.sent >= len(shots) {
			fmt.Fprintln(os.Stderr, "    (ran out of callbacks before -flat ended; raise -flat-shots)")
		}
		step("daemon: answering the backlog (LLM now instant)")
		start := time.Now()
		if err := e.drain(base, 5*time.Minute); err != nil {
			return err
		}
		e.rep.backlog = time.Since(start)
		e.rep.backlogN = e.rep.flat.ok
		if e.rep.afterLoad, err = p.memory(); err != nil {
			return err
		}
	}

	if !e.o.skip["echo"] {
		shots, err := e.shots(int(e.o.rate * e.o.duration.Seconds()))
		if err != nil {
			return err
		}
		step(fmt.Sprintf("daemon: %.0f/s for %v, every question answered at once (instant LLM)", e.o.rate, e.o.duration))
		cpu0 := p.cpu()
		e.rep.echoPaced = f.paced(shots, e.o.rate, nil)
		fmt.Fprintln(os.Stderr, "   ", e.rep.echoPaced)
		if err := e.drain(base, 3*time.Minute); err != nil {
			return err
		}
		e.rep.echoCPU = p.cpu() - cpu0
		fmt.Fprintf(os.Stderr, "    daemon CPU per question, intake and answer: %.0fµs\n", float64(e.rep.echoCPU.Microseconds())/float64(len(shots)))
	}
	return e.firstMessage(p)
}

// firstMessage measures the time from a callback to the first WeCom
// message when the LLM streams: its first paragraph is complete after
// firstPara, and the daemon should send it at once.
func (e *env) firstMessage(p *proc) error {
	if e.o.first <= 0 || e.o.skip["first"] {
		return nil
	}
	const (
		deltas    = 10
		delay     = 100 * time.Millisecond
		firstPara = 1 * delay // delta 0 at 0, delta 1 (ending paragraph 1) after one delay
	)
	// Five paragraphs of 40 runes, 20 runes a delta: paragraph 1 ends
	// exactly with delta 1.
	para := strings.Repeat("报销", 19) // 38 runes
	answer := strings.Repeat(para+"\n\n", 4) + para + "。。"
	users := e.users[len(e.users)-e.o.first:]
	for range users {
		e.dify.Push(llmtest.Script{Answer: answer, Deltas: deltas, DeltaDelay: delay})
	}
	shots, err := e.maker.make(len(users), users, func(int) string { return "first message?" })
	if err != nil {
		return err
	}
	e.mu.Lock()
	for _, u := range users {
		delete(e.first, u)
	}
	e.mu.Unlock()
	sentAt := make([]time.Time, len(shots))
	step(fmt.Sprintf("daemon: first message, %d streamed answers at 20/s", len(shots)))
	f := e.firer(p, 16)
	r := f.paced(shots, 20, func(i int, at time.Time) { sentAt[i] = at })
	if r.failed > 0 {
		return fmt.Errorf("first-message callbacks failed: %v", r)
	}
	deadline := time.Now().Add(time.Minute)
	var lat []time.Duration
	for {
		lat = lat[:0]
		e.mu.Lock()
		for i, s := range shots {
			if t, ok := e.first[s.user]; ok {
				lat = append(lat, t.Sub(sentAt[i]))
			}
		}
		e.mu.Unlock()
		if len(lat) == len(shots) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(lat) < len(shots) {
		return fmt.Errorf("only %d of %d users got a first message in a minute", len(lat), len(shots))
	}
	slices.Sort(lat)
	e.rep.firstPara = firstPara
	e.rep.firstMsg = result{ok: len(lat), sent: len(lat), lat: lat}
	fmt.Fprintf(os.Stderr, "    callback to first message: p50 %v p99 %v max %v (LLM's first paragraph done after %v)\n",
		ms(e.rep.firstMsg.pct(50)), ms(e.rep.firstMsg.pct(99)), ms(e.rep.firstMsg.pct(100)), firstPara)
	return nil
}

// streaming holds e.o.stream answers streaming at once and records the
// daemon's peak memory.
func (e *env) streaming() error {
	n := e.o.stream
	step(fmt.Sprintf("daemon: %d answers streaming at once", n))
	p, base, err := e.daemon("stream", "stream.db", n+64)
	if err != nil {
		return err
	}
	defer p.stop()
	time.Sleep(time.Second)
	before, err := p.memory()
	if err != nil {
		return err
	}
	// Eight paragraphs of 150 runes (~3.6 KB) in 60 deltas, 150 ms apart:
	// each answer streams for about 9 s and is sent in several pieces.
	para := strings.Repeat("报销材料", 37) + "。。"
	answer := strings.TrimSuffix(strings.Repeat(para+"\n\n", 8), "\n\n")
	for range n {
		e.dify.Push(llmtest.Script{Answer: answer, Deltas: 60, DeltaDelay: 150 * time.Millisecond})
	}
	users := e.users[:n]
	shots, err := e.maker.make(n, users, func(int) string { return "stream?" })
	if err != nil {
		return err
	}
	e.mu.Lock()
	sentBefore := map[string]int{}
	for _, u := range users {
		sentBefore[u] = e.count[u]
	}
	e.mu.Unlock()

	var peak memory
	var peakFlight float64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if m, err := p.memory(); err == nil && m.RSS > peak.RSS {
				peak = m
			}
			if i%5 == 0 {
				if m, err := metricsOf(base); err == nil {
					peakFlight = max(peakFlight, m["wecom_bridge_answers_in_flight"])
				}
			}
		}
	}()
	f := e.firer(p, e.o.conc)
	r := f.paced(shots, 1000, nil)
	derr := e.drain(base, 3*time.Minute)
	close(stop)
	wg.Wait()
	if r.failed > 0 {
		return fmt.Errorf("streaming callbacks failed: %v", r)
	}
	if derr != nil {
		return derr
	}
	end, err := p.memory()
	if err != nil {
		return err
	}
	e.mu.Lock()
	pieces := 0
	for _, u := range users {
		pieces += e.count[u] - sentBefore[u]
	}
	e.mu.Unlock()
	e.rep.streamIdle, e.rep.streamPeak, e.rep.streamHWM = before, peak, end.HWM
	e.rep.streamFlight, e.rep.streamPieces = peakFlight, pieces
	fmt.Fprintf(os.Stderr, "    peak in flight %.0f, RSS before %s, peak %s (anon %s), VmHWM %s, %d pieces sent\n",
		peakFlight, mb(before.RSS), mb(peak.RSS), mb(peak.Anon), mb(end.HWM), pieces)
	return nil
}
