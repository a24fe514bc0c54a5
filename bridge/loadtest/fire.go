package main

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

// shot is one pre-built callback: the request URI with its signed query,
// and the encrypted body. Building them before the timed part keeps the
// cost of encryption out of the measurement.
type shot struct {
	uri  string
	body []byte
	user string
}

// shotMaker builds encrypted text callbacks for one app.
type shotMaker struct {
	token, aesKey, corp string
	agent               int64
	path                string // "/wecom/<app>"
	nextID              uint64
}

// make builds n callbacks; callback i comes from users[i%len(users)] and
// carries text(i).
func (m *shotMaker) make(n int, users []string, text func(i int) string) ([]shot, error) {
	out := make([]shot, n)
	now := time.Now()
	for i := range out {
		m.nextID++
		user := users[i%len(users)]
		inner := wecomtest.TextMessageXML(m.corp, user, text(i), m.nextID, m.agent, now)
		cb, err := wecomtest.NewCallback(m.token, m.aesKey, m.corp, m.agent, inner, wecom.FormatXML, nil)
		if err != nil {
			return nil, err
		}
		out[i] = shot{uri: m.path + "?" + cb.Query.Encode(), body: cb.Body, user: user}
	}
	return out, nil
}

// result is what one run of shots measured.
type result struct {
	sent, ok, failed int
	statuses         map[int]int
	elapsed          time.Duration
	lat              []time.Duration // of the successful shots, sorted
	cpu              time.Duration   // the server's CPU time during the run, if known
	// The machine around an ack run: the disk's write + fdatasync p99
	// just before it, and the share of CPU time the hypervisor took
	// during it. Tails follow both.
	diskP99 time.Duration
	steal   float64
	// The disk during the run, watched beside the daemon: its longest
	// write + fdatasync and how many took over 10 ms (see diskStalls).
	diskMax    time.Duration
	diskStalls int
	// The daemon's own group commits during the run: the bucket bounds
	// holding their p99, p99.9 and longest, and the mean writes per
	// commit. An ack tail far above the longest commit is not the disk.
	commitP99, commitP999, commitMax time.Duration
	group                            float64
}

func (r result) rate() float64 { return float64(r.ok) / r.elapsed.Seconds() }

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(r.lat)))) - 1
	return r.lat[max(0, min(i, len(r.lat)-1))]
}

func (r result) String() string {
	s := fmt.Sprintf("%d ok / %d sent in %v: %.0f/s, p50 %v p99 %v p99.9 %v max %v",
		r.ok, r.sent, r.elapsed.Round(time.Millisecond), r.rate(),
		ms(r.pct(50)), ms(r.pct(99)), ms(r.pct(99.9)), ms(r.pct(100)))
	if r.cpu > 0 {
		s += fmt.Sprintf(", server CPU %.0f%% (%.0fµs a callback)", 100*r.cpu.Seconds()/r.elapsed.Seconds(), float64(r.cpu.Microseconds())/float64(max(r.ok, 1)))
	}
	if r.failed > 0 {
		s += fmt.Sprintf(", %d failed %v", r.failed, r.statuses)
	}
	if r.diskP99 > 0 {
		s += fmt.Sprintf("; disk p99 before %v, steal %.0f%%", ms(r.diskP99), 100*r.steal)
	}
	if r.diskMax > 0 {
		s += fmt.Sprintf("; disk meanwhile: longest sync %v, %d over 10ms", ms(r.diskMax), r.diskStalls)
	}
	if r.commitP99 > 0 {
		s += fmt.Sprintf("; commits p99 ≤ %s, p99.9 ≤ %s, longest ≤ %s, %.1f writes each", bound(r.commitP99), bound(r.commitP999), bound(r.commitMax), r.group)
	}
	return s
}

// bound prints a histogram bucket bound.
func bound(d time.Duration) string {
	if d == time.Duration(math.MaxInt64) {
		return "+Inf"
	}
	return ms(d)
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + "ms" }

// firer sends shots to one server over conc keep-alive connections.
type firer struct {
	c    *fasthttp.HostClient
	base string
	conc int
	srv  *proc // the server, for its CPU time
	// timeline prints each paced run's latency second by second.
	timeline bool
}

