package kv

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain removes the filled databases the benchmarks share.
func TestMain(m *testing.M) {
	code := m.Run()
	benchDBs.Range(func(_, p any) bool {
		_ = os.RemoveAll(filepath.Dir(p.(string)))
		return true
	})
	os.Exit(code)
}
