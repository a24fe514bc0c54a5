package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wecom-bridge/wecom-bridge/bridge"
	"github.com/wecom-bridge/wecom-bridge/kv"
)

// filled stores e.o.fill answered questions in the daemon's database, the
// way the daemon would have (dedup mark, history entry with its answer, job
// finished) over the last -fill-span, and prunes the dedup marks older than
// the dedup window as the daemon's maintenance does. Then it measures ack
// latency at -rate again.
func (e *env) filled() error {
	n := e.o.fill
	step(fmt.Sprintf("writing %d answered questions into the database (kv, NoSync)", n))
	path := filepath.Join(e.dir, "bridge.db")
	start := time.Now()
	pruned, err := fill(path, n, e.users, e.o.fillSpan)
	if err != nil {
		return err
	}
	e.rep.fillPruned = pruned
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	e.rep.fillTime, e.rep.fillBytes = time.Since(start), st.Size()
	fmt.Fprintf(os.Stderr, "    %v, database file %s, %d dedup marks older than %v pruned\n",
		e.rep.fillTime.Round(time.Second), mb(st.Size()), pruned, bridge.DefaultDedupWindow)

	step("daemon: start on the filled database")
	p, base, err := e.daemon("filled", "bridge.db", 0)
	if err != nil {
		return err
	}
	defer p.stop()
	time.Sleep(2 * time.Second)
	if e.rep.filledIdle, err = p.memory(); err != nil {
		return err
	}
	f := newFirer(p, e.o.conc)
	step(fmt.Sprintf("daemon: %.0f/s for %v, %d times, with %d more stored messages", e.o.rate, e.o.duration, e.o.reps, n))
	if e.rep.filledPaced, e.rep.filledRuns, err = e.pacedRuns(f, base); err != nil {
		return err
	}
	e.rep.filledOK = true
	return nil
}

// fill writes n answered questions spread over users and evenly over the
// span before now, then prunes the dedup marks older than the default
// dedup window and returns how many it pruned.
func fill(path string, n int, users []string, span time.Duration) (int, error) {
	s, err := kv.Open(path, kv.Options{NoSync: true, MaxBatch: 1024})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	answer := "差旅报销需要提交：\n\n1. 发票原件\n2. 行程单\n3. 部门负责人审批单\n\n在 OA 系统的“费用报销”里提交即可。"
	now := time.Now()
	// Prune as often as ten minutes of this traffic.
	pruneEvery := max(1, int(int64(n)*int64(10*time.Minute)/int64(span)))
	var next, pruned atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 512 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || firstErr.Load() != nil {
					return
				}
				at := now.Add(-span + time.Duration(int64(span)/int64(n)*int64(i)))
				j, _, err := s.Accept(kv.Question{
					App: appName, User: users[i%len(users)], DedupKey: "m:" + strconv.Itoa(9_000_000_000+i),
					Kind: kv.KindQuestion, Text: question, MsgType: "text", Received: at,
				})
				if err == nil && j != nil {
					j.Answer, j.AnswerDone, j.Delivered = answer, true, len(answer)
					err = s.CompleteAnswer(kv.AnswerUpdate{Job: j, Entry: &kv.EntryUpdate{Answer: answer, Status: kv.StatusAnswering}})
					if err == nil {
						err = s.FinishJob(j, kv.StatusDone)
					}
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if i > 0 && i%200000 == 0 {
					fmt.Fprintf(os.Stderr, "    %d written\n", i)
				}
				if i > 0 && i%pruneEvery == 0 {
					// The daemon prunes dedup marks every 10 minutes, so
					// the pages they free are reused by later writes.
					n, err := pruneSeen(s, at.Add(-bridge.DefaultDedupWindow))
					pruned.Add(int64(n))
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	n2, err := pruneSeen(s, now.Add(-bridge.DefaultDedupWindow))
	return int(pruned.Load()) + n2, err
}

// pruneSeen removes dedup marks older than before in batches, as the
// daemon's maintenance does.
func pruneSeen(s *kv.Store, before time.Time) (int, error) {
	total := 0
	for {
		n, err := s.PruneSeen(before, 5000)
		total += n
		if err != nil || n < 5000 {
			return total, err
		}
	}
}
