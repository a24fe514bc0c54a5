package kv

import (
	"path/filepath"
	"testing"
	"time"
)

// TestCommitStats: every group commit is counted once, with the writes it
// carried, and the buckets are cumulative up to the count.
func TestCommitStats(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "b.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := s.CommitStats()
	for i := range 20 {
		q := Question{App: "app", User: "zhangsan", DedupKey: "m:" + string(rune('a'+i)), Text: "q", Kind: KindQuestion, MsgType: "text"}
		if _, _, err := s.Accept(q); err != nil {
			t.Fatal(err)
		}
	}
	st := s.CommitStats()
	if got := st.Callers - before.Callers; got < 20 {
		t.Errorf("callers %d, want at least the 20 accepts", got)
	}
	if st.Count <= before.Count || st.Count > st.Callers {
		t.Errorf("count %d (before %d), callers %d", st.Count, before.Count, st.Callers)
	}
	if len(st.Bounds) != len(st.Buckets) || st.Sum <= 0 {
		t.Fatalf("bounds %d, buckets %d, sum %v", len(st.Bounds), len(st.Buckets), st.Sum)
	}
	for i := 1; i < len(st.Buckets); i++ {
		if st.Buckets[i] < st.Buckets[i-1] || st.Buckets[i] > st.Count || st.Bounds[i] <= st.Bounds[i-1] {
			t.Fatalf("not cumulative: %v over %v", st.Buckets, st.Bounds)
		}
	}
}

func TestCommitStatsBuckets(t *testing.T) {
	s := new(Store)
	s.commitTimes.observe(300*time.Microsecond, 1)
	s.commitTimes.observe(3*time.Millisecond, 4)
	s.commitTimes.observe(time.Hour, 2)
	st := s.CommitStats()
	// ≤0.5 ms: 1; ≤5 ms: 2; above the last bound: only in Count.
	if st.Buckets[0] != 1 || st.Buckets[3] != 2 || st.Buckets[len(st.Buckets)-1] != 2 || st.Count != 3 || st.Callers != 7 {
		t.Errorf("stats %+v", st)
	}
}
