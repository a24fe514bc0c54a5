package main

import (
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
)

func TestCheckOrder(t *testing.T) {
	for _, tc := range []struct {
		got   []int
		asked int
		want  orderCheck
	}{
		{[]int{0, 1, 2}, 3, orderCheck{delivered: 3}},
		{[]int{0, 2, 1}, 3, orderCheck{delivered: 3, outOfOrder: 1}},
		{[]int{0, 1}, 3, orderCheck{delivered: 2, missing: 1}},
		{[]int{0, 1, 1, 2}, 3, orderCheck{delivered: 4, dupes: 1}},
		{nil, 2, orderCheck{missing: 2}},
	} {
		if c := checkOrder(tc.got, tc.asked); c != tc.want {
			t.Errorf("checkOrder(%v, %d) = %+v, want %+v", tc.got, tc.asked, c, tc.want)
		}
	}
}

func TestBacklogAnswerParsing(t *testing.T) {
	e := &env{backlogGot: map[string][]int{}, backlogOther: map[string][]string{}}
	e.onBacklogAnswer("r00007", "backlog r00007 q=12")
	e.onBacklogAnswer("r00007", "backlog r00007 q=13。")
	e.onBacklogAnswer("r00007", "正在思考…")
	if got := e.backlogGot["r00007"]; len(got) != 2 || got[0] != 12 || got[1] != 13 {
		t.Errorf("answers recorded %v, want [12 13]", got)
	}
	if got := e.backlogOther["r00007"]; len(got) != 1 {
		t.Errorf("other messages %q, want the thinking notice", got)
	}
	if userIndex("r00042") != 42 || userIndex("b100013") != 100013 {
		t.Error("userIndex does not read the number of a userSet name")
	}
}

// A perf script excerpt: an fdatasync under bbolt, an XML parse that
// allocates, a background GC worker, and a fasthttp socket write.
const perfScript = `
	ffffffff8225a101 do_syscall_64 ([kernel.kallsyms])
	ffffffff816f2296 __x64_sys_fdatasync ([kernel.kallsyms])
	           84ce internal/runtime/syscall/linux.Syscall6 (/tmp/wecom-bridge)
	           a551 syscall.Fdatasync (/tmp/wecom-bridge)
	           a552 go.etcd.io/bbolt.fdatasync (/tmp/wecom-bridge)

	           1c025 runtime.mallocgcSmallScanNoHeader (/tmp/wecom-bridge)
	           774e5 runtime.mallocgc (/tmp/wecom-bridge)
	           1cb45 bytes.(*Buffer).grow (/tmp/wecom-bridge)
	           1cb46 encoding/xml.(*Decoder).Token (/tmp/wecom-bridge)
	           1cb47 github.com/wecom-bridge/wecom-bridge/wecom.ParseMessage (/tmp/wecom-bridge)

	           3d944 runtime.scanobject (/tmp/wecom-bridge)
	           3a2fc runtime.gcDrain (/tmp/wecom-bridge)
	           381fc runtime.gcBgMarkWorker (/tmp/wecom-bridge)

	ffffffff8225a101 tcp_sendmsg ([kernel.kallsyms])
	           84ce internal/poll.(*FD).Write (/tmp/wecom-bridge)
	           84cf net.(*conn).Write (/tmp/wecom-bridge)
	           84d0 bufio.(*Writer).Flush (/tmp/wecom-bridge)
	           84d1 github.com/valyala/fasthttp.(*Server).serveConn (/tmp/wecom-bridge)
`

func TestAttribute(t *testing.T) {
	p := attribute(strings.NewReader("wecom-bridge 1 \n" + strings.ReplaceAll(perfScript, "\n\n", "\n\nwecom-bridge 1 \n")))
	if p.samples != 4 {
		t.Fatalf("%d samples, want 4", p.samples)
	}
	want := map[string]int{
		"fdatasync (kernel)":                       1,
		"XML parse":                                1,
		"GC, background (mark, sweep)":             1,
		"fasthttp (HTTP parse, response, sockets)": 1,
	}
	for _, c := range p.cats {
		if want[c.name] != c.samples {
			t.Errorf("category %q: %d samples, want %d", c.name, c.samples, want[c.name])
		}
		delete(want, c.name)
	}
	for name := range want {
		t.Errorf("no category %q", name)
	}
	if p.alloc != 1 || p.kernel != 2 {
		t.Errorf("alloc %d kernel %d, want 1 and 2", p.alloc, p.kernel)
	}
}

