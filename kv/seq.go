package kv

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// seqPrefix namespaces the named counters inside the meta bucket.
const seqPrefix = "seq\x00"

// Reserve takes n consecutive numbers from the durable counter name and
// returns the first. The counter only ever grows, across restarts too, so a
// caller that reserves blocks ahead of use never hands out a number twice;
// numbers reserved but not used before a crash are simply skipped.
func (s *Store) Reserve(name string, n uint64) (first uint64, err error) {
	if name == "" || n == 0 {
		return 0, fmt.Errorf("kv: reserve: a counter name and a positive count are required")
	}
	key := append([]byte(seqPrefix), name...)
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		first = 0
		if v := b.Get(key); len(v) == 8 {
			first = binary.BigEndian.Uint64(v)
		}
		return b.Put(key, appendUint64(nil, first+n))
	})
	if err != nil {
		return 0, fmt.Errorf("kv: reserve %d from counter: %w", n, err)
	}
	return first, nil
}
