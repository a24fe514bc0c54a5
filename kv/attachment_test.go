package kv

import (
	"path/filepath"
	"testing"
)

// A held picture joins the question that follows: one job, one history
// entry, the picture first; the held job and its entry are gone.
func TestMergeAttachments(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "m.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pic, _, err := s.Accept(Question{App: "a", User: "Bob", DedupKey: "m1", Kind: KindQuestion, MsgType: "image",
		Attachments: []Attachment{{Kind: "image", MediaID: "mid-1", File: "1-0.jpg", Size: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	txt, _, err := s.Accept(Question{App: "a", User: "Bob", DedupKey: "m2", Kind: KindQuestion, Text: "这张图里是什么错误？"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MergeAttachments(txt, pic); err != nil {
		t.Fatal(err)
	}
	if len(txt.Attachments) != 1 || txt.Attachments[0].File != "1-0.jpg" || txt.Text != "这张图里是什么错误？" {
		t.Fatalf("merged job %+v", txt)
	}
	if _, err := s.Job(pic.ID); err == nil {
		t.Fatal("the held job is still pending")
	}
	j, err := s.Job(txt.ID)
	if err != nil || len(j.Attachments) != 1 || j.Attachments[0].MediaID != "mid-1" {
		t.Fatalf("stored job %+v, %v", j, err)
	}
	e, _, err := s.History(HistoryQuery{User: "bob"})
	if err != nil || len(e) != 1 || e[0].ID != txt.ID || len(e[0].Attachments) != 1 || e[0].Attachments[0].MediaID != "" {
		t.Fatalf("history %+v, %v (one entry with the picture, without WeCom's handle)", e, err)
	}
}
