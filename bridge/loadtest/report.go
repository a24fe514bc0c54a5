package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// report collects the figures of one run.
type report struct {
	machine        string
	opts           options
	sync50, sync99 time.Duration // one page write + fdatasync on the database's disk

	bareFlat, barePaced result
	flat, paced         result
	pacedRuns           []result
	echoPaced           result
	echoCPU             time.Duration
	idle, afterLoad     memory
	backlog             time.Duration
	backlogN            int

	firstMsg  result
	firstPara time.Duration

	streamIdle, streamPeak memory
	streamHWM              int64
	streamFlight           float64
	streamPieces           int

	fillTime    time.Duration
	fillBytes   int64
	fillPruned  int
	filledIdle  memory
	filledPaced result
	filledRuns  []result
	filledOK    bool
}

func machine() string {
	model := ""
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s %s/%s", runtime.NumCPU(), model, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func (r *report) print(w io.Writer) {
	o := r.opts
	fmt.Fprintf(w, "\nwecom-bridge load run — %s\n", r.machine)
	fmt.Fprintf(w, "%d client connections over loopback; questions from %d members; acks fsynced.\n", o.conc, o.users)
	fmt.Fprintf(w, "The database's disk: one 4 KiB write + fdatasync takes %s (p50) / %s (p99); a bbolt commit does two.\n",
		ms(r.sync50), ms(r.sync99))
	fmt.Fprintf(w, "Ack runs use a fake LLM that takes %v per answer, as a real one takes seconds.\n\n", llmAnswerTime)

	if r.bareFlat.ok == 0 || r.flat.ok == 0 {
		fmt.Fprintf(w, "(flat-out or ceiling run skipped: the throughput ratio is not measured)\n\n")
	}
	ratio := r.flat.rate() / max(r.bareFlat.rate(), 1)
	fmt.Fprintf(w, "| measure | wecom-bridge | bare fasthttp | ratio | target |\n|---|---|---|---|---|\n")
	fmt.Fprintf(w, "| callbacks/s, flat out (%v) | %.0f | %.0f | %.0f%% | ≥ 60%% %s |\n",
		o.flat, r.flat.rate(), r.bareFlat.rate(), 100*ratio, verdict(ratio >= 0.6))
	fmt.Fprintf(w, "| ack latency flat out, p50 / p99 | %s / %s | %s / %s | | |\n",
		ms(r.flat.pct(50)), ms(r.flat.pct(99)), ms(r.bareFlat.pct(50)), ms(r.bareFlat.pct(99)))
	fmt.Fprintf(w, "| ack latency at %.0f/s (median of %d runs), p50 | %s | %s | | |\n", o.rate, max(o.reps, 1), ms(r.paced.pct(50)), ms(r.barePaced.pct(50)))
	fmt.Fprintf(w, "| ack latency at %.0f/s, p99 | %s | %s | | ≤ 5 ms %s |\n", o.rate, ms(r.paced.pct(99)), ms(r.barePaced.pct(99)),
		verdict(r.paced.pct(99) <= 5*time.Millisecond))
	fmt.Fprintf(w, "| ack latency at %.0f/s, p99.9 | %s | %s | | |\n", o.rate, ms(r.paced.pct(99.9)), ms(r.barePaced.pct(99.9)))
	fmt.Fprintf(w, "| achieved rate, failures | %.0f/s, %d | %.0f/s, %d | | |\n", r.paced.rate(), r.paced.failed, r.barePaced.rate(), r.barePaced.failed)
	if r.echoPaced.ok > 0 {
		fmt.Fprintf(w, "| ack latency at %.0f/s while answering every question at once (instant LLM), p50 / p99 / p99.9 | %s / %s / %s | | | |\n",
			o.rate, ms(r.echoPaced.pct(50)), ms(r.echoPaced.pct(99)), ms(r.echoPaced.pct(99.9)))
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "| measure | value | target |\n|---|---|---|\n")
	if r.firstMsg.ok > 0 {
		over := func(p float64) time.Duration { return r.firstMsg.pct(p) - r.firstPara }
		fmt.Fprintf(w, "| callback → first WeCom message, p50 / p99 (%d streamed answers) | %s / %s | |\n",
			r.firstMsg.ok, ms(r.firstMsg.pct(50)), ms(r.firstMsg.pct(99)))
		fmt.Fprintf(w, "| … after the fake LLM finished its first paragraph (at +%v), p50 / p99 / max | %s / %s / %s | ≤ 50 ms %s |\n",
			r.firstPara, ms(over(50)), ms(over(99)), ms(over(100)), verdict(over(99) <= 50*time.Millisecond))
	}
	fmt.Fprintf(w, "| RSS idle (fresh start) | %s (anon %s, file %s) | ≤ 20 MB %s |\n", mb(r.idle.RSS), mb(r.idle.Anon), mb(r.idle.File), verdict(r.idle.RSS <= 20<<20))
	fmt.Fprintf(w, "| RSS after the flat-out run (VmHWM) | %s (%s) | |\n", mb(r.afterLoad.RSS), mb(r.afterLoad.HWM))
	if r.backlogN > 0 {
		fmt.Fprintf(w, "| answering the flat-out backlog (%d questions, echo LLM) | %v (%.0f answers/s) | |\n",
			r.backlogN, r.backlog.Round(100*time.Millisecond), float64(r.backlogN)/max(r.backlog.Seconds(), 0.001))
	}
	if r.streamPeak.RSS > 0 {
		fmt.Fprintf(w, "| RSS with %d answers streaming at once (peak in flight %.0f) | %s peak (anon %s), VmHWM %s | ≤ 100 MB %s |\n",
			o.stream, r.streamFlight, mb(r.streamPeak.RSS), mb(r.streamPeak.Anon), mb(r.streamHWM), verdict(r.streamHWM <= 100<<20))
	}
	if r.filledOK {
		p50 := float64(r.filledPaced.pct(50))/float64(r.paced.pct(50)) - 1
		p99 := float64(r.filledPaced.pct(99))/float64(r.paced.pct(99)) - 1
		fmt.Fprintf(w, "| database after writing %d more answered questions over %v (%d dedup marks pruned) | %s, written in %v | |\n",
			o.fill, o.fillSpan, r.fillPruned, mb(r.fillBytes), r.fillTime.Round(time.Second))
		fmt.Fprintf(w, "| RSS idle on that database | %s (anon %s, file %s) | |\n", mb(r.filledIdle.RSS), mb(r.filledIdle.Anon), mb(r.filledIdle.File))
		fmt.Fprintf(w, "| ack latency at %.0f/s there, p50 / p99 / p99.9 | %s / %s / %s | |\n", o.rate,
			ms(r.filledPaced.pct(50)), ms(r.filledPaced.pct(99)), ms(r.filledPaced.pct(99.9)))
		fmt.Fprintf(w, "| change against the empty database (median of %d runs each), p50 / p99 | %+.0f%% / %+.0f%% | flat (±20%%) %s |\n",
			len(r.filledRuns), 100*p50, 100*p99, verdict(p50 <= 0.2 && p99 <= 0.2))
		fmt.Fprintf(w, "| p50 / p99 of each run, empty database | %s | |\n", runList(r.pacedRuns))
		fmt.Fprintf(w, "| p50 / p99 of each run, filled database | %s | |\n", runList(r.filledRuns))
	}
}

func runList(runs []result) string {
	var parts []string
	for _, r := range runs {
		parts = append(parts, ms(r.pct(50))+" / "+ms(r.pct(99)))
	}
	return strings.Join(parts, ", ")
}
