package kv

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAcceptParallel measures durable intake (dedup + pending + history
// in one group-committed, fsynced transaction) under concurrent callers.
func BenchmarkAcceptParallel(b *testing.B) {
	s := openTest(b, Options{})
	var n atomic.Uint64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, _, err := s.Accept(q("a", fmt.Sprintf("u%d", i%500), fmt.Sprintf("m:%d", i), "请问报销流程是什么？")); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHistoryPage reads the newest page of a user with 10,000 entries.
func BenchmarkHistoryPage(b *testing.B) {
	s := openTest(b, Options{NoSync: true})
	for i := 0; i < 10000; i++ {
		if _, _, err := s.Accept(q("a", "heavy", fmt.Sprintf("m:%d", i), fmt.Sprintf("问题 %d：这是一个比较长的问题文本", i))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := s.History(HistoryQuery{User: "heavy", Limit: 20}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHistoryBehindIndex is the worst case of the batched index: a
// user's page while 20,000 newer entries of other users wait for the index
// batch (Options.IndexBatch), all scanned.
func BenchmarkHistoryBehindIndex(b *testing.B) {
	s := openTest(b, Options{NoSync: true, IndexEvery: time.Hour, IndexBatch: 1 << 30})
	for i := 0; i < 20; i++ {
		_, _, _ = s.Accept(q("a", "quiet", fmt.Sprintf("q:%d", i), "我的问题"))
	}
	if err := s.IndexHistory(); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 20000; i++ {
		if _, _, err := s.Accept(q("a", fmt.Sprintf("u%d", i%500), fmt.Sprintf("m:%d", i), "别人的问题")); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if got, _, err := s.History(HistoryQuery{User: "quiet", Limit: 20}); err != nil || len(got) != 20 {
			b.Fatal(len(got), err)
		}
	}
}
