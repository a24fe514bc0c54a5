package kv

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestSendStampsSurviveRestartAndPrune(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	for i := 0; i < 5; i++ {
		if err := s.RecordSend("a", "Bob", t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.RecordSend("a", "bob", t0.Add(4*time.Second)) // same nanosecond, other case: still two sends
	_ = s.RecordSend("b", "bob", t0)
	j, _, _ := s.Accept(q("a", "bob", "m:1", "x"))
	j.Delivered = 3
	if err := s.SaveJobSent(j, t0.Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.RecentSends("a", "BOB", t0.Add(time.Second))
	if err != nil || len(got) != 6 || !got[0].Equal(t0.Add(time.Second)) || !got[5].Equal(t0.Add(5*time.Second)) {
		t.Fatalf("recent = %v, %v", got, err)
	}
	all, _ := s.AllRecentSends(t0)
	if len(all) != 8 || all[0].Member != "bob" {
		t.Fatalf("all = %+v", all)
	}
	if jj, _ := s.Job(j.ID); jj.Delivered != 3 {
		t.Fatal("progress not saved with the stamp")
	}
	// A send long after prunes expired stamps.
	late := t0.Add(time.Hour)
	for i := 0; i < 2; i++ {
		_ = s.RecordSend("a", "carol", late.Add(time.Duration(i)))
	}
	if all, _ := s.AllRecentSends(time.Time{}); len(all) != 2 {
		t.Fatalf("after prune %d stamps, want 2", len(all))
	}
	// A finished job records no stamp.
	_ = s.FinishJob(j, StatusDone)
	if err := s.SaveJobSent(j, late); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if got, _ := s.RecentSends("a", "bob", late); len(got) != 0 {
		t.Fatal("stamp of a finished job recorded")
	}
}

func TestFailJobRecordsReference(t *testing.T) {
	s := openTest(t, Options{})
	j, _, _ := s.Accept(q("a", "u", "m:1", "q"))
	for i := 1; i <= 3; i++ {
		j.Attempts = i
		if err := s.StartAttempt(j); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := s.Job(j.ID)
	if got.Attempts != 3 {
		t.Fatalf("attempts = %d", got.Attempts)
	}
	if err := s.FailJob(got, "K7Q2XM", "抱歉（参考编号：K7Q2XM）"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Job(j.ID); !errors.Is(err, ErrNotFound) {
		t.Fatal("failed job still pending")
	}
	e, _ := s.Entry("u", j.ID)
	if e.Status != StatusFailed || e.RefID != "K7Q2XM" || e.Answer != "抱歉（参考编号：K7Q2XM）" {
		t.Fatalf("entry = %+v", e)
	}
}
