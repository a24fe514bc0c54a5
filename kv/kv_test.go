package kv

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func openTest(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "bridge.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func q(app, user, key, text string) Question {
	return Question{App: app, User: user, DedupKey: key, Kind: KindQuestion, Text: text}
}

func TestAcceptDedupsAndRecordsPending(t *testing.T) {
	s := openTest(t, Options{})
	j, dup, err := s.Accept(q("helpdesk", "zhangsan", "m:1", "你好"))
	if err != nil || dup || j == nil || j.ID == 0 {
		t.Fatalf("first accept: job=%v dup=%v err=%v", j, dup, err)
	}
	j2, dup, err := s.Accept(q("helpdesk", "zhangsan", "m:1", "你好"))
	if err != nil || !dup || j2 != nil {
		t.Fatalf("retry: job=%v dup=%v err=%v", j2, dup, err)
	}
	// The same MsgId under another app is a different message.
	if _, dup, _ := s.Accept(q("sales", "zhangsan", "m:1", "你好")); dup {
		t.Fatal("dedup leaked across apps")
	}
	pend, err := s.Pending()
	if err != nil || len(pend) != 2 {
		t.Fatalf("pending = %d, %v; want 2", len(pend), err)
	}
	e, err := s.Entry("zhangsan", j.ID)
	if err != nil || e.Status != StatusPending || e.Question != "你好" {
		t.Fatalf("entry = %+v, %v", e, err)
	}
}

func TestAcceptWithoutKindOnlyMarksSeen(t *testing.T) {
	s := openTest(t, Options{})
	j, dup, err := s.Accept(Question{App: "a", User: "u", DedupKey: "e:u|1|subscribe|"})
	if err != nil || dup || j != nil {
		t.Fatalf("job=%v dup=%v err=%v", j, dup, err)
	}
	if _, dup, _ := s.Accept(Question{App: "a", User: "u", DedupKey: "e:u|1|subscribe|"}); !dup {
		t.Fatal("second delivery not seen as duplicate")
	}
	if p, _ := s.Pending(); len(p) != 0 {
		t.Fatalf("pending = %d", len(p))
	}
}

func TestAcceptRejectsBadIDs(t *testing.T) {
	s := openTest(t, Options{})
	for _, bad := range []Question{
		{App: "", User: "u", DedupKey: "k"},
		{App: "a", User: "", DedupKey: "k"},
		{App: "a", User: "u\x00x", DedupKey: "k"},
		{App: "a", User: "u", DedupKey: ""},
	} {
		if _, _, err := s.Accept(bad); err == nil {
			t.Errorf("Accept(%+v) = nil error", bad)
		}
	}
}

