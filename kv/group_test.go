package kv

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// On one core, callers that are ready when a group starts join it: the
// committer yields before it commits, instead of committing the first
// request alone while the others are still on their way to submit.
func TestGroupCommitFillsOnOneCore(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	s := openTest(t, Options{})
	const callers, each = 64, 10
	st0, _ := s.Stats()
	var wg sync.WaitGroup
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, _, err := s.Accept(q("a", fmt.Sprintf("u%d", c), fmt.Sprintf("m:%d:%d", c, i), "x")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st1, _ := s.Stats()
	commits := st1.Commits - st0.Commits
	per := float64(callers*each) / float64(commits)
	t.Logf("%d accepts in %d commits (%.1f per commit)", callers*each, commits, per)
	if per < 40 {
		t.Fatalf("%.1f accepts per commit with %d callers ready, want at least 40", per, callers)
	}
}
