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
// batching delay.
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
