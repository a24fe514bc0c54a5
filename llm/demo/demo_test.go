package demo_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/llm/demo"
)

func newBackend(t *testing.T, cfg demo.Config) *demo.Backend {
	t.Helper()
	b, err := demo.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStreamDeltasMakeTheAnswer(t *testing.T) {
	b := newBackend(t, demo.Config{Delay: -1, DeltaRunes: 5})
	req := llm.Request{App: "demo", User: "u", Query: "  报销  流程\n是什么？ "}
	var got strings.Builder
	n := 0
	res, err := b.Stream(context.Background(), req, func(d llm.Delta) error {
		if d.Replace {
			t.Fatal("demo never replaces")
		}
		if !utf8.ValidString(d.Text) || utf8.RuneCountInString(d.Text) > 5 || d.Text == "" {
			t.Fatalf("delta %q: want 1-5 whole runes", d.Text)
		}
		got.WriteString(d.Text)
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Answer != got.String() || res.Answer != demo.Answer(req, 1) {
		t.Fatal("Result.Answer differs from the streamed deltas or from Answer")
	}
	if want := utf8.RuneCountInString(res.Answer)/5 + 1; n < want-1 {
		t.Fatalf("%d deltas, want about %d", n, want)
	}
	a := res.Answer
	for _, want := range []string{demo.Label, "演示模型", "Demo", "「报销 流程 是什么？」", "第 1 个问题", "演示回答 #1", "\n- ", "| --- |", "\n1. ", "\n\n"} {
		if !strings.Contains(a, want) {
			t.Errorf("answer lacks %q", want)
		}
	}
	if !strings.HasPrefix(a, demo.Label) {
		t.Error("answer must start with the demo label")
	}
	if len(a) < 1300 || len(a) > 4000 {
		t.Errorf("answer is %d bytes; want enough for several WeCom pieces (1300-4000)", len(a))
	}
}

func TestAnswerCountsTurns(t *testing.T) {
	req := llm.Request{User: "u", Query: "q", History: []llm.Turn{{Question: "a", Answer: "b"}, {Question: "c", Answer: "d"}}}
	if a := demo.Answer(req, 7); !strings.Contains(a, "第 3 个问题") {
		t.Fatalf("third question not counted: %q", a[:200])
	}
}

func TestStreamCancelReturnsPartial(t *testing.T) {
	b := newBackend(t, demo.Config{}) // default delay: a real pause between deltas
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got strings.Builder
	res, err := b.Stream(ctx, llm.Request{User: "u", Query: "q"}, func(d llm.Delta) error {
		got.WriteString(d.Text)
		if got.Len() > 30 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if res == nil || res.Answer != got.String() || res.Answer == demo.Answer(llm.Request{User: "u", Query: "q"}, 1) {
		t.Fatalf("want the partial answer streamed so far, got %+v", res)
	}
}

func TestStreamEmitErrorAborts(t *testing.T) {
	b := newBackend(t, demo.Config{Delay: -1})
	boom := errors.New("boom")
	calls := 0
	res, err := b.Stream(context.Background(), llm.Request{User: "u", Query: "q"}, func(llm.Delta) error {
		calls++
		if calls == 2 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || calls != 2 {
		t.Fatalf("err = %v after %d calls, want boom after 2", err, calls)
	}
	if res == nil || utf8.RuneCountInString(res.Answer) != demo.DefaultDeltaRunes {
		t.Fatalf("partial = %+v, want the first delta only", res)
	}
	res, err = b.Stream(context.Background(), llm.Request{User: "u", Query: "q"}, func(llm.Delta) error { return boom })
	if !errors.Is(err, boom) || res != nil {
		t.Fatalf("failure on the first delta: res=%+v err=%v, want nil result", res, err)
	}
}

func TestStreamRejectsEmptyRequest(t *testing.T) {
	b := newBackend(t, demo.Config{Delay: -1})
	for _, req := range []llm.Request{{User: "u", Query: "  "}, {Query: "q"}} {
		if res, err := b.Stream(context.Background(), req, func(llm.Delta) error { return nil }); err == nil || res != nil {
			t.Errorf("%+v: want an error and no result", req)
		}
	}
	if _, err := demo.New(demo.Config{DeltaRunes: -1}); err == nil {
		t.Error("negative DeltaRunes accepted")
	}
}

// TestAnswersDiffer: each answer is numbered, so WeCom's duplicate check
// cannot take a later answer's pieces for repeats of an earlier one's.
func TestAnswersDiffer(t *testing.T) {
	b := newBackend(t, demo.Config{Delay: -1})
	req := llm.Request{User: "u", Query: "same question"}
	var answers []string
	for range 2 {
		res, err := b.Stream(context.Background(), req, func(llm.Delta) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		answers = append(answers, res.Answer)
	}
	for i, a := range answers {
		if a != demo.Answer(req, int64(i+1)) {
			t.Fatalf("answer %d is not Answer(req, %d)", i+1, i+1)
		}
	}
	for _, p := range strings.Split(answers[0], "\n\n") {
		if strings.Contains(p, "#1") && strings.Contains(answers[1], p) {
			t.Errorf("numbered paragraph %q repeats in the second answer", p)
		}
	}
	for _, h := range []string{"（#2）", "演示回答 #2 结束"} {
		if !strings.Contains(answers[1], h) {
			t.Errorf("second answer lacks %q", h)
		}
	}
}
