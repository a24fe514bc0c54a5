package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
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

	storedEmpty     result
	storedEmptyRuns []result

	commit    string
	took      []phaseTime
	notes     []string
	bytes     []bytesRun
	pinBare   pinnedRun
	pinDaemon pinnedRun
	backlog2  backlogRun
	profs     []*profileRun
}

type phaseTime struct {
	name  string
	d     time.Duration
	load  string  // load average when it started
	steal float64 // share of the machine's CPU time the hypervisor took meanwhile
}

// coreShare is the server's CPU time during a run as a share of the run's
// length: below 100% when pinned and behind, it waited for the disk or for
// the other processes on its core.
func coreShare(r result) float64 {
	return 100 * r.cpu.Seconds() / max(r.elapsed.Seconds(), 0.001)
}

// medianPct is the median over runs of each run's p-th percentile.
func medianPct(runs []result, p float64) time.Duration {
	if len(runs) == 0 {
		return 0
	}
	v := make([]time.Duration, len(runs))
	for i, r := range runs {
		v[i] = r.pct(p)
	}
	slices.Sort(v)
	return v[len(v)/2]
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
	if r.commit != "" {
		fmt.Fprintf(w, "daemon built from commit %s\n", r.commit)
	}
	var took []string
	for _, t := range r.took {
		took = append(took, fmt.Sprintf("%s %v (load %s, steal %.0f%%)", t.name, t.d.Round(time.Second), t.load, 100*t.steal))
	}
	fmt.Fprintf(w, "phases (time, 1-minute load average of the machine at the start, CPU time the hypervisor took from this VM meanwhile): %s\n", strings.Join(took, ", "))
	fmt.Fprintf(w, "%d client connections over loopback; acks fsynced.\n", o.conc)
	fmt.Fprintf(w, "The store's disk: one 4 KiB write + fdatasync takes %s (p50) / %s (p99); a bbolt commit does two.\n",
		ms(r.sync50), ms(r.sync99))
	fmt.Fprintf(w, "Ack runs use a fake LLM that takes %v per answer, as a real one takes seconds.\n", llmAnswerTime)
	for _, n := range r.notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintln(w)
	r.printIssue13(w)
	if o.phases["unpinned"] || o.phases["bare"] {
		r.printUnpinned(w)
	}
	for _, p := range r.profs {
		r.printProfile(w, p)
	}
}

// verdictZH is verdict for the Chinese-first table.
func verdictZH(ok bool) string {
	if ok {
		return "达到 met"
	}
	return "**未达到 MISSED**"
}

func storeLabel(s string) string {
	if s == "empty" {
		return "空库 / empty store"
	}
	n, _ := strings.CutSuffix(s, " stored")
	return "已存 " + n + " 条 / " + s
}

func kb(n float64) string { return fmt.Sprintf("%.2f KB", n/1000) }

