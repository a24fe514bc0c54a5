package kv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// procIO returns this process's counter name from /proc/self/io (wchar:
// bytes handed to write/pwrite, whatever the file system does with them).
func procIO(tb testing.TB, name string) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Skipf("no /proc/self/io: %v", err) // benchmarks only; not on this OS
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if k, v, ok := bytes.Cut(line, []byte(": ")); ok && string(k) == name {
			n, _ := strconv.ParseInt(string(v), 10, 64)
			return n
		}
	}
	return 0
}

// benchStored is how many questions are stored before measuring:
// KV_BENCH_STORED, default 100,000 (the figure is 1,000,000).
func benchStored() int {
	if n, err := strconv.Atoi(os.Getenv("KV_BENCH_STORED")); err == nil && n >= 0 {
		return n
	}
	return 100_000
}

// benchAnswerBytes pads stored answers to KV_BENCH_ANSWER bytes (to make a
// large file quickly for BenchmarkOpenCheck).
func benchAnswerBytes() int {
	n, _ := strconv.Atoi(os.Getenv("KV_BENCH_ANSWER"))
	return n
}

var benchDBs sync.Map // stored count -> path of a filled file, reused across b.N rounds

// filledDB returns a copy of a database holding n answered questions from
// 2,000 users (dedup marks, history, finished jobs), like a daemon's after
// some weeks.
func filledDB(b *testing.B, n int) string {
	b.Helper()
	src, ok := benchDBs.Load(n)
	if !ok {
		dir, err := os.MkdirTemp("", "kvbench")
		if err != nil {
			b.Fatal(err)
		}
		p := filepath.Join(dir, "filled.db")
		s, err := Open(p, Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		base := time.Now().Add(-48 * time.Hour)
		// The same transaction functions as Accept, CompleteAnswer and
		// FinishJob, a few hundred questions per commit, so a million
		// stored questions take seconds rather than an hour.
		const per = 500
		for i := 0; i < n; i += per {
			err := s.update(func(tx *bolt.Tx) error {
				for k := i; k < i+per && k < n; k++ {
					qq := benchQuestion(k, base.Add(time.Duration(k)*time.Millisecond))
					j, _, err := s.acceptTx(tx, qq)
					if err != nil {
						return err
					}
					ans := "这是一个典型长度的回答，大约两百字节。" + qq.Text
					if pad := benchAnswerBytes(); pad > len(ans) {
						ans += strings.Repeat("答", (pad-len(ans))/3)
					}
					if err := updateEntry(tx, j.User, j.ID, qq.Received, &EntryUpdate{Answer: ans, Status: StatusDone}); err != nil {
						return err
					}
					if err := tx.Bucket(bucketJobs).Delete(idKey(j.ID)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := s.IndexHistory(); err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		benchDBs.Store(n, p)
		src = p
	}
	data, err := os.ReadFile(src.(string))
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "bridge.db")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

// benchQuestion looks like a real callback: a 19-digit MsgId (random order),
// a user among 2,000, a short Chinese question.
func benchQuestion(i int, at time.Time) Question {
	msgID := (uint64(i)*0x9E3779B97F4A7C15)%9_000_000_000_000_000_000 + 1_000_000_000_000_000_000
	return Question{App: "helpdesk", User: fmt.Sprintf("user%04d", (i*7919)%2000), DedupKey: fmt.Sprintf("m:%d", msgID),
		Kind: KindQuestion, Text: fmt.Sprintf("请问报销流程是什么？第 %d 个问题", i), MsgType: "text", Received: at, MsgTime: at.Truncate(time.Second)}
}

// BenchmarkAcceptStored measures durable intake (fsync on) into a store that
// already holds KV_BENCH_STORED questions, from 64 concurrent callers, and
// reports bytes written per accepted question (wB/accept, from
// /proc/self/io) and database bytes per stored question (dbB/q).
func BenchmarkAcceptStored(b *testing.B) {
	n := benchStored()
	p := filledDB(b, n)
	// The index batch runs once, after the intake, and its bytes count.
	s, err := Open(p, Options{IndexEvery: time.Hour, IndexBatch: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	st0, _ := s.Stats()
	fi0, _ := os.Stat(p)
	var next atomic.Int64
	next.Store(int64(n))
	base := time.Now()
	b.SetParallelism(32) // 64 callers on 2 cores
	w0 := procIO(b, "wchar")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1))
			if _, _, err := s.Accept(benchQuestion(i, base.Add(time.Duration(i)*time.Microsecond))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	wi := procIO(b, "wchar")
	if err := s.IndexHistory(); err != nil {
		b.Fatal(err)
	}
	w1 := procIO(b, "wchar")
	b.ReportMetric(float64(w1-wi)/float64(b.N), "indexB/accept")
	st1, _ := s.Stats()
	b.ReportMetric(float64(b.N)/float64(st1.Commits-st0.Commits), "accepts/commit")
	b.ReportMetric(float64(w1-w0)/float64(b.N), "wB/accept")
	if n > 0 {
		b.ReportMetric(float64(st0.FileBytes)/float64(n), "dbB/q")
		_ = fi0
	}
}

// BenchmarkOpenCheck measures Open's structural check on the filled file
// (page cache warm: the file was just written). For a 1 GB file:
// KV_BENCH_STORED=450000 KV_BENCH_ANSWER=2000.
func BenchmarkOpenCheck(b *testing.B) {
	p := filledDB(b, benchStored())
	fi, _ := os.Stat(p)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := checkFile(p, time.Second); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(fi.Size())/(1<<20), "MiB")
}