// Concurrent retries of one callback race into the group committer: exactly
// one of them may win.
func TestAcceptConcurrentRetriesOneWinner(t *testing.T) {
	s := openTest(t, Options{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, dups := 0, 0
	for i := 0; i < 50; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, dup, err := s.Accept(q("a", "u", "m:42", "x"))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			if dup {
				dups++
			} else {
				wins++
			}
			mu.Unlock()
		}()
		go func(i int) { // unrelated traffic in the same batches
			defer wg.Done()
			if _, _, err := s.Accept(q("a", fmt.Sprintf("u%d", i), fmt.Sprintf("m:%d", 1000+i), "y")); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 || dups != 49 {
		t.Fatalf("wins=%d dups=%d, want 1 and 49", wins, dups)
	}
	if p, _ := s.Pending(); len(p) != 51 {
		t.Fatalf("pending = %d, want 51", len(p))
	}
}

func TestPendingSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	j, _, err := s.Accept(q("a", "u", "m:1", "q1"))
	if err != nil {
		t.Fatal(err)
	}
	j.Segment = &Segment{RawEnd: 5, Pieces: []string{"hello"}, Sent: 0}
	j.Answer = "hello"
	if err := s.SaveJob(j); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.Pending()
	if err != nil || len(p) != 1 {
		t.Fatalf("pending = %v, %v", p, err)
	}
	if p[0].Segment == nil || p[0].Segment.Pieces[0] != "hello" || p[0].Text != "q1" {
		t.Fatalf("job after reopen = %+v", p[0])
	}
	if _, dup, _ := s.Accept(q("a", "u", "m:1", "q1")); !dup {
		t.Fatal("dedup mark lost on reopen")
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second open: %v", err)
	}
}

func TestCompleteAndFinish(t *testing.T) {
	s := openTest(t, Options{})
	j, _, _ := s.Accept(q("a", "u", "m:1", "q"))
	j.Answer, j.AnswerDone = "答案", true
	conv := &Conversation{DifyID: "c-1", Seq: 0, LastActive: time.Now()}
	if err := s.CompleteAnswer(AnswerUpdate{Job: j, Conversation: conv,
		Entry: &EntryUpdate{Answer: "答案", Status: StatusAnswering, ConvSeq: 0, NewConv: true}}); err != nil {
		t.Fatal(err)
	}
	c, _ := s.Conversation("a", "u")
	if c.DifyID != "c-1" {
		t.Fatalf("conversation = %+v", c)
	}
	got, _ := s.Job(j.ID)
	if !got.AnswerDone || got.Answer != "答案" {
		t.Fatalf("job = %+v", got)
	}
	if err := s.FinishJob(j, StatusDone); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Job(j.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("job after finish: %v", err)
	}
	// A finished job cannot be resurrected by a late save.
	if err := s.SaveJob(j); !errors.Is(err, ErrNotFound) {
		t.Fatalf("save after finish: %v", err)
	}
	e, _ := s.Entry("u", j.ID)
	if e.Status != StatusDone || e.Answer != "答案" || !e.NewConv {
		t.Fatalf("entry = %+v", e)
	}
}

func TestResetConversation(t *testing.T) {
	s := openTest(t, Options{})
	if err := s.SetConversation("a", "u", Conversation{DifyID: "x", Turns: []Turn{{Q: "1", A: "2"}}, Seq: 3}); err != nil {
		t.Fatal(err)
	}
	c, err := s.ResetConversation("a", "u")
	if err != nil || c.DifyID != "" || len(c.Turns) != 0 || c.Seq != 4 || !c.Fresh {
		t.Fatalf("reset = %+v, %v", c, err)
	}
	other, _ := s.Conversation("b", "u")
	if other.Seq != 0 {
		t.Fatal("reset leaked across apps")
	}
}

func TestHistoryPagesSearchAndIsolation(t *testing.T) {
	s := openTest(t, Options{})
	for i := 0; i < 25; i++ {
		text := fmt.Sprintf("问题 %d", i)
		if i%5 == 0 {
			text += " Needle"
		}
		if _, _, err := s.Accept(q("a", "alice", fmt.Sprintf("m:%d", i), text)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Accept(q("a", "bob", fmt.Sprintf("m:b%d", i), "bob's secret")); err != nil {
			t.Fatal(err)
		}
	}
	// A user whose id is a prefix of another's must not see the other's rows.
	if _, _, err := s.Accept(q("a", "ali", "m:x", "short")); err != nil {
		t.Fatal(err)
	}
	var all []Entry
	var cursor uint64
	for pages := 0; ; pages++ {
		page, next, err := s.History(HistoryQuery{User: "alice", Before: cursor, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if next == 0 {
			break
		}
		cursor = next
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(all) != 25 {
		t.Fatalf("got %d entries, want 25", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID >= all[i-1].ID {
			t.Fatal("not newest first")
		}
	}
	for _, e := range all {
		if e.User != "alice" {
			t.Fatalf("foreign entry %+v", e)
		}
	}
	found, _, err := s.History(HistoryQuery{User: "alice", Search: "needle"})
	if err != nil || len(found) != 5 {
		t.Fatalf("search found %d, %v", len(found), err)
	}
	short, _, _ := s.History(HistoryQuery{User: "ali"})
	if len(short) != 1 || short[0].Question != "short" {
		t.Fatalf("ali sees %+v", short)
	}
	none, _, _ := s.History(HistoryQuery{User: "carol"})
	if len(none) != 0 {
		t.Fatal("unknown user sees rows")
	}
}

func TestPruneSeenAndHistory(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	s := openTest(t, Options{Now: func() time.Time { return now }})
	old := now.Add(-48 * time.Hour)
	for i := 0; i < 10; i++ {
		qq := q("a", "u", fmt.Sprintf("m:%d", i), "old")
		qq.Received = old
		j, _, err := s.Accept(qq)
		if err != nil {
			t.Fatal(err)
		}
		if i < 9 { // the last one stays pending
			if err := s.FinishJob(j, StatusDone); err != nil {
				t.Fatal(err)
			}
		}
	}
	fresh := q("a", "u", "m:new", "new")
	fresh.Received = now
	if _, _, err := s.Accept(fresh); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneSeen(now.Add(-24*time.Hour), 4)
	if err != nil || n != 4 {
		t.Fatalf("prune seen = %d, %v", n, err)
	}
	n, _ = s.PruneSeen(now.Add(-24*time.Hour), 100)
	if n != 6 {
		t.Fatalf("second prune = %d, want 6", n)
	}
	if _, dup, _ := s.Accept(fresh); !dup {
		t.Fatal("fresh mark pruned")
	}
	n, err = s.PruneHistory(now.Add(-24*time.Hour), 100)
	if err != nil || n != 9 {
		t.Fatalf("prune history = %d, %v; want 9", n, err)
	}
	left, _, _ := s.History(HistoryQuery{User: "u"})
	if len(left) != 2 {
		t.Fatalf("left %d entries, want 2 (pending old + fresh)", len(left))
	}
}

func TestQuota(t *testing.T) {
	s := openTest(t, Options{})
	now := time.Date(2026, 11, 22, 23, 59, 0, 0, time.UTC)
	lim := Limits{PerMinute: 2, PerDay: 3}
	want := []QuotaVerdict{QuotaOK, QuotaOK, QuotaOverMinute}
	for i, w := range want {
		v, err := s.TakeQuota("a", "u", lim, now.Add(time.Duration(i)*time.Second))
		if err != nil || v != w {
			t.Fatalf("take %d = %v, %v; want %v", i, v, err, w)
		}
	}
	if v, _ := s.TakeQuota("a", "u", lim, now.Add(61*time.Second-time.Nanosecond)); v != QuotaOK {
		t.Fatalf("after a minute: %v", v)
	}
	// Next calendar day would reset, but first check the day cap on the same day.
	s2 := openTest(t, Options{})
	day := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	for i := 0; i < 3; i++ {
		if v, _ := s2.TakeQuota("a", "u", lim, day.Add(time.Duration(i)*time.Minute)); v != QuotaOK {
			t.Fatalf("day take %d refused", i)
		}
	}
	if v, _ := s2.TakeQuota("a", "u", lim, day.Add(time.Hour)); v != QuotaOverDay {
		t.Fatalf("4th of the day = %v", v)
	}
	if v, _ := s2.TakeQuota("a", "u", lim, day.Add(24*time.Hour)); v != QuotaOK {
		t.Fatalf("next day = %v", v)
	}
	if v, _ := s2.TakeQuota("a", "other", lim, day.Add(time.Hour)); v != QuotaOK {
		t.Fatal("quota shared between users")
	}
}

func TestNonceSessionAndSecret(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	clock := now
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := Open(path, Options{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutNonce("st1", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.TakeNonce("st1"); !ok {
		t.Fatal("fresh nonce refused")
	}
	if ok, _ := s.TakeNonce("st1"); ok {
		t.Fatal("nonce accepted twice")
	}
	_ = s.PutNonce("st2", now.Add(time.Minute))
	clock = now.Add(2 * time.Minute)
	if ok, _ := s.TakeNonce("st2"); ok {
		t.Fatal("expired nonce accepted")
	}
	if err := s.PutSession(Session{ID: "sid", User: "u", Expires: clock.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Session("sid"); err != nil || got.User != "u" {
		t.Fatalf("session = %+v, %v", got, err)
	}
	if err := s.DeleteSession("sid"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session("sid"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted session: %v", err)
	}
	_ = s.PutSession(Session{ID: "old", User: "u", Expires: clock.Add(time.Minute)})
	clock = clock.Add(time.Hour)
	if _, err := s.Session("old"); !errors.Is(err, ErrNotFound) {
		t.Fatal("expired session returned")
	}
	if err := s.PruneExpired(); err != nil {
		t.Fatal(err)
	}
	k1, err := s.SecretKey("cookie")
	if err != nil || len(k1) != 32 {
		t.Fatalf("key %x, %v", k1, err)
	}
	_ = s.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k2, _ := s.SecretKey("cookie")
	if string(k1) != string(k2) {
		t.Fatal("secret key changed across reopen")
	}
}

func TestClosedStoreErrors(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if _, _, err := s.Accept(q("a", "u", "m:1", "x")); err == nil {
		t.Fatal("accept on closed store succeeded")
	}
}

func TestPingAndStats(t *testing.T) {
	s := openTest(t, Options{})
	if err := s.Ping(); err != nil {
		t.Fatal(err)
	}
	_, _, _ = s.Accept(q("a", "u", "m:1", "x"))
	st, err := s.Stats()
	if err != nil || st.PendingJobs != 1 || st.HistoryEntries != 1 || st.SeenKeys != 1 {
		t.Fatalf("stats = %+v, %v", st, err)
	}
}