func thousands(n float64) string {
	s := fmt.Sprintf("%.0f", n)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func pctChange(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return 100 * (float64(a)/float64(b) - 1)
}

// printIssue13 prints the figures of issue 13 in the README's format.
func (r *report) printIssue13(w io.Writer) {
	o := r.opts
	if len(r.bytes) == 0 && r.pinDaemon.flat.ok == 0 && r.backlog2.n == 0 && !r.filledOK && r.flat.ok == 0 {
		return
	}
	fmt.Fprintf(w, "| 指标 / measure | wecom-bridge | 裸 fasthttp / bare | 目标 / target |\n|---|---|---|---|\n")
	for _, b := range r.bytes {
		target := ""
		if b.store != "empty" {
			target = "≤ 3 KB：" + verdictZH(b.perCallback() <= 3000)
		}
		src := "块设备计数 / block device"
		if b.intakeIO.device < 0 {
			src = "write_bytes（无块设备计数 / no device counter）"
		}
		fmt.Fprintf(w, "| 每个回调写盘字节 / bytes written per accepted callback (%s distinct, flat out, %s) | %s（%s / %s，%s；write(2) %s，page cache dirtied %s）；连同回答 / with answering: %s | | %s |\n",
			thousands(float64(b.intake.ok)), storeLabel(b.store), kb(b.perCallback()), mb(b.intakeIO.disk()), thousands(float64(b.intake.ok)),
			src, kb(b.perCallbackOf(b.intakeIO.wchar)), kb(b.perCallbackOf(b.intakeIO.dirtied)), kb(b.perAnswered()), target)
	}
	for _, b := range r.bytes {
		if b.store == "empty" {
			fmt.Fprintf(w, "| 每个问题占库（回答前）/ store size per question, before answers | %s（%s 个问题，文件 %s，占用磁盘 %s / file %s, allocated %s）| | |\n",
				kb(b.allocPerQuestion()), thousands(float64(b.intake.ok)), mb(b.sizeIntake), mb(b.allocIntake), mb(b.sizeIntake), mb(b.allocIntake))
		}
	}
	if d, b := r.pinDaemon, r.pinBare; d.flat.ok > 0 {
		fmt.Fprintf(w, "| 单核（`taskset -c %s`，压测端在 %s）满负荷 / pinned to one core, flat out, callbacks/s | %s/s（写盘 %s/个，用了该核的 %.0f%%）/ %s/s (%s written each, %.0f%% of its core used) | %s/s | ≥ 6,000/s：%s |\n",
			o.pinDaemon, o.pinLoad, thousands(d.flat.rate()), kb(float64(d.flatBytes)/float64(max(d.flat.ok, 1))), coreShare(d.flat),
			thousands(d.flat.rate()), kb(float64(d.flatBytes)/float64(max(d.flat.ok, 1))), coreShare(d.flat), thousands(b.flat.rate()), verdictZH(d.flat.rate() >= 6000))
		fmt.Fprintf(w, "| 单核，%s/s 时应答 p50 / p99（%d 次取中位数）/ pinned, ack at %s/s, p50 / p99 (median of %d) | %s / %s | %s / %s | p99 ≤ 10 ms：%s |\n",
			thousands(o.rate), len(d.pacedRuns), thousands(o.rate), len(d.pacedRuns), ms(medianPct(d.pacedRuns, 50)), ms(medianPct(d.pacedRuns, 99)), ms(b.paced.pct(50)), ms(b.paced.pct(99)),
			verdictZH(d.paced.ok > 0 && medianPct(d.pacedRuns, 99) <= 10*time.Millisecond))
		fmt.Fprintf(w, "| 单核，每次运行 p50 / p99（运行前磁盘写+fdatasync p99；运行中 steal、守护进程自己的提交 p99 与最长、旁路探测的磁盘最长一次 sync）/ pinned, each run (disk p99 before; during: steal, the daemon's commit p99 and longest, the disk's longest sync seen beside it) | %s | | |\n", runList(d.pacedRuns))
		fmt.Fprintf(w, "| 单核，每个回调 CPU（满负荷 / %s/s）/ pinned, CPU per callback (flat out / at %s/s) | %.0f / %.0f µs | %.0f / %.0f µs | |\n",
			thousands(o.rate), thousands(o.rate), cpuPer(d.flat), cpuPer(d.paced), cpuPer(b.flat), cpuPer(b.paced))
	}
	if r.flat.ok > 0 {
		fmt.Fprintf(w, "| 不绑核满负荷 / unpinned, flat out: callbacks/s, p99 | %s/s, p99 %s | %s/s, p99 %s | |\n",
			thousands(r.flat.rate()), ms(r.flat.pct(99)), thousands(r.bareFlat.rate()), ms(r.bareFlat.pct(99)))
	}
	if b := r.backlog2; b.n > 0 {
		fmt.Fprintf(w, "| %s 个问题等待挂起的大模型时峰值 RSS / peak RSS (VmHWM) while %s questions wait for a hung LLM | %s（库 %s）/ %s (store %s) | | ≤ 64 MB：%s |\n",
			thousands(float64(b.n)), thousands(float64(b.n)), mb(b.waitHWM), mb(b.sizeWaiting), mb(b.waitHWM), mb(b.sizeWaiting), verdictZH(b.waitHWM <= 64<<20))
		order := "按用户顺序 / in order per member"
		if !b.inOrder() {
			order = fmt.Sprintf("**乱序 %d、缺 %d、重复 %d、超出企业微信限额被丢弃 %d / %d out of order, %d missing, %d duplicated, %d over WeCom's limit**",
				b.outOfOrder, b.missing, b.dupes, b.budgetDrops, b.outOfOrder, b.missing, b.dupes, b.budgetDrops)
		}
		fmt.Fprintf(w, "| 大模型恢复后积压清空 / backlog drained after the LLM is back (%s members × %d) | %v（%.0f 个/秒 answers/s，VmHWM %s），%s | | %s |\n",
			thousands(float64(b.users)), o.backlogPerUser, b.drain.Round(100*time.Millisecond), float64(b.intake.ok)/max(b.drain.Seconds(), 0.001), mb(b.drainHWM),
			order, verdictZH(b.inOrder()))
	}
	if r.filledOK {
		e50, e99 := medianPct(r.storedEmptyRuns, 50), medianPct(r.storedEmptyRuns, 99)
		f50, f99 := medianPct(r.filledRuns, 50), medianPct(r.filledRuns, 99)
		p50, p99 := pctChange(f50, e50), pctChange(f99, e99)
		fmt.Fprintf(w, "| %s/s 时应答 p50 / p99：空库 → 已存 %s 条（各 %d 次取中位数）/ ack at %s/s, empty store → %s stored (median of %d) | %s / %s → %s / %s（%+.0f%% / %+.0f%%） | | ±20%%：%s |\n",
			thousands(o.rate), thousands(float64(o.fill)), len(r.filledRuns), thousands(o.rate), thousands(float64(o.fill)), len(r.filledRuns),
			ms(e50), ms(e99), ms(f50), ms(f99), p50, p99, verdictZH(p50 <= 20 && p50 >= -20 && p99 <= 20 && p99 >= -20))
		fmt.Fprintf(w, "| 已存库 / the filled store | %s（%s 条，写入用时 %v，修剪去重标记 %s 个）| | |\n",
			mb(r.fillBytes), thousands(float64(o.fill)), r.fillTime.Round(time.Second), thousands(float64(r.fillPruned)))
		fmt.Fprintf(w, "| 每次运行 p50 / p99：空库 / each run, empty store | %s | | |\n", runList(r.storedEmptyRuns))
		fmt.Fprintf(w, "| 每次运行 p50 / p99：已存库 / each run, filled store | %s | | |\n", runList(r.filledRuns))
	}
	fmt.Fprintln(w)
}

// printProfile prints where the daemon's CPU went.
func (r *report) printProfile(w io.Writer, p *profileRun) {
	per := cpuPer(p.flat)
	fmt.Fprintf(w, "CPU 去向 / where the daemon's CPU goes: perf(1) cpu-clock samples of the daemon process, pinned, %s (%d callbacks in %v, %.0f µs per callback, %d samples)\n\n",
		p.label, p.flat.ok, p.flat.elapsed.Round(100*time.Millisecond), per, p.samples)
	fmt.Fprintf(w, "| 部分 / part | share | µs per callback | of which in the kernel |\n|---|---|---|---|\n")
	for _, c := range p.cats {
		share := float64(c.samples) / float64(max(p.samples, 1))
		if share < 0.005 {
			continue
		}
		fmt.Fprintf(w, "| %s | %.1f%% | %.0f | %.0f%% |\n", c.name, 100*share, share*per, 100*float64(c.inKer)/float64(max(c.samples, 1)))
	}
	fmt.Fprintf(w, "\nAcross the parts: %.0f%% of samples under runtime.mallocgc (allocation), %.0f%% in the kernel. A sample is charged to its innermost frame outside the Go runtime, the kernel and syscall glue.\n\n",
		100*float64(p.alloc)/float64(max(p.samples, 1)), 100*float64(p.kernel)/float64(max(p.samples, 1)))
}

// printUnpinned prints the figures of the unpinned, stream and first
// message runs.
func (r *report) printUnpinned(w io.Writer) {
	o := r.opts
	fmt.Fprintf(w, "Unpinned runs, questions from %d members.\n\n", o.users)
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
}

func runList(runs []result) string {
	var parts []string
	for _, r := range runs {
		p := ms(r.pct(50)) + " / " + ms(r.pct(99))
		if r.diskP99 > 0 {
			p += fmt.Sprintf("（磁盘 p99 %s，steal %.0f%%", ms(r.diskP99), 100*r.steal)
			if r.commitP99 > 0 {
				p += fmt.Sprintf("，提交 p99 ≤ %s、最长 ≤ %s", bound(r.commitP99), bound(r.commitMax))
			}
			if r.diskMax > 0 {
				p += fmt.Sprintf("，同时磁盘最长一次 %s、超过 10 ms 的 %d 次", ms(r.diskMax), r.diskStalls)
			}
			p += "）"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}
