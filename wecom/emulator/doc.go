// Package emulator is an embedded WeCom (企业微信) server for the daemon's
// simulate and demo modes and for tests: the API a self-built app calls and
// the builders of the encrypted callbacks WeCom posts to the app.
//
// Server speaks the documented wire format of the APIs wecom.Client uses
// (gettoken, message/send, message/recall, auth/getuserinfo, user/get,
// agent/get, media/get, the in-app OAuth page and the browser login page)
// on a
// net.Listener it is given or on a free loopback port. It models what
// WeCom does silently:
//
//   - access tokens expire (42001) and unknown ones are refused (40014);
//   - message/send with enable_duplicate_check=1 drops a request whose whole
//     JSON equals (after decoding: key order and whitespace do not matter)
//     one accepted within that request's duplicate_check_interval (default
//     1800 s, at most 4 h), and still answers errcode 0 with the first
//     copy's msgid;
//   - each member receives at most PerMinuteLimit (30) messages per minute
//     and PerHourLimit (1000) per hour from one app, counted in sliding
//     windows by the server's arrival clock; the excess is answered errcode
//     0 and not delivered;
//   - content past 2048 bytes is truncated;
//   - OAuth codes are single-use and expire after five minutes;
//   - media_ids (AddMedia) are shared by the corp's apps, expire after three
//     days (40007), and files over 20 MB need a Range header (830002).
//
// Sent lists what members actually received; Dropped lists what was
// answered errcode 0 but not delivered, with the reason. FailNext and
// FailHTTP inject errcodes and HTTP failures per path.
//
// NewCallback, VerifyURLQuery and the message builders produce what WeCom
// sends to the app's callback URL: encrypted, signed POST callbacks and the
// GET URL verification query.
//
// The package imports neither testing nor net/http/httptest, so it can be
// linked into the daemon. Package wecomtest wraps it for tests.
//
// # Caveats
//
//   - Members are global: every member added with AddUser belongs to every
//     corp and is in every app's visible range. Departments and tags are
//     not modelled; any toparty or totag in message/send is reported as
//     invalid.
//   - Only text and markdown messages are accepted by message/send.
//   - Truncation keeps whole UTF-8 characters (see Options.TruncateBytes);
//     what WeCom does with a character straddling the limit is not
//     documented.
//   - The duplicate window starts at the accepted copy; dropped duplicates
//     do not extend it. A request the budget drops still opens a duplicate
//     window, so resending the same JSON does not get it through. Messages
//     the budget drops do not use it up. WeCom documents none
//     of these details; the emulator picks the least forgiving reading.
//   - The daily per-app limit (账号上限数×200人次/天) is not enforced.
//   - Sent and Dropped keep every record for the life of the server.
package emulator
