package kv

import (
	"errors"
	"fmt"
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

func TestPendingPage(t *testing.T) {
	s := openTest(t, Options{NoSync: true})
	var ids []uint64
	for i := 0; i < 25; i++ {
		j, _, _ := s.Accept(q("a", "u", fmt.Sprintf("m:%d", i), "q"))
		ids = append(ids, j.ID)
	}
	_ = s.FinishJob(&Job{ID: ids[3]}, "")
	var got []uint64
	after := uint64(0)
	for pages := 0; ; pages++ {
		page, err := s.PendingPage(after, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 10 || pages > 3 {
			t.Fatalf("page of %d, pages %d", len(page), pages)
		}
		for _, j := range page {
			got = append(got, j.ID)
		}
		after = page[len(page)-1].ID
	}
	if len(got) != 24 || got[0] != ids[0] || got[3] != ids[4] || got[23] != ids[24] {
		t.Fatalf("paged %v", got)
	}
}
