package kv

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
)

func appendUint64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// pairKey joins two parts with a NUL byte, which WeCom ids never contain.
func pairKey(a, b string) []byte {
	k := make([]byte, 0, len(a)+1+len(b))
	k = append(k, a...)
	k = append(k, 0)
	return append(k, b...)
}

func idKey(id uint64) []byte { return appendUint64(make([]byte, 0, 8), id) }

// histEpochBits groups history ids into epochs of 65,536 for the per-user
// index: its keys are BE32(id>>histEpochBits) fold(user) \x00 BE64(id).
// New entries therefore land in the newest epoch's part of the tree, a
// few hundred leaves however many users ask, instead of one leaf per user
// across the whole history; a user's history is read epoch by epoch.
var histEpochBits = 16 // a variable so that tests can span many epochs cheaply

func histEpoch(id uint64) uint32 { return uint32(id >> histEpochBits) }

// histPrefix is the start of every index key of user in one epoch.
func histPrefix(epoch uint32, user string) []byte {
	k := make([]byte, 0, 4+len(user)+9)
	k = binary.BigEndian.AppendUint32(k, epoch)
	k = append(k, user...)
	return append(k, 0)
}

// histKey is the index key of entry id of user (already case-folded).
func histKey(user string, id uint64) []byte {
	return appendUint64(histPrefix(histEpoch(id), user), id)
}

func put(b interface{ Put(k, v []byte) error }, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("kv: encode: %w", err)
	}
	return b.Put(key, data)
}

func decode(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("kv: decode: %w (%w)", err, ErrCorrupt)
	}
	return nil
}

// validID reports whether an app or user id can be used in a key.
func validID(s string) bool { return s != "" && !strings.ContainsRune(s, 0) }
