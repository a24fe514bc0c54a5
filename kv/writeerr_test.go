package kv

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// A full disk fails every caller of the commit group, leaves nothing of the
// group behind (no dedup mark, no job, no history), shows in WriteErr and
// Ping until a real write succeeds again.
func TestWriteErrorsAreObservableAndAtomic(t *testing.T) {
	var full atomic.Bool
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := Open(path, Options{FailWrites: func() error {
		if full.Load() {
			return syscall.ENOSPC
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Accept(q("a", "u", "m:0", "before")); err != nil {
		t.Fatal(err)
	}
	if s.WriteErr() != nil {
		t.Fatal("WriteErr set on a healthy store")
	}
	full.Store(true)
	var wg sync.WaitGroup
	var fails atomic.Int32
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, _, err := s.Accept(q("a", fmt.Sprintf("u%d", i), fmt.Sprintf("m:%d", i+1), "during"))
			if errors.Is(err, syscall.ENOSPC) {
				fails.Add(1)
			} else {
				t.Errorf("accept %d during ENOSPC: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if fails.Load() != 40 {
		t.Fatalf("%d of 40 accepts failed", fails.Load())
	}
	if !errors.Is(s.WriteErr(), syscall.ENOSPC) {
		t.Fatalf("WriteErr = %v", s.WriteErr())
	}
	if err := s.Ping(); err == nil {
		t.Fatal("Ping healthy while writes fail")
	}
	full.Store(false)
	// The tiny probe fits again, but that says nothing about real writes.
	if err := s.Ping(); err == nil || s.WriteErr() == nil {
		t.Fatalf("Ping = %v, WriteErr = %v: a probe must not clear the write error", err, s.WriteErr())
	}
	p, _ := s.Pending()
	st, _ := s.Stats()
	if len(p) != 1 || st.HistoryEntries != 1 || st.SeenKeys != 1 {
		t.Fatalf("half state after failed commits: %d pending, %+v", len(p), st)
	}
	// The retried callback is new, not a duplicate, and its write clears the error.
	j, dup, err := s.Accept(q("a", "u3", "m:4", "during"))
	if err != nil || dup || j == nil {
		t.Fatalf("retry after space is back: %v %v %v", j, dup, err)
	}
	if s.WriteErr() != nil || s.Ping() != nil {
		t.Fatalf("still unhealthy after a successful write: %v", s.WriteErr())
	}
}

// A caller's own error (a finished job) is not a storage failure.
func TestCallerErrorIsNotWriteErr(t *testing.T) {
	s := openTest(t, Options{})
	j, _, _ := s.Accept(q("a", "u", "m:1", "x"))
	_ = s.FinishJob(j, StatusDone)
	if err := s.SaveJob(j); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if s.WriteErr() != nil {
		t.Fatalf("WriteErr = %v", s.WriteErr())
	}
}
