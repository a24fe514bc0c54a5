package kv

// migrate brings records written by older releases up to date. It runs in
// Open, before the committer starts.
func (s *Store) migrate() error { return nil }