// firer returns a firer for srv over conc connections, printing
// timelines when -timeline asks.
func (e *env) firer(srv *proc, conc int) *firer {
	addr := srv.addr
	return &firer{
		srv: srv,
		c: &fasthttp.HostClient{
			Addr: addr, MaxConns: conc, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
			MaxIdemponentCallAttempts: 1,
		},
		base:     "http://" + addr,
		conc:     conc,
		timeline: e.o.timeline,
	}
}

func (f *firer) do(s *shot, req *fasthttp.Request, resp *fasthttp.Response) int {
	req.Reset()
	resp.Reset()
	req.SetRequestURI(f.base + s.uri)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("text/xml")
	req.SetBodyRaw(s.body)
	if err := f.c.Do(req, resp); err != nil {
		return -1
	}
	return resp.StatusCode()
}

// paced sends the shots open-loop at rate per second. A shot's latency is
// counted from the moment it was due, not from when a connection became
// free, so a server that falls behind is not flattered (no coordinated
// omission).
func (f *firer) paced(shots []shot, rate float64, onSent func(i int, at time.Time)) result {
	type due struct {
		i  int
		at time.Time
	}
	ch := make(chan due, len(shots))
	lat := make([]time.Duration, len(shots))
	status := make([]int, len(shots))
	var wg sync.WaitGroup
	for range f.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for d := range ch {
				if onSent != nil {
					onSent(d.i, time.Now())
				}
				status[d.i] = f.do(&shots[d.i], req, resp)
				lat[d.i] = time.Since(d.at)
			}
		}()
	}
	interval := time.Duration(float64(time.Second) / rate)
	cpu0 := f.srv.cpu()
	start := time.Now().Add(5 * time.Millisecond)
	for i := range shots {
		at := start.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		ch <- due{i, at}
	}
	close(ch)
	wg.Wait()
	if f.timeline {
		timeline(lat, rate)
	}
	r := collect(status, lat, time.Since(start))
	r.cpu = f.srv.cpu() - cpu0
	return r
}

// timeline prints a per-second latency timeline of a paced run.
func timeline(lat []time.Duration, rate float64) {
	per := int(rate)
	for s := 0; s*per < len(lat); s++ {
		sec := slices.Clone(lat[s*per : min(len(lat), (s+1)*per)])
		slices.Sort(sec)
		fmt.Fprintf(os.Stderr, "      second %2d: p50 %v p99 %v max %v\n", s, ms(sec[len(sec)/2]), ms(sec[len(sec)*99/100]), ms(sec[len(sec)-1]))
	}
}

// flat out sends shots closed-loop: each connection sends the next shot as
// soon as its previous one is answered, for at most d (and at most once
// per shot unless cycle is set, for servers that do not deduplicate).
func (f *firer) flatOut(shots []shot, d time.Duration, cycle bool) result {
	var next atomic.Int64
	n := len(shots)
	limit := n
	if cycle {
		limit = math.MaxInt
	}
	type rec struct {
		lat    time.Duration
		status int
	}
	per := make([][]rec, f.conc)
	var wg sync.WaitGroup
	cpu0 := f.srv.cpu()
	start := time.Now()
	stop := start.Add(d)
	for w := range f.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for {
				i := int(next.Add(1) - 1)
				if i >= limit {
					return
				}
				t := time.Now()
				if t.After(stop) {
					return
				}
				st := f.do(&shots[i%n], req, resp)
				per[w] = append(per[w], rec{time.Since(t), st})
			}
		}()
	}
	wg.Wait()
	var status []int
	var lat []time.Duration
	for _, rs := range per {
		for _, r := range rs {
			status = append(status, r.status)
			lat = append(lat, r.lat)
		}
	}
	r := collect(status, lat, time.Since(start))
	r.cpu = f.srv.cpu() - cpu0
	return r
}

func collect(status []int, lat []time.Duration, elapsed time.Duration) result {
	r := result{sent: len(status), statuses: map[int]int{}, elapsed: elapsed}
	for i, st := range status {
		if st == fasthttp.StatusOK {
			r.ok++
			r.lat = append(r.lat, lat[i])
		} else {
			r.failed++
			r.statuses[st]++
		}
	}
	slices.Sort(r.lat)
	return r
}
