package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"time"
)

// ErrCorrupt marks a database file that cannot be used as it is: truncated,
// overwritten, or empty where a database was expected. Open's error wraps it
// (test with errors.Is) and is a *CorruptError that names the file and the
// way to recover.
var ErrCorrupt = errors.New("kv: database file is damaged")

// CorruptError is what Open (and the start-up reads) return for a damaged
// database file.
type CorruptError struct {
	Path   string // the database file
	Reason string // what is wrong, in English (offsets, sizes)
	Empty  bool   // the file exists but has 0 bytes
}

func (e *CorruptError) Error() string {
	if e.Empty {
		return fmt.Sprintf("kv: 数据库文件 %s 是空文件（0 字节），这里本应是已有的数据库。"+
			"恢复方法：停止服务，用 `wecom-bridge backup` 做的备份覆盖该文件；"+
			"若确实要以全新数据库启动（待答问题、历史、会话都会丢失），先删除或移走该空文件。"+
			" / kv: database file %s is empty (0 bytes) where a database was expected. "+
			"To recover, stop the daemon and copy a backup made with `wecom-bridge backup` over it; "+
			"to start with a fresh database instead (pending questions, history and sessions are lost), remove or move the empty file away",
			e.Path, e.Path)
	}
	return fmt.Sprintf("kv: 数据库文件 %s 已损坏（%s）。"+
		"恢复方法：停止服务，用 `wecom-bridge backup` 做的备份覆盖该文件；"+
		"或把该文件移走（例如 mv %s %s.damaged）以全新数据库启动（待答问题、历史、会话会丢失）。"+
		" / kv: database file %s is damaged (%s). To recover, stop the daemon and copy a backup made with "+
		"`wecom-bridge backup` over it, or move the file away (mv %s %s.damaged) to start with a fresh "+
		"database (pending questions, history and sessions are lost)",
		e.Path, e.Reason, e.Path, e.Path, e.Path, e.Reason, e.Path, e.Path)
}

// Unwrap lets errors.Is(err, ErrCorrupt) match.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// bbolt's on-disk format (go.etcd.io/bbolt/internal/common), version 2.
const (
	boltMagic         = 0xED0CDAED
	boltVersion       = 2
	pageHeaderSize    = 16 // id u64, flags u16, count u16, overflow u32
	branchElemSize    = 16 // pos u32, ksize u32, pgid u64
	leafElemSize      = 16 // flags u32, pos u32, ksize u32, vsize u32
	bucketHeaderSize  = 16 // root pgid u64, sequence u64
	metaSize          = 64 // magic..txid (56 bytes) + checksum
	flagBranch        = 0x01
	flagLeaf          = 0x02
	flagMeta          = 0x04
	flagFreelist      = 0x10
	leafFlagBucket    = 0x01
	pgidNoFreelist    = ^uint64(0)
	maxCheckDepth     = 64
	maxPageSize       = 1 << 16
	minPageSize       = 512
	freelistCountSlot = 0xFFFF
)

// boltMeta is the part of a meta page the check needs.
type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64 // high water mark: pages [0, pgid) exist
	txid     uint64
}

// checker walks a bbolt file with plain reads (never the memory map, so a
// damaged file yields an error instead of a fault), verifying that every page
// bbolt will follow from the newest valid meta page lies inside the file, is
// of the right type, and that every element of it stays inside the page.
type checker struct {
	f     io.ReaderAt
	size  int64
	meta  boltMeta
	ps    int64
	seen  []uint64 // bitmap of reachable pages
	pages int      // pages read
	buf   []byte
}

// checkFile verifies the structure of the bbolt file at path. It returns nil
// for a sound file, a *CorruptError for a damaged one, and another error when
// the file cannot be read.
func checkFile(path string, lockTimeout time.Duration) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("kv: check %s: %w", path, err)
	}
	defer f.Close()
	if err := sharedLock(f, lockTimeout); err != nil {
		if errors.Is(err, errLocked) {
			return lockedError(path)
		}
		return fmt.Errorf("kv: lock %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("kv: check %s: %w", path, err)
	}
	c := &checker{f: f, size: st.Size()}
	if reason := c.run(); reason != "" {
		return &CorruptError{Path: path, Reason: reason}
	}
	return nil
}

