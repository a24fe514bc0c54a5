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

func histKey(user string, id uint64) []byte {
	k := make([]byte, 0, len(user)+9)
	k = append(k, user...)
	k = append(k, 0)
	return appendUint64(k, id)
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
