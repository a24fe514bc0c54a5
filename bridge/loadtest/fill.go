package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wecom-bridge/wecom-bridge/bridge"
	"github.com/wecom-bridge/wecom-bridge/kv"
)

// fillTemplate returns a directory holding a store with e.o.fill answered
// questions, building it once per run, or taking it from -fill-cache when
// one was built there by the same kv code with the same settings.
func (e *env) fillTemplate() (string, error) {
	if e.fillDir != "" {
		return e.fillDir, nil
	}
	n := e.o.fill
	key, keyErr := fillKey(n, len(e.users), e.o.fillSpan)
	cached := ""
	if e.o.fillCache != "" && keyErr == nil {
		cached = filepath.Join(e.o.fillCache, key)
		if _, err := os.Stat(filepath.Join(cached, "complete")); err == nil {
			fmt.Fprintf(os.Stderr, "    using the store with %d answered questions cached in %s\n", n, cached)
			e.fillDir = cached
			return cached, e.fillStats(cached)
		}
	} else if keyErr != nil {
		fmt.Fprintf(os.Stderr, "    not caching the filled store: %v\n", keyErr)
	}
	step(fmt.Sprintf("writing %d answered questions into a store (kv, NoSync)", n))
	dir := filepath.Join(e.dir, "fill-template")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	start := time.Now()
	pruned, err := fill(filepath.Join(dir, "bridge.db"), n, e.users, e.o.fillSpan)
	if err != nil {
		return "", err
	}
	e.rep.fillPruned = pruned
	e.rep.fillTime = time.Since(start)
	if err := e.fillStats(dir); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "    %v, store %s, %d dedup marks older than %v pruned\n",
		e.rep.fillTime.Round(time.Second), mb(e.rep.fillBytes), pruned, bridge.DefaultDedupWindow)
	e.fillDir = dir
	if cached != "" {
		tmp := cached + ".tmp"
		_ = os.RemoveAll(tmp)
		err := copyDir(dir, tmp)
		if err == nil {
			err = os.WriteFile(filepath.Join(tmp, "complete"), []byte(fmt.Sprintf("%d pruned %d ms\n", pruned, e.rep.fillTime.Milliseconds())), 0o600)
		}
		if err == nil {
			err = os.Rename(tmp, cached)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "    could not cache the filled store in %s: %v\n", cached, err)
		} else {
			fmt.Fprintf(os.Stderr, "    cached in %s (delete it to rebuild)\n", cached)
		}
	}
	return dir, nil
}

func (e *env) fillStats(dir string) error {
	size, err := dirSize(dir)
	if err != nil {
		return err
	}
	if info, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		size -= info.Size()
		if data, err := os.ReadFile(filepath.Join(dir, "complete")); err == nil {
			var msec int64
			_, _ = fmt.Sscanf(string(data), "%d pruned %d ms", &e.rep.fillPruned, &msec)
			e.rep.fillTime = time.Duration(msec) * time.Millisecond
		}
	}
	e.rep.fillBytes = size
	return nil
}

// filledCopy copies the filled store into the working directory's sub
// directory name, so that each run starts from the same store.
func (e *env) filledCopy(name string) error {
	tmpl, err := e.fillTemplate()
	if err != nil {
		return err
	}
	return copyDir(tmpl, filepath.Join(e.dir, name))
}

// copyDir copies the store files (not the cache marker) of src into dst.
func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, ent := range ents {
		if !ent.Type().IsRegular() || ent.Name() == "complete" {
			continue
		}
		if err := copyFile(filepath.Join(src, ent.Name()), filepath.Join(dst, ent.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// fillVersion changes when fill writes something different.
const fillVersion = "2" // 2: the history index is built before the store is used

// fillKey names a filled store by what decides its content: the kv
// package's source (its encoding), and the fill's settings.
func fillKey(n, users int, span time.Duration) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the module")
	}
	files, err := filepath.Glob(filepath.Join(filepath.Dir(mod), "kv", "*.go"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("no kv sources next to %s", mod)
	}
	slices.Sort(files)
	h := sha256.New()
	fmt.Fprintf(h, "%s %d %d %v\n", fillVersion, n, users, span)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(data))
		h.Write(data)
	}
	return fmt.Sprintf("fill-%d-%x", n, h.Sum(nil)[:8]), nil
}

// stored measures ack latency at -rate on an empty store and on a copy of
// the filled one, both daemons running, the runs alternating so that both
// see the same machine.
func (e *env) stored() error {
	step(fmt.Sprintf("stored: copying the store with %d answered questions", e.o.fill))
	if err := e.filledCopy("filled"); err != nil {
		return err
	}
	step("stored: daemons on an empty and on the filled store")
	pe, be, err := e.daemon("stored-empty", filepath.Join("stored-empty", "bridge.db"), 0)
	if err != nil {
		return err
	}
	defer pe.stop()
	pf, bf, err := e.daemon("filled", filepath.Join("filled", "bridge.db"), 0)
	if err != nil {
		return err
	}
	defer pf.stop()
	time.Sleep(2 * time.Second)
	e.quiet(pe) // start-up work (the filled store's check reads it all)
	e.quiet(pf)
	if e.rep.filledIdle, err = pf.memory(); err != nil {
		return err
	}
	fe, ff := e.firer(pe, e.o.conc), e.firer(pf, e.o.conc)
	step(fmt.Sprintf("stored: %.0f/s for %v, %d times each, alternating empty and %d stored", e.o.rate, e.o.duration, e.o.reps, e.o.fill))
	var empty, filled []result
	for range max(e.o.reps, 1) {
		r, err := e.pacedRun(fe, be)
		if err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "    empty: ", r)
		empty = append(empty, r)
		if r, err = e.pacedRun(ff, bf); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "    filled:", r)
		filled = append(filled, r)
	}
	e.rep.storedEmpty, e.rep.storedEmptyRuns = median(empty), empty
	e.rep.filledPaced, e.rep.filledRuns = median(filled), filled
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
	if err != nil {
		return 0, err
	}
	// A running daemon keeps its history index current (every few
	// seconds); the filled store must not hand a million unindexed
	// entries to the daemon under test, whose measured writes would then
	// be the index catching up, not its intake.
	if err := s.IndexHistory(); err != nil {
		return 0, err
	}
	return int(pruned.Load()) + n2, nil
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