// run returns "" for a sound file, else what is wrong.
func (c *checker) run() string {
	m, reason := c.readMeta()
	if reason != "" {
		return reason
	}
	c.meta, c.ps = m, int64(m.pageSize)
	if need := int64(m.pgid) * c.ps; need > c.size || int64(m.pgid) < 0 {
		return fmt.Sprintf("truncated: the file has %d bytes, its meta page says %d pages of %d bytes (%d bytes)",
			c.size, m.pgid, m.pageSize, need)
	}
	if m.pgid < 4 {
		return fmt.Sprintf("meta page high water mark %d is below the 4 pages of an empty database", m.pgid)
	}
	c.seen = make([]uint64, (m.pgid+63)/64)
	c.mark(0, 0)
	c.mark(1, 0)
	var free []uint64
	if m.freelist != pgidNoFreelist {
		var r string
		if free, r = c.readFreelist(m.freelist); r != "" {
			return r
		}
	}
	if _, r := c.walk(m.root, 0, true, nil, nil); r != "" {
		return r
	}
	for _, id := range free {
		if id < 2 || id >= m.pgid {
			return fmt.Sprintf("freelist lists page %d outside [2, %d)", id, m.pgid)
		}
		if c.isMarked(id) {
			return fmt.Sprintf("freelist lists page %d that is in use", id)
		}
	}
	return ""
}

func (c *checker) readMeta() (boltMeta, string) {
	if c.size < 2*minPageSize {
		return boltMeta{}, fmt.Sprintf("truncated: the file has only %d bytes, less than its two meta pages", c.size)
	}
	first := make([]byte, pageHeaderSize+metaSize)
	var metas []boltMeta
	if m, ok := c.metaAt(0, first); ok {
		metas = append(metas, m)
	}
	// The second meta page sits at the page size, which the first one gives;
	// when it is unreadable, try the usual sizes.
	sizes := []int64{4096, 8192, 16384, 65536, 512, 1024, 2048, 32768}
	if len(metas) == 1 {
		sizes = []int64{int64(metas[0].pageSize)}
	}
	for _, ps := range sizes {
		if m, ok := c.metaAt(ps, first); ok && int64(m.pageSize) == ps {
			metas = append(metas, m)
			break
		}
	}
	if len(metas) == 0 {
		return boltMeta{}, "neither meta page (page 0 or 1) is a valid bbolt meta page: wrong magic, version or checksum"
	}
	best := metas[0]
	for _, m := range metas[1:] {
		if m.txid > best.txid {
			best = m
		}
	}
	return best, ""
}

func (c *checker) metaAt(off int64, buf []byte) (boltMeta, bool) {
	if off+int64(len(buf)) > c.size {
		return boltMeta{}, false
	}
	if _, err := c.f.ReadAt(buf, off); err != nil {
		return boltMeta{}, false
	}
	if binary.LittleEndian.Uint16(buf[8:]) != flagMeta {
		return boltMeta{}, false
	}
	b := buf[pageHeaderSize:]
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != boltMagic || le.Uint32(b[4:]) != boltVersion {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	_, _ = h.Write(b[:56])
	if h.Sum64() != le.Uint64(b[56:]) {
		return boltMeta{}, false
	}
	m := boltMeta{pageSize: le.Uint32(b[8:]), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]),
		pgid: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}
	if m.pageSize < minPageSize || m.pageSize > maxPageSize || m.pageSize&(m.pageSize-1) != 0 {
		return boltMeta{}, false
	}
	return m, true
}

func (c *checker) mark(id, overflow uint64) {
	for i := id; i <= id+overflow; i++ {
		c.seen[i/64] |= 1 << (i % 64)
	}
}

