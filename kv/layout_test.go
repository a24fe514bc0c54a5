package kv

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Admins type ?user=BOB; WeCom treats ids case-insensitively.
func TestHistoryFoldsUserCase(t *testing.T) {
	s := openTest(t, Options{})
	j, _, _ := s.Accept(q("a", "Bob", "m:1", "我的问题"))
	_, _, _ = s.Accept(q("a", "bobby", "m:2", "someone else"))
	check := func(when string) {
		for _, u := range []string{"BOB", "bob", "Bob"} {
			got, _, err := s.History(HistoryQuery{User: u})
			if err != nil || len(got) != 1 || got[0].User != "Bob" || got[0].Question != "我的问题" {
				t.Fatalf("%s: History(%q) = %+v, %v", when, u, got, err)
			}
			if e, err := s.Entry(u, j.ID); err != nil || e.User != "Bob" {
				t.Fatalf("%s: Entry(%q) = %+v, %v", when, u, e, err)
			}
		}
		if _, err := s.Entry("bobby", j.ID); err == nil {
			t.Fatalf("%s: another user reads the entry", when)
		}
	}
	check("unindexed")
	if err := s.IndexHistory(); err != nil {
		t.Fatal(err)
	}
	check("indexed")
	j.Kind = KindQuestion
	if err := s.FinishJob(j, StatusDone); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.Entry("BOB", j.ID); e.Status != StatusDone {
		t.Fatalf("status via folded id = %s", e.Status)
	}
}

