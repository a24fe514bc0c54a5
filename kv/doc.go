// Package kv is wecom-bridge's durable state, kept in one bbolt file.
//
// It stores, per WeCom app and user:
//
//   - the dedup set of callbacks already accepted (WeCom retries a callback
//     that was not answered within 5 s, up to three times);
//   - pending jobs: questions that were acknowledged to WeCom but whose answer
//     has not been fully delivered yet, with their delivery progress, so that a
//     crash or restart neither loses nor repeats an answer;
//   - conversation state (the Dify conversation_id, or the recent turns for
//     OpenAI-compatible backends);
//   - the history shown on the history page;
//   - per-user quota counters, one-time nonces and login sessions.
//
// Writes from concurrent callers are group-committed: each caller's change
// runs inside a shared read-write transaction, so one fsync covers many
// callbacks under load while a lone caller is committed at once, with no
// batching delay. Before it commits, the committer yields to the scheduler
// until a yield brings no new request, so on a busy core every handler that
// is ready joins the group instead of waiting for the next fsync.
//
// # Layout and write volume
//
// Each commit rewrites whole 4 KB pages, so what costs is the number of
// distinct pages a commit touches, not record size. Hot records therefore
// use keys that grow at the end: history entries by id (bucket "entries",
// compact binary, see binary.go), pending jobs by id, dedup marks by the
// message's own CreateTime when the caller gives Question.MsgTime, send
// stamps by time. The per-user history index ("hist_idx") is keyed by id
// epoch first (65,536 ids each), then case-folded user id, then id, so new
// keys land in the newest epoch's few hundred leaves however many users
// ask; it is built behind the intake in batches (Options.IndexEvery), put
// in sorted chunks of 128 keys per transaction so that no batch holds up the
// acks, and History scans the short unindexed tail directly. Files of the
// previous release (JSON history keyed by user) are migrated by Open.
//
// # Memory
//
// bbolt reads through a read-only memory map, so the pages transactions
// touch stay mapped; the store unmaps them (MADV_DONTNEED on Linux) every
// second and after every 4 MB the file grows. They stay in the page cache.
// Pending jobs are not held in memory by this package.
//
// # Damaged files and write failures
//
// Open checks an existing file before bbolt maps it: both meta pages, the
// file size against the high water mark, and a walk over every page bbolt
// can reach (read with plain reads, so a damaged page is an error, not a
// fault), with key order checked as bbolt's own check wants it and the
// freelist (when the file has one) against the pages in use. bbolt then
// rebuilds its freelist by a similar walk (NoFreelistSync: the freelist is
// never written per commit). Together about 1.2 s for a 1.1 GB file with a
// warm page cache. A damaged or
// 0-byte file is refused with a *CorruptError naming the file and the way to
// recover (restore a `wecom-bridge backup`, or move the file away). Every
// transaction also runs with panics and memory faults recovered into a
// *CorruptError, so damage the check cannot see fails a call, not the
// process.
//
// A commit that fails at the storage level (ENOSPC, EIO) is rolled back as a
// whole and fails every caller in its group; Store.WriteErr reports it until
// a later commit succeeds, and Ping fails meanwhile. Options.FailWrites
// injects such failures in tests.
//
// # Caveats
//
//   - bbolt takes an exclusive file lock: only one process may open the file.
//     Open fails after Options.LockTimeout rather than hanging.
//   - Values read inside a bbolt transaction alias its memory map and are only
//     valid inside that transaction. Everything this package returns is
//     decoded (copied) before the transaction ends; no *bbolt.Tx or raw slice
//     ever leaves the package.
//   - A function passed to the group committer may be run twice (once in a
//     shared transaction that was rolled back because another caller failed,
//     then alone), so every write function here resets its results first.
package kv
