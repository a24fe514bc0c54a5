package bridge

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm"
)

// firstTokenBackend streams a fixed answer and records when it emitted
// each question's first delta.
type firstTokenBackend struct {
	mu    sync.Mutex
	first map[string]time.Time // question -> first delta
	delay time.Duration
}

func (f *firstTokenBackend) Stream(ctx context.Context, req llm.Request, emit func(llm.Delta) error) (*llm.Result, error) {
	parts := []string{"**" + req.Query + "** 的回答：", "第一段。\n\n", "第二段，", "还有更多内容。\n\n", "最后一段。"}
	var all strings.Builder
	for i, p := range parts {
		if i == 0 {
			f.mu.Lock()
			f.first[req.Query] = time.Now()
			f.mu.Unlock()
		}
		if err := emit(llm.Delta{Text: p}); err != nil {
			return nil, err
		}
		all.WriteString(p)
		if err := sleepCtx(ctx, f.delay); err != nil {
			return nil, err
		}
	}
	return &llm.Result{Answer: all.String()}, nil
}

// BenchmarkBotFirstFrame measures, through the whole bot pipeline against
// the emulated long connection, the time from the LLM's first token to the
// emulated WeCom receiving the frame that shows it, and the frames per
// answer. Run: go test -run '^$' -bench BotFirstFrame ./bridge
func BenchmarkBotFirstFrame(b *testing.B) {
	fb := &firstTokenBackend{first: map[string]time.Time{}, delay: 20 * time.Millisecond}
	h, bs := newBotHarness(b, "")
	h.stop()
	h.backends = map[string]llm.Backend{"kb": fb}
	subs := bs.Subscribes(testBotID)
	h.start()
	waitFor(b, func() bool { return bs.Subscribes(testBotID) > subs && bs.Connected(testBotID) })
	var lat []time.Duration
	frames := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q := fmt.Sprintf("问题%d", i)
		if _, err := bs.PushText(testBotID, fmt.Sprintf("user%d", i%20), q); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			done := false
			for _, bb := range bs.Bubbles() {
				if bb.Finishes > 0 && strings.HasPrefix(bb.Text, "**"+q+"**") {
					done = true
					frames += bb.Frames
				}
			}
			if done {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("no answer")
			}
			time.Sleep(2 * time.Millisecond)
		}
		fb.mu.Lock()
		first := fb.first[q]
		fb.mu.Unlock()
		for _, f := range bs.Frames() {
			if strings.Contains(string(f.Body), "**"+q+"**") {
				lat = append(lat, f.At.Sub(first))
				break
			}
		}
	}
	b.StopTimer()
	h.stop()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "first-frame-p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "first-frame-p99-ms")
		b.ReportMetric(float64(frames)/float64(b.N), "frames/answer")
	}
}
