//go:build linux

package kv

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// rssFile is this process's file-backed resident memory (RssFile).
func rssFile(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n << 10
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// Reading the whole store maps all of its pages; TrimMapped drops them from
// the process again, and every record reads back the same afterwards.
func TestTrimMappedDropsStorePages(t *testing.T) {
	s := openTest(t, Options{NoSync: true, IndexEvery: time.Hour})
	answer := strings.Repeat("答", 1000)
	for i := 0; i < 8000; i++ {
		j, _, err := s.Accept(q("a", fmt.Sprintf("u%d", i%50), fmt.Sprintf("m:%d", i), "问题"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.FinishJobWith(j, EntryUpdate{Answer: answer, Status: StatusDone}); err != nil {
			t.Fatal(err)
		}
	}
	sum := func() (n int, total int) {
		if err := s.view(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketEntries).ForEach(func(_, v []byte) error {
				// Decoded, not counted in the raw record: its binary
				// fields (times, ids) can happen to hold the rune's bytes.
				var e Entry
				if err := decodeEntry(v, &e); err != nil {
					return err
				}
				n++
				total += strings.Count(e.Answer, "答")
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		return n, total
	}
	n0, t0 := sum()
	if n0 != 8000 || t0 != 8000*1000 {
		t.Fatalf("read %d entries, %d answer runes", n0, t0)
	}
	var size int64
	_ = s.view(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	// The store's own trimmer may run between the read and the first
	// measurement; then the pages are read again and measured again.
	var before, after int64
	for try := 0; try < 5; try++ {
		if n, total := sum(); n != n0 || total != t0 {
			t.Fatalf("read %d entries, %d answer runes; before %d, %d", n, total, n0, t0)
		}
		before = rssFile(t)
		if err := s.TrimMapped(); err != nil {
			t.Fatal(err)
		}
		after = rssFile(t)
		if before-after >= size/2 {
			break
		}
	}
	t.Logf("store %d MB; file-backed RSS %d MB -> %d MB", size>>20, before>>20, after>>20)
	if before-after < size/2 {
		t.Fatalf("file-backed RSS %d -> %d bytes after trimming a %d-byte store", before, after, size)
	}
	if n, total := sum(); n != n0 || total != t0 {
		t.Fatalf("after trimming: %d entries, %d answer runes; before %d, %d", n, total, n0, t0)
	}
}
