package kv

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
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

// A batch larger than one index transaction is indexed in chunks; a crash
// between two chunks (index keys above the watermark, watermark not moved)
// neither duplicates nor hides entries, and the next batch completes it.
func TestIndexBatchInChunks(t *testing.T) {
	s := openTest(t, Options{NoSync: true, IndexEvery: time.Hour, IndexBatch: 1 << 30})
	users := []string{"alice", "Bob", "carol"}
	n := 3*indexChunk + 17
	for i := 0; i < n; i++ {
		if _, _, err := s.Accept(q("a", users[i%3], fmt.Sprintf("m:%d", i), fmt.Sprintf("问题 %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	want := func(when string) {
		t.Helper()
		for ui, u := range users {
			got, next, err := s.History(HistoryQuery{User: u, Limit: 500})
			if err != nil {
				t.Fatal(err)
			}
			cnt := 0
			for i := ui; i < n; i += 3 {
				cnt++
			}
			if len(got) != cnt || next != 0 {
				t.Fatalf("%s: %s has %d entries (next %d), want %d", when, u, len(got), next, cnt)
			}
			for i := 1; i < len(got); i++ {
				if got[i].ID >= got[i-1].ID {
					t.Fatalf("%s: %s order broken at %d", when, u, i)
				}
			}
		}
	}
	// What a crash after the first chunks leaves: some keys in the index,
	// the watermark still at 0.
	keys, last, err := s.unindexedKeys(indexRead)
	if err != nil || len(keys) != n || last != uint64(n) {
		t.Fatalf("unindexedKeys = %d keys, last %d, %v", len(keys), last, err)
	}
	if err := s.update(func(tx *bolt.Tx) error {
		for _, k := range keys[:2*indexChunk] {
			if err := tx.Bucket(bucketUserHist).Put(k, nil); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want("partly indexed")
	if err := s.IndexHistory(); err != nil {
		t.Fatal(err)
	}
	want("indexed")
	var wm uint64
	var indexed int
	_ = s.view(func(tx *bolt.Tx) error {
		wm = indexedUpTo(tx)
		indexed = tx.Bucket(bucketUserHist).Stats().KeyN
		return nil
	})
	if wm != uint64(n) || indexed != n {
		t.Fatalf("watermark %d, %d index keys; want %d and %d", wm, indexed, n, n)
	}
}

// With epochs of 4 ids, a user's history spans many epochs of the index:
// pages, search and the unindexed tail still give every entry once, newest
// first, also after retention prunes the oldest.
func TestHistoryAcrossEpochs(t *testing.T) {
	defer func(b int) { histEpochBits = b }(histEpochBits)
	histEpochBits = 2
	s := openTest(t, Options{NoSync: true, IndexEvery: time.Hour, IndexBatch: 1 << 30})
	base := time.Now().Add(-time.Hour)
	users := []string{"alice", "Bob", "carol"}
	var alice []uint64
	for i := 0; i < 90; i++ {
		if i == 61 {
			if err := s.IndexHistory(); err != nil {
				t.Fatal(err)
			}
		}
		qq := q("a", users[i%3], fmt.Sprintf("m:%d", i), fmt.Sprintf("问题 %d", i))
		if i%5 == 0 {
			qq.Text = "报销 " + qq.Text
		}
		qq.Received = base.Add(time.Duration(i) * time.Second)
		j, _, err := s.Accept(qq)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.FinishJob(j, StatusDone); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			alice = append(alice, j.ID)
		}
	}
	page := func(query HistoryQuery) []uint64 {
		t.Helper()
		var ids []uint64
		for pages := 0; pages < 50; pages++ {
			got, next, err := s.History(query)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range got {
				if e.User != "alice" {
					t.Fatalf("entry %d of %s in alice's history", e.ID, e.User)
				}
				ids = append(ids, e.ID)
			}
			if next == 0 {
				return ids
			}
			query.Before = next
		}
		t.Fatal("paging does not end")
		return nil
	}
	reversed := func(ids []uint64) []uint64 {
		out := slices.Clone(ids)
		slices.Reverse(out)
		return out
	}
	if got := page(HistoryQuery{User: "ALICE", Limit: 7}); !slices.Equal(got, reversed(alice)) {
		t.Fatalf("alice's pages: %v\nwant %v", got, reversed(alice))
	}
	var want []uint64
	for k, id := range alice {
		if (3*k)%5 == 0 {
			want = append(want, id)
		}
	}
	if got := page(HistoryQuery{User: "alice", Limit: 2, Search: "报销"}); !slices.Equal(got, reversed(want)) {
		t.Fatalf("search: %v, want %v", got, reversed(want))
	}
	if err := s.IndexHistory(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneHistory(base.Add(30*time.Second), 1000); err != nil || n != 30 {
		t.Fatalf("PruneHistory = %d, %v", n, err)
	}
	if got := page(HistoryQuery{User: "alice", Limit: 4}); !slices.Equal(got, reversed(alice[10:])) {
		t.Fatalf("after pruning: %v, want %v", got, reversed(alice[10:]))
	}
}

// A file of a development build has the index without epochs in bucket
// "user_hist": Open drops it and builds the new one from the entries.
func TestOpenRebuildsIndexWithoutEpochs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		if _, _, err := s.Accept(q("a", []string{"alice", "bob"}[i%2], fmt.Sprintf("m:%d", i), "x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.IndexHistory(); err != nil {
		t.Fatal(err)
	}
	// What that build left: its own index, ours absent, the watermark at 40.
	if err := s.update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketUserHist); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketUserHist); err != nil {
			return err
		}
		old, err := tx.CreateBucket(legacyUserHist)
		if err != nil {
			return err
		}
		return old.Put(append([]byte("alice\x00"), idKey(1)...), nil)
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{NoSync: true, IndexEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, u := range []string{"alice", "bob"} {
		got, _, err := s.History(HistoryQuery{User: u, Limit: 100})
		if err != nil || len(got) != 20 {
			t.Fatalf("History(%s) = %d entries, %v", u, len(got), err)
		}
	}
	_ = s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(legacyUserHist) != nil {
			t.Error("the old index is still there")
		}
		if n := tx.Bucket(bucketUserHist).Stats().KeyN; n != 40 || indexedUpTo(tx) != 40 {
			t.Errorf("new index: %d keys, watermark %d; want 40 and 40", n, indexedUpTo(tx))
		}
		return nil
	})
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
