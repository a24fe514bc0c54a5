package kv

import (
	"errors"
	"testing"
)

// StartAttempt saves the job and marks its history entry answering in one
// write; it neither resurrects a finished job nor minds a pruned entry.
func TestStartAttempt(t *testing.T) {
	s := openTest(t, Options{NoSync: true})
	j, _, _ := s.Accept(q("a", "u", "m:1", "q"))
	j.Attempts = 1
	if err := s.StartAttempt(j); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Job(j.ID)
	e, _ := s.Entry("u", j.ID)
	if got.Attempts != 1 || e.Status != StatusAnswering {
		t.Fatalf("job %+v, entry %+v", got, e)
	}

	// A command has no history entry.
	c, _, _ := s.Accept(Question{App: "a", User: "u", DedupKey: "m:2", Kind: KindCommand, Text: "/new"})
	if err := s.StartAttempt(c); err != nil {
		t.Fatal(err)
	}

	if err := s.FinishJob(j, StatusDone); err != nil {
		t.Fatal(err)
	}
	if err := s.StartAttempt(j); !errors.Is(err, ErrNotFound) {
		t.Fatalf("start after finish: %v", err)
	}
}