func (c *checker) isMarked(id uint64) bool { return c.seen[id/64]&(1<<(id%64)) != 0 }

// readPage reads page id with its overflow pages, checking that it is inside
// the high water mark and not reached twice.
func (c *checker) readPage(id uint64, wantFlags ...uint16) ([]byte, string) {
	if id < 2 || id >= c.meta.pgid {
		return nil, fmt.Sprintf("a reference to page %d, outside the file's pages [2, %d)", id, c.meta.pgid)
	}
	if c.isMarked(id) {
		return nil, fmt.Sprintf("page %d is referenced twice", id)
	}
	hdr := make([]byte, pageHeaderSize)
	if _, err := c.f.ReadAt(hdr, int64(id)*c.ps); err != nil {
		return nil, fmt.Sprintf("page %d cannot be read: %v", id, err)
	}
	le := binary.LittleEndian
	if got := le.Uint64(hdr); got != id {
		return nil, fmt.Sprintf("page %d identifies itself as page %d (overwritten?)", id, got)
	}
	flags, overflow := le.Uint16(hdr[8:]), uint64(le.Uint32(hdr[12:]))
	ok := false
	for _, w := range wantFlags {
		ok = ok || flags == w
	}
	if !ok {
		return nil, fmt.Sprintf("page %d has unexpected type flags %#x", id, flags)
	}
	if id+overflow >= c.meta.pgid {
		return nil, fmt.Sprintf("page %d runs %d pages past the end of the file", id, id+overflow+1-c.meta.pgid)
	}
	for i := id + 1; i <= id+overflow; i++ {
		if c.isMarked(i) {
			return nil, fmt.Sprintf("page %d overlaps page %d", id, i)
		}
	}
	c.mark(id, overflow)
	n := int64(overflow+1) * c.ps
	if int64(cap(c.buf)) < n {
		c.buf = make([]byte, n)
	}
	p := c.buf[:n]
	if _, err := c.f.ReadAt(p, int64(id)*c.ps); err != nil {
		return nil, fmt.Sprintf("page %d cannot be read: %v", id, err)
	}
	c.pages += int(overflow + 1)
	// The buffer is reused by the next read: callers copy what they keep.
	return append([]byte(nil), p...), ""
}

func (c *checker) readFreelist(id uint64) ([]uint64, string) {
	p, r := c.readPage(id, flagFreelist)
	if r != "" {
		return nil, "freelist: " + r
	}
	le := binary.LittleEndian
	idx, count := 0, int(le.Uint16(p[10:]))
	if count == freelistCountSlot {
		if len(p) < pageHeaderSize+8 {
			return nil, fmt.Sprintf("freelist page %d is too short", id)
		}
		idx, count = 1, int(le.Uint64(p[pageHeaderSize:]))
	}
	if count < 0 || pageHeaderSize+(idx+count)*8 > len(p) || (idx+count) < idx {
		return nil, fmt.Sprintf("freelist page %d claims %d entries, more than it holds", id, count)
	}
	out := make([]uint64, count)
	for i := range out {
		out[i] = le.Uint64(p[pageHeaderSize+(idx+i)*8:])
	}
	return out, ""
}

// walk checks the tree of one bucket rooted at page id. top is true for the
// root bucket (whose leaves hold the daemon's buckets and are always read).
//
// Keys must ascend within each page and stay inside the range the parent
// branch gives (min inclusive, max exclusive; nil is open), exactly as
// bbolt's own check wants: bbolt rebuilds its freelist at open with that
// check (Options.NoFreelistSync) and would panic on a goroutine of its own
// at the first violation. It returns the largest key of the subtree.
func (c *checker) walk(id uint64, depth int, top bool, min, max []byte) ([]byte, string) {
	if depth > maxCheckDepth {
		return nil, fmt.Sprintf("page %d: the tree is deeper than %d levels (a cycle?)", id, maxCheckDepth)
	}
	p, r := c.readPage(id, flagBranch, flagLeaf)
	if r != "" {
		return nil, r
	}
	return c.walkPage(id, p, depth, top, min, max)
}