func TestParseFlags(t *testing.T) {
	o, _, err := parseFlags([]string{"-phases", "bytes,rss", "-quick", "-backlog", "500"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.phases) != 2 || !o.phases["bytes"] || !o.phases["rss"] {
		t.Errorf("phases %v, want bytes and rss", o.phases)
	}
	if o.backlog != 500 || o.bytesN != 10000 || o.reps != 1 {
		t.Errorf("-quick with -backlog 500: backlog %d bytes-n %d reps %d, want 500, 10000, 1", o.backlog, o.bytesN, o.reps)
	}
	o, _, err = parseFlags([]string{"-skip", "fill,profile"})
	if err != nil {
		t.Fatal(err)
	}
	if o.phases["stored"] || o.phases["profile"] || !o.phases["pinned"] {
		t.Errorf("-skip fill,profile left phases %v", o.phases)
	}
	if _, _, err := parseFlags([]string{"-phases", "byets"}); err == nil {
		t.Error("an unknown phase was accepted")
	}
}

// The gate passes requests to the fake Dify, holds them while hung and
// lets them through once released.
func TestGate(t *testing.T) {
	dify := llmtest.NewDify()
	defer dify.Close()
	g, err := newGate(dify.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	info, err := http.Get(g.url + "/info")
	if err != nil {
		t.Fatal(err)
	}
	info.Body.Close()
	if info.StatusCode != http.StatusUnauthorized {
		t.Errorf("/info without a key through the open gate: %d, want the fake's 401", info.StatusCode)
	}
	g.hang()
	done := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, g.url+"/chat-messages",
			strings.NewReader(`{"query":"hi","user":"u1","response_mode":"streaming","inputs":{}}`))
		req.Header.Set("Authorization", "Bearer app-llmtest")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- "error: " + err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- string(body)
	}()
	for g.held.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	select {
	case b := <-done:
		t.Fatalf("a question passed the hung gate: %q", b)
	default:
	}
	g.pass()
	if b := <-done; !strings.Contains(b, "message_end") {
		t.Errorf("released question got %q, want the echoed stream", b)
	}
}

func TestMedianPct(t *testing.T) {
	run := func(ms ...int) result {
		r := result{}
		for _, m := range ms {
			r.lat = append(r.lat, time.Duration(m)*time.Millisecond)
		}
		return r
	}
	// The p50 median and the p99 median come from different runs.
	runs := []result{run(1, 1, 9), run(5, 5, 5), run(3, 3, 100)}
	if got := medianPct(runs, 50); got != 3*time.Millisecond {
		t.Errorf("median p50 %v, want 3ms", got)
	}
	if got := medianPct(runs, 99); got != 9*time.Millisecond {
		t.Errorf("median p99 %v, want 9ms", got)
	}
}

func TestParseSteal(t *testing.T) {
	steal, all := parseSteal("cpu  16816 0 6227 38245 1082 0 1704 2341 500 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
	if steal != 2341 || all != 16816+6227+38245+1082+1704+2341 {
		t.Errorf("parseSteal = %d, %d", steal, all)
	}
	if s, a := parseSteal("intr 1 2 3"); s != 0 || a != 0 {
		t.Errorf("not a cpu line: %d, %d", s, a)
	}
}

func TestHistQuantile(t *testing.T) {
	const h = "x_seconds"
	b := func(le string) string { return h + `_bucket{le="` + le + `"}` }
	before := map[string]float64{b("0.001"): 10, b("0.01"): 10, b("0.1"): 10, b("+Inf"): 10, h + "_count": 10}
	after := map[string]float64{b("0.001"): 900, b("0.01"): 1000, b("0.1"): 1009, b("+Inf"): 1010, h + "_count": 1010}
	// 1,000 new: 890 within 1 ms, 990 within 10 ms, 999 within 100 ms.
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, time.Millisecond}, {0.99, 10 * time.Millisecond}, {0.999, 100 * time.Millisecond}, {1, time.Duration(math.MaxInt64)}} {
		if got := histQuantile(before, after, h, c.q); got != c.want {
			t.Errorf("q %v: %v, want %v", c.q, got, c.want)
		}
	}
	if got := histQuantile(after, after, h, 0.99); got != 0 {
		t.Errorf("nothing counted: %v", got)
	}
}

// The disk figures come from real syncs in the given directory, and the
// probe leaves no file behind.
func TestDiskProbes(t *testing.T) {
	dir := t.TempDir()
	p50, p99, err := syncLatency(dir, 20)
	if err != nil {
		t.Fatal(err)
	}
	if p50 <= 0 || p99 < p50 {
		t.Errorf("syncLatency: p50 %v, p99 %v", p50, p99)
	}
	longest, over := diskStalls(dir)() // stopped at once: still one sync
	if longest <= 0 || over < 0 {
		t.Errorf("diskStalls: longest %v, %d over 10ms", longest, over)
	}
	if over > 0 && longest <= 10*time.Millisecond {
		t.Errorf("diskStalls: %d over 10ms but the longest took %v", over, longest)
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("probe files left behind: %v", left)
	}
}
