//go:build !unix

package kv

import (
	"errors"
	"os"
	"time"
)

var errLocked = errors.New("locked")

// sharedLock is a no-op where flock does not exist; bbolt's own lock still
// guards the file once it is open.
func sharedLock(*os.File, time.Duration) error { return nil }