// Pages stay exact when part of the history is indexed and part is not.
func TestHistoryAcrossIndexWatermark(t *testing.T) {
	s := openTest(t, Options{NoSync: true})
	for i := 0; i < 30; i++ {
		if i == 13 {
			if err := s.IndexHistory(); err != nil {
				t.Fatal(err)
			}
		}
		_, _, _ = s.Accept(q("a", "alice", fmt.Sprintf("m:%d", i), fmt.Sprintf("问题 %d", i)))
		_, _, _ = s.Accept(q("a", "bob", fmt.Sprintf("m:b%d", i), "x"))
	}
	var ids []uint64
	cursor := uint64(0)
	for pages := 0; pages < 10; pages++ {
		page, next, err := s.History(HistoryQuery{User: "alice", Before: cursor, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			ids = append(ids, e.ID)
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	if len(ids) != 30 {
		t.Fatalf("paged %d entries: %v", len(ids), ids)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] >= ids[i-1] {
			t.Fatalf("order broken at %d: %v", i, ids)
		}
	}
}

// Retries carry the message's CreateTime: marks keyed by it append, and a
// mark written without it (or by the previous release) still catches a retry.
func TestDedupByMessageTime(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s := openTest(t, Options{Now: func() time.Time { return now }})
	m := q("a", "u", "m:77", "x")
	m.MsgTime = now.Add(-2 * time.Second)
	if _, dup, _ := s.Accept(m); dup {
		t.Fatal("first is dup")
	}
	if _, dup, _ := s.Accept(m); !dup {
		t.Fatal("retry not caught")
	}
	other := m
	other.App = "b"
	if _, dup, _ := s.Accept(other); dup {
		t.Fatal("dedup leaked across apps")
	}
	legacy := q("a", "u", "m:78", "y")
	_, _, _ = s.Accept(legacy) // no MsgTime
	legacy.MsgTime = now
	if _, dup, _ := s.Accept(legacy); !dup {
		t.Fatal("mark without MsgTime missed a retry with it")
	}
	n, err := s.PruneSeen(now.Add(time.Hour), 100)
	if err != nil || n != 3 {
		t.Fatalf("prune = %d, %v", n, err)
	}
	if _, dup, _ := s.Accept(m); dup {
		t.Fatal("pruned mark still there")
	}
}

// A file written by the previous release (JSON history keyed by user, with
// mixed-case ids) opens, its history moves to the new layout, and pending
// jobs, dedup marks and history all still work.
func TestOpenMigratesPreviousRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	defer func(c int) { migrateChunk = c }(migrateChunk)
	migrateChunk = 1000
	n := 3*migrateChunk + 7 // several migration transactions
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"seen", "seen_time", "jobs", "conv", "hist", "hist_index", "quota", "nonce", "session", "meta"} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		for i := 1; i <= n; i++ {
			user := fmt.Sprintf("User%d", i%3)
			e := Entry{ID: uint64(i), App: "a", User: user, Question: fmt.Sprintf("旧问题 %d", i), Answer: "旧回答",
				Status: StatusDone, RefID: "", Created: created.Add(time.Duration(i) * time.Second), Updated: created}
			v, _ := json.Marshal(e)
			if err := tx.Bucket([]byte("hist")).Put(histKey(user, e.ID), v); err != nil {
				return err
			}
			if i == 17 {
				continue // an entry the old id index lost: still migrated
			}
			if err := tx.Bucket([]byte("hist_index")).Put(idKey(e.ID), []byte(user)); err != nil {
				return err
			}
		}
		jb := tx.Bucket([]byte("jobs"))
		_, _ = jb.NextSequence()
		for i := 2; i <= n; i++ {
			_, _ = jb.NextSequence()
		}
		j := Job{ID: uint64(n), Question: Question{App: "a", User: "User1", DedupKey: "m:old", Kind: KindQuestion, Text: "旧问题", Received: created}}
		v, _ := json.Marshal(j)
		if err := jb.Put(idKey(j.ID), v); err != nil {
			return err
		}
		sk := pairKey("a", "m:old")
		if err := tx.Bucket([]byte("seen")).Put(sk, appendUint64(nil, uint64(created.UnixNano()))); err != nil {
			return err
		}
		return tx.Bucket([]byte("seen_time")).Put(append(appendUint64(nil, uint64(created.UnixNano())), sk...), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	// A backup taken by the previous release verifies too (before the
	// migration that Open does).
	if st, err := VerifySnapshot(path); err != nil || st.PendingJobs != 1 || st.HistoryEntries != n-1 {
		t.Fatalf("VerifySnapshot of a previous release's file: %+v, %v", st, err)
	}

	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.Pending()
	if err != nil || len(p) != 1 || p[0].Text != "旧问题" {
		t.Fatalf("pending = %+v, %v", p, err)
	}
	if _, dup, _ := s.Accept(Question{App: "a", User: "User1", DedupKey: "m:old", Kind: KindQuestion, MsgTime: created}); !dup {
		t.Fatal("old dedup mark lost")
	}
	total := 0
	for u := 0; u < 3; u++ {
		var cursor uint64
		for {
			page, next, err := s.History(HistoryQuery{User: fmt.Sprintf("user%d", u), Before: cursor, Limit: 500})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page {
				if e.User != fmt.Sprintf("User%d", u) || e.Answer != "旧回答" || !e.Created.Equal(created.Add(time.Duration(e.ID)*time.Second)) {
					t.Fatalf("migrated entry %+v", e)
				}
			}
			total += len(page)
			if next == 0 {
				break
			}
			cursor = next
		}
	}
	if total != n {
		t.Fatalf("history after migration: %d entries, want %d", total, n)
	}
	// New questions get ids after the old ones and sit with them.
	j, _, err := s.Accept(q("a", "USER1", "m:new", "新问题"))
	if err != nil || j.ID <= uint64(n) {
		t.Fatalf("new job %+v, %v", j, err)
	}
	if page, _, _ := s.History(HistoryQuery{User: "user1", Limit: 1}); len(page) != 1 || page[0].ID != j.ID {
		t.Fatalf("newest for user1 = %+v", page)
	}
	err = s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(legacyHist) != nil || tx.Bucket(legacyHistIndex) != nil {
			return fmt.Errorf("legacy buckets left")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneHistory(created.Add(10*time.Second), 100); err != nil || n != 9 {
		t.Fatalf("prune migrated = %d, %v", n, err)
	}
}

// Marks waiting in the dedup log catch retries across a restart, after the
// index batch moved them, and within one commit group; a failed commit
// leaves no phantom mark that would swallow the retried callback.
func TestDedupLogLifecycle(t *testing.T) {
	var full atomic.Bool
	path := filepath.Join(t.TempDir(), "bridge.db")
	opts := Options{IndexEvery: time.Hour, IndexBatch: 1 << 30, FailWrites: func() error {
		if full.Load() {
			return syscall.ENOSPC
		}
		return nil
	}}
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	mk := func(i int) Question {
		m := q("a", "u", fmt.Sprintf("m:%d", i), "x")
		m.MsgTime = at
		return m
	}
	// One winner among concurrent retries in the same commit groups.
	var wg sync.WaitGroup
	var wins atomic.Int32
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, dup, err := s.Accept(mk(1)); err == nil && !dup {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d winners", wins.Load())
	}
	full.Store(true)
	if _, _, err := s.Accept(mk(2)); err == nil {
		t.Fatal("accept succeeded on a full disk")
	}
	full.Store(false)
	if _, dup, err := s.Accept(mk(2)); err != nil || dup {
		t.Fatalf("retry after a failed commit: dup=%v err=%v", dup, err)
	}
	_ = s.Close()

	s, err = Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, i := range []int{1, 2} {
		if _, dup, _ := s.Accept(mk(i)); !dup {
			t.Fatalf("mark %d in the log lost across reopen", i)
		}
	}
	if err := s.IndexHistory(); err != nil {
		t.Fatal(err)
	}
	if len(s.recent) != 0 {
		t.Fatalf("%d marks still held in memory after the move", len(s.recent))
	}
	for _, i := range []int{1, 2} {
		if _, dup, _ := s.Accept(mk(i)); !dup {
			t.Fatalf("mark %d lost by the move", i)
		}
	}
	if st, _ := s.Stats(); st.SeenKeys != 2 {
		t.Fatalf("seen keys = %d", st.SeenKeys)
	}
}

// A CreateTime of 0 (missing) must not file the mark in 1970, where the
// next prune would drop it at once and let a replay through.
func TestDedupIgnoresBogusMessageTime(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s := openTest(t, Options{Now: func() time.Time { return now }})
	m := q("a", "u", "m:1", "x")
	m.Received = now
	m.MsgTime = time.Unix(0, 0)
	_, _, _ = s.Accept(m)
	if _, err := s.PruneSeen(now.Add(-time.Hour), 100); err != nil {
		t.Fatal(err)
	}
	if _, dup, _ := s.Accept(m); !dup {
		t.Fatal("mark with CreateTime 0 pruned as ancient")
	}
}