func keyOrder(id uint64, i int, key, prev, max []byte) string {
	if prev != nil && (bytes.Compare(prev, key) > 0 || (i > 0 && bytes.Equal(prev, key))) {
		return fmt.Sprintf("page %d: key %d is out of order", id, i)
	}
	if max != nil && bytes.Compare(key, max) >= 0 {
		return fmt.Sprintf("page %d: key %d is beyond its parent's range", id, i)
	}
	return ""
}

// walkPage checks an already read page (a real one, or a bucket's inline
// page, id 0) and descends.
func (c *checker) walkPage(id uint64, p []byte, depth int, top bool, min, max []byte) ([]byte, string) {
	le := binary.LittleEndian
	if len(p) < pageHeaderSize {
		return nil, fmt.Sprintf("page %d is shorter than a page header", id)
	}
	flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
	switch flags {
	case flagBranch:
		if count == 0 {
			return nil, fmt.Sprintf("branch page %d has no elements", id)
		}
		if pageHeaderSize+count*branchElemSize > len(p) {
			return nil, fmt.Sprintf("branch page %d claims %d elements, more than it holds", id, count)
		}
		kids := make([]uint64, count)
		keys := make([][]byte, count)
		for i := 0; i < count; i++ {
			e := pageHeaderSize + i*branchElemSize
			pos, ksize := int64(le.Uint32(p[e:])), int64(le.Uint32(p[e+4:]))
			if int64(e)+pos+ksize > int64(len(p)) {
				return nil, fmt.Sprintf("branch page %d: element %d points past the page", id, i)
			}
			keys[i] = p[int64(e)+pos : int64(e)+pos+ksize]
			kids[i] = le.Uint64(p[e+8:])
		}
		running := min
		for i, k := range kids {
			if r := keyOrder(id, i, keys[i], running, max); r != "" {
				return nil, r
			}
			childMax := max
			if i < count-1 {
				childMax = keys[i+1]
			}
			sub, r := c.walk(k, depth+1, top, keys[i], childMax)
			if r != "" {
				return nil, r
			}
			running = sub
		}
		return running, ""
	case flagLeaf:
		if pageHeaderSize+count*leafElemSize > len(p) {
			return nil, fmt.Sprintf("leaf page %d claims %d elements, more than it holds", id, count)
		}
		running := min
		for i := 0; i < count; i++ {
			e := pageHeaderSize + i*leafElemSize
			fl, pos := le.Uint32(p[e:]), int64(le.Uint32(p[e+4:]))
			ksize, vsize := int64(le.Uint32(p[e+8:])), int64(le.Uint32(p[e+12:]))
			start := int64(e) + pos + ksize
			if start+vsize > int64(len(p)) || pos < 0 {
				return nil, fmt.Sprintf("leaf page %d: element %d points past the page", id, i)
			}
			key := p[int64(e)+pos : start]
			if id != 0 { // bbolt's check skips inline buckets
				if r := keyOrder(id, i, key, running, max); r != "" {
					return nil, r
				}
			}
			running = key
			if fl&leafFlagBucket == 0 {
				continue
			}
			v := p[start : start+vsize]
			if len(v) < bucketHeaderSize {
				return nil, fmt.Sprintf("leaf page %d: bucket element %d is too short", id, i)
			}
			root := le.Uint64(v)
			if root == 0 {
				if _, r := c.walkPage(0, v[bucketHeaderSize:], depth+1, false, nil, nil); r != "" {
					return nil, "inline bucket in " + r
				}
				continue
			}
			if _, r := c.walk(root, depth+1, false, nil, nil); r != "" {
				return nil, r
			}
		}
		return running, ""
	default:
		return nil, fmt.Sprintf("page %d has unexpected type flags %#x", id, flags)
	}
}
