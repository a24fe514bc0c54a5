package kv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var farFuture = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)

// seedDamageDB writes a database like a busy daemon's: 180 pending jobs
// among finished ones, history, conversations and sessions, so that it has
// branch pages, leaves, overflow pages and a freelist.
func seedDamageDB(t *testing.T) (path string, data []byte) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "bridge.db")
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("很长的回答。", 2000) // an overflow page
	for i := 0; i < 400; i++ {
		j, _, err := s.Accept(q("a", fmt.Sprintf("u%d", i%37), fmt.Sprintf("m:%d", i), fmt.Sprintf("问题 %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 && i < 440 {
			continue // stays pending
		}
		if i%50 == 1 {
			j.Answer = long
			_ = s.SaveJob(j)
		}
		if i < 400-180*2 || i%2 == 1 {
			if err := s.FinishJob(j, StatusDone); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = s.SetConversation("a", "u1", Conversation{DifyID: "c"})
	_ = s.PutSession(Session{ID: "sid", User: "u1"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, data
}

// useAll opens the file and runs every start-up read and a write; it must
// never panic, and reports the first error.
func useAll(path string) error {
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := s.Pending(); err != nil {
		return err
	}
	for u := 0; u < 37; u++ {
		if _, _, err := s.History(HistoryQuery{User: fmt.Sprintf("u%d", u), Limit: 500}); err != nil {
			return err
		}
	}
	if _, err := s.Stats(); err != nil {
		return err
	}
	if _, _, err := s.Accept(q("a", "new", "m:new", "x")); err != nil {
		return err
	}
	m := q("a", "new", "m:new2", "x")
	m.MsgTime = time.Now()
	if _, _, err := s.Accept(m); err != nil {
		return err
	}
	if err := s.IndexHistory(); err != nil {
		return err
	}
	if _, err := s.PruneSeen(farFuture, 1000); err != nil {
		return err
	}
	if _, err := s.PruneHistory(farFuture, 1000); err != nil {
		return err
	}
	return nil
}

func writeCopy(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bridge.db")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantCorrupt(t *testing.T, err error, path string) {
	t.Helper()
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("error = %v, want a *CorruptError", err)
	}
	msg := err.Error()
	for _, want := range []string{path, "wecom-bridge backup", "已损坏", "damaged"} {
		if ce.Empty && (want == "已损坏" || want == "damaged") {
			continue
		}
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q does not mention %q", msg, want)
		}
	}
}

func TestOpenTruncatedFile(t *testing.T) {
	path, data := seedDamageDB(t)
	ps := 4096
	// bbolt grows the file ahead of use: only a cut below the pages its meta
	// page counts loses data.
	f, _ := os.Open(path)
	c := &checker{f: f, size: int64(len(data))}
	m, reason := c.readMeta()
	f.Close()
	if reason != "" {
		t.Fatal(reason)
	}
	used := int(m.pgid) * ps
	if used < 20*ps {
		t.Fatalf("seed database too small: %d pages", m.pgid)
	}
	for _, n := range []int{1, 100, ps - 1, ps, ps + 64, 2 * ps, 3 * ps, used / 3, used / 2, used - ps, used - 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p := writeCopy(t, data[:n])
			_, err := Open(p, Options{})
			wantCorrupt(t, err, p)
		})
	}
}

func TestOpenEmptyFile(t *testing.T) {
	p := writeCopy(t, nil)
	_, err := Open(p, Options{})
	wantCorrupt(t, err, p)
	if !strings.Contains(err.Error(), "空文件") || !strings.Contains(err.Error(), "0 bytes") {
		t.Fatalf("empty-file error does not say so: %v", err)
	}
	s, err := Open(p, Options{AllowEmpty: true})
	if err != nil {
		t.Fatalf("AllowEmpty: %v", err)
	}
	defer s.Close()
	if _, _, err := s.Accept(q("a", "u", "m:1", "x")); err != nil {
		t.Fatal(err)
	}
}

// Overwriting any page with random bytes is either caught at Open or harmless
// (a free page); no use of the store panics or faults.
func TestOpenRandomBytesOverEachPage(t *testing.T) {
	_, data := seedDamageDB(t)
	ps := 4096
	r := rand.New(rand.NewPCG(1, 2))
	caught := 0
	for pg := 0; pg < len(data)/ps; pg++ {
		bad := append([]byte(nil), data...)
		for i := pg * ps; i < (pg+1)*ps; i++ {
			bad[i] = byte(r.Uint32())
		}
		p := writeCopy(t, bad)
		s, err := Open(p, Options{})
		if err != nil {
			wantCorrupt(t, err, p)
			caught++
			continue
		}
		_ = s.Close()
		if err := useAll(p); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("page %d: %v", pg, err)
		}
	}
	if caught == 0 {
		t.Fatal("no overwritten page was detected")
	}
	t.Logf("%d of %d overwritten pages refused at open", caught, len(data)/ps)
}

// Smaller runs of random bytes at random places (inside records, headers,
// element tables): never a panic or a fault.
func TestOpenRandomBytesScattered(t *testing.T) {
	_, data := seedDamageDB(t)
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 300; i++ {
		bad := append([]byte(nil), data...)
		n := 1 + r.IntN(64)
		off := 2*4096 + r.IntN(len(bad)-2*4096-n)
		for k := off; k < off+n; k++ {
			bad[k] = byte(r.Uint32())
		}
		p := writeCopy(t, bad)
		_ = useAll(p) // an error or not, but no panic
		_ = os.Remove(p)
	}
}

// A pending job whose record is garbage fails the start-up read with the
// recovery message instead of resuming some jobs and then crashing.
func TestPendingUndecodableIsCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	j, _, _ := s.Accept(q("a", "u", "m:1", "x"))
	if err := s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketJobs).Put(idKey(j.ID), []byte("{garbage")) }); err != nil {
		t.Fatal(err)
	}
	_, err = s.Pending()
	_ = s.Close()
	wantCorrupt(t, err, path)
}
