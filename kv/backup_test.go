package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// snapshotTo writes s's snapshot to a new file and returns its path.
func snapshotTo(t testing.TB, s *Store) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "copy.db")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.WriteSnapshot(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(out); fi.Size() != n {
		t.Fatalf("WriteSnapshot said %d bytes, file has %d", n, fi.Size())
	}
	return out
}

// A snapshot taken while writers keep accepting questions holds every
// question acknowledged before it started, opens, and passes the check.
func TestSnapshotUnderWriteLoad(t *testing.T) {
	s := openTest(t, Options{})
	var (
		acked   sync.Map // job id -> dedup key, once Accept returned
		n       atomic.Int64
		stop    = make(chan struct{})
		writers sync.WaitGroup
	)
	for w := 0; w < 8; w++ {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := n.Add(1)
				j, _, err := s.Accept(q("a", fmt.Sprintf("u%d", i%50), fmt.Sprintf("m:%d", i), strings.Repeat("问", 200)))
				if err != nil {
					t.Error(err)
					return
				}
				acked.Store(j.ID, true)
			}
		}()
	}
	for n.Load() < 500 {
		time.Sleep(time.Millisecond)
	}
	var before []uint64
	acked.Range(func(k, _ any) bool { before = append(before, k.(uint64)); return true })
	out := snapshotTo(t, s)
	close(stop)
	writers.Wait()

	st, err := VerifySnapshot(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.PendingJobs < len(before) || st.HistoryEntries < len(before) {
		t.Fatalf("copy has %d jobs, %d history entries; %d were acknowledged before the snapshot", st.PendingJobs, st.HistoryEntries, len(before))
	}
	c, err := Open(out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, id := range before {
		j, err := c.Job(id)
		if err != nil {
			t.Fatalf("acknowledged job %d is not in the copy: %v", id, err)
		}
		if j.Text != strings.Repeat("问", 200) {
			t.Fatalf("job %d text %q", id, j.Text)
		}
	}
	t.Logf("%d questions acknowledged before the snapshot, %d in it, %d in all", len(before), st.PendingJobs, n.Load())
}

// SnapshotFile copies a database no process holds, refuses one a Store has
// open (the daemon's lock) instead of copying it unsafely, and never
// creates a file that is not there.
func TestSnapshotFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Accept(q("a", "zhangsan", "m:1", "你好")); err != nil {
		t.Fatal(err)
	}
	if !InUse(path) {
		t.Fatal("InUse: false for a file a Store has open")
	}
	var buf bytes.Buffer
	if _, err := SnapshotFile(context.Background(), path, &buf, 50*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("snapshot of a held file: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if InUse(path) {
		t.Fatal("InUse: true after Close")
	}
	n, err := SnapshotFile(context.Background(), path, &buf, time.Second)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("snapshot: %d %v", n, err)
	}
	out := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(out, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := VerifySnapshot(out)
	if err != nil || st.PendingJobs != 1 || st.HistoryEntries != 1 {
		t.Fatalf("verify: %+v %v", st, err)
	}
	missing := filepath.Join(t.TempDir(), "none.db")
	if _, err := SnapshotFile(context.Background(), missing, &buf, time.Second); err == nil {
		t.Fatal("snapshot of a missing file succeeded")
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("snapshot created %s", missing)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := SnapshotFile(ctx, path, &buf, time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled snapshot: %v", err)
	}
}

// VerifySnapshot refuses what is not a whole wecom-bridge database, with an
// error and never a panic.
func TestVerifySnapshotRejects(t *testing.T) {
	s := openTest(t, Options{})
	for i := 0; i < 300; i++ {
		if _, _, err := s.Accept(q("a", "u", fmt.Sprintf("m:%d", i), strings.Repeat("答", 300))); err != nil {
			t.Fatal(err)
		}
	}
	good, err := os.ReadFile(snapshotTo(t, s))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	garbled := bytes.Clone(good)
	for i := 3 * 4096; i < len(garbled) && i < 40*4096; i += 7 {
		garbled[i] ^= 0x5a
	}
	cases := map[string]string{
		"empty":     write("empty.db", nil),
		"truncated": write("truncated.db", good[:len(good)/3]),
		"garbled":   write("garbled.db", garbled),
		"text":      write("text.db", bytes.Repeat([]byte("not a database\n"), 1000)),
		"missing":   filepath.Join(dir, "missing.db"),
	}
	for name, p := range cases {
		if _, err := VerifySnapshot(p); err == nil {
			t.Errorf("%s: verified", name)
		} else if !strings.Contains(err.Error(), "kv: ") {
			t.Errorf("%s: error without the package prefix: %v", name, err)
		}
	}
	if _, err := VerifySnapshot(write("good.db", good)); err != nil {
		t.Fatalf("the good copy: %v", err)
	}
}

// BenchmarkSnapshot100k measures a backup of a database holding 100,000
// answered questions (history entries with a 1 KB answer, their dedup
// marks, 2,000 users' conversations): the snapshot to a file plus fsync.
// It reports the file size; run with -benchtime=3x.
func BenchmarkSnapshot100k(b *testing.B) {
	s := openTest(b, Options{NoSync: true})
	fill100k(b, s)
	st, err := s.Stats()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("copy%d.db", i)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.WriteSnapshot(context.Background(), f); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64(st.FileBytes)/(1<<20), "MiB")
	start := time.Now()
	if _, err := VerifySnapshot(filepath.Join(dir, "copy0.db")); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "verify-ms")
}

func fill100k(b *testing.B, s *Store) {
	answer := strings.Repeat("这是一个回答的段落，包含一些说明。", 20) // ~1 KB
	var wg sync.WaitGroup
	const workers = 16
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < 100000; i += workers {
				user := fmt.Sprintf("user%04d", i%2000)
				j, _, err := s.Accept(q("helpdesk", user, fmt.Sprintf("m:%d", i), fmt.Sprintf("问题 %d：请问报销流程是什么？", i)))
				if err != nil {
					b.Error(err)
					return
				}
				j.Answer, j.AnswerDone = answer, true
				if err := s.CompleteAnswer(AnswerUpdate{Job: j, Conversation: &Conversation{DifyID: "conv-" + user, Seq: 1},
					Entry: &EntryUpdate{Answer: answer, Status: StatusAnswering}}); err != nil {
					b.Error(err)
					return
				}
				if err := s.FinishJob(j, StatusDone); err != nil {
					b.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
}
