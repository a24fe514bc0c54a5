// Package bridge is the wecom-bridge daemon: it wires the wecom, llm and kv
// packages together and serves WeCom callbacks over fasthttp.
//
// The flow of one question:
//
//  1. WeCom POSTs an encrypted callback to /wecom/<app>. The handler verifies
//     and decrypts it, then, in one group-committed bbolt transaction, dedups
//     it and records it as a pending job. Only then does it answer 200 with an
//     empty body. It never waits on the LLM or on WeCom.
//  2. The job goes to the worker pool. Jobs of one (app, user) run strictly
//     one at a time and in order; different users run in parallel, bounded by
//     [workers] count.
//  3. The worker streams the answer from the app's backend and delivers it
//     with message/send as it arrives: a piece per few paragraphs, each at
//     most 2048 bytes, cut at natural boundaries, within WeCom's per-member
//     budget of 30 messages a minute.
//  4. Delivery progress is saved before and after every send, so a restart
//     resumes each pending job exactly where it stopped; the job is removed
//     only when WeCom has acknowledged its last piece.
//
// # Caveats
//
//   - fasthttp reuses a RequestCtx and its buffers after the handler returns.
//     Handlers here finish all work on the request (decrypting, which copies
//     into new strings) before returning and never keep references to it, and
//     *fasthttp.RequestCtx is never used as the context of background work:
//     jobs derive from the bridge's own root context.
//   - A piece that was sent but whose acknowledgement was lost in a crash is
//     sent again after the restart. Answer pieces are sent with WeCom's
//     enable_duplicate_check, so WeCom drops that second copy if it comes
//     within [wecom] duplicate_check_interval.
package bridge
