package bridge

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// metrics keeps the daemon's counters and histograms and writes them in the
// Prometheus text exposition format. It is small enough not to need a
// client library.
type metrics struct {
	mu       sync.Mutex
	counters map[string]*counterVec
	hists    map[string]*histogram
	gauges   []gauge
}

type counterVec struct {
	help   string
	labels []string
	vals   map[string]*atomic.Uint64 // joined label values -> count
}

type gauge struct {
	name, help string
	fn         func() float64
}

type histogram struct {
	help    string
	bounds  []float64 // seconds
	mu      sync.Mutex
	buckets []uint64
	count   uint64
	sum     float64
}

var latencyBounds = []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
var llmBounds = []float64{.1, .25, .5, 1, 2, 5, 10, 20, 30, 60, 120, 300}

func newMetrics() *metrics {
	m := &metrics{counters: map[string]*counterVec{}, hists: map[string]*histogram{}}
	m.counter("wecom_bridge_callbacks_total", "Callbacks received, by app and result.", "app", "result")
	m.counter("wecom_bridge_sends_total", "message/send calls, by app and result.", "app", "result")
	m.counter("wecom_bridge_errors_total", "Errors from WeCom (errcode) and the LLM backends, by source and code.", "source", "code")
	m.counter("wecom_bridge_answers_total", "Jobs finished, by app and status.", "app", "status")
	m.hist("wecom_bridge_ack_seconds", "Time from a callback's arrival to its acknowledgement.", latencyBounds)
	m.hist("wecom_bridge_llm_first_delta_seconds", "Time from asking the LLM to its first delta.", llmBounds)
	m.hist("wecom_bridge_llm_total_seconds", "Time from asking the LLM to the end of its answer.", llmBounds)
	m.hist("wecom_bridge_first_message_seconds", "Time from a question's arrival to the first piece delivered.", llmBounds)
	return m
}

func (m *metrics) counter(name, help string, labels ...string) {
	m.counters[name] = &counterVec{help: help, labels: labels, vals: map[string]*atomic.Uint64{}}
}

func (m *metrics) hist(name, help string, bounds []float64) {
	m.hists[name] = &histogram{help: help, bounds: bounds, buckets: make([]uint64, len(bounds))}
}

func (m *metrics) gauge(name, help string, fn func() float64) {
	m.mu.Lock()
	m.gauges = append(m.gauges, gauge{name, help, fn})
	m.mu.Unlock()
}

// inc adds one to a counter with the given label values.
func (m *metrics) inc(name string, labelValues ...string) {
	cv := m.counters[name]
	// The key is built on the stack and the lookup does not copy it: only
	// a new label combination allocates (this runs for every callback).
	var buf [128]byte
	key := buf[:0]
	for i, v := range labelValues {
		if i > 0 {
			key = append(key, 0)
		}
		key = append(key, v...)
	}
	m.mu.Lock()
	c, ok := cv.vals[string(key)]
	if !ok {
		c = new(atomic.Uint64)
		cv.vals[string(key)] = c
	}
	m.mu.Unlock()
	c.Add(1)
}

// get returns a counter value (for tests and the load tool).
func (m *metrics) get(name string, labelValues ...string) uint64 {
	cv := m.counters[name]
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := cv.vals[strings.Join(labelValues, "\x00")]; ok {
		return c.Load()
	}
	return 0
}

// observe records a duration in a histogram.
func (m *metrics) observe(name string, d time.Duration) {
	h := m.hists[name]
	v := d.Seconds()
	h.mu.Lock()
	for i, ub := range h.bounds {
		if v <= ub {
			h.buckets[i]++
		}
	}
	h.count++
	h.sum += v
	h.mu.Unlock()
}

// write emits every metric in the Prometheus text format.
func (m *metrics) write(w io.Writer) {
	names := make([]string, 0, len(m.counters))
	for n := range m.counters {
		names = append(names, n)
	}
	sort.Strings(names)
	m.mu.Lock()
	for _, n := range names {
		cv := m.counters[n]
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", n, cv.help, n)
		keys := make([]string, 0, len(cv.vals))
		for k := range cv.vals {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "%s{%s} %d\n", n, labelPairs(cv.labels, strings.Split(k, "\x00")), cv.vals[k].Load())
		}
	}
	gauges := append([]gauge(nil), m.gauges...)
	m.mu.Unlock()
	for _, g := range gauges {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n", g.name, g.help, g.name, g.name, formatFloat(g.fn()))
	}
	hnames := make([]string, 0, len(m.hists))
	for n := range m.hists {
		hnames = append(hnames, n)
	}
	sort.Strings(hnames)
	for _, n := range hnames {
		h := m.hists[n]
		h.mu.Lock()
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", n, h.help, n)
		for i, ub := range h.bounds {
			fmt.Fprintf(w, "%s_bucket{le=\"%s\"} %d\n", n, formatFloat(ub), h.buckets[i])
		}
		fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", n, h.count, n, formatFloat(h.sum), n, h.count)
		h.mu.Unlock()
	}
}

// writeCommitMetrics emits the store's group commits: their durations as
// a histogram (an ack waits for one, so a slow disk shows here first) and
// the writes they carried.
func writeCommitMetrics(w io.Writer, st kv.CommitStats) {
	const n = "wecom_bridge_store_commit_seconds"
	fmt.Fprintf(w, "# HELP %s Time of each group commit to the database (write and fdatasync); every ack waits for one.\n# TYPE %s histogram\n", n, n)
	for i, ub := range st.Bounds {
		fmt.Fprintf(w, "%s_bucket{le=\"%s\"} %d\n", n, formatFloat(ub.Seconds()), st.Buckets[i])
	}
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", n, st.Count, n, formatFloat(st.Sum.Seconds()), n, st.Count)
	const c = "wecom_bridge_store_commit_writes_total"
	fmt.Fprintf(w, "# HELP %s Writes the group commits carried (divided by the commit count: the mean group size).\n# TYPE %s counter\n%s %d\n", c, c, c, st.Callers)
}

func labelPairs(names, values []string) string {
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		v := ""
		if i < len(values) {
			v = values[i]
		}
		v = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
		fmt.Fprintf(&b, "%s=\"%s\"", n, v)
	}
	return b.String()
}

func formatFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return fmt.Sprintf("%g", v)
}
