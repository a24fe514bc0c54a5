package bridge

import (
	"strings"
	"testing"
)

// TestCounterLabels: label values are kept apart (the key joins them with
// NUL), and values longer than inc's stack buffer still count.
func TestCounterLabels(t *testing.T) {
	m := newMetrics()
	m.counter("t_total", "test", "a", "b")
	long := strings.Repeat("长", 100)
	m.inc("t_total", "a", "b")
	m.inc("t_total", "a", "b")
	m.inc("t_total", "ab", "")
	m.inc("t_total", long, "x")
	for _, c := range []struct {
		a, b string
		want uint64
	}{{"a", "b", 2}, {"ab", "", 1}, {"a", "", 0}, {long, "x", 1}} {
		if got := m.get("t_total", c.a, c.b); got != c.want {
			t.Errorf("get(%.10q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
