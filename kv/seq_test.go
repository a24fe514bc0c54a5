package kv

import (
	"path/filepath"
	"testing"
)

func TestReserveNeverRepeatsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq.db")
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Reserve("app\x00bob", 10)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Reserve("app\x00bob", 5)
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Reserve("app\x00alice", 3)
	if err != nil {
		t.Fatal(err)
	}
	if a != 0 || b != 10 || other != 0 {
		t.Fatalf("first blocks = %d, %d, %d; want 0, 10, 0", a, b, other)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := s.Reserve("app\x00bob", 1)
	if err != nil {
		t.Fatal(err)
	}
	if c != 15 {
		t.Fatalf("after reopen the counter restarted at %d; want 15", c)
	}
	if _, err := s.Reserve("", 1); err == nil {
		t.Fatal("empty counter name accepted")
	}
}
