// Package wecomtest provides a fake WeCom (企业微信) API server and builders
// for encrypted callbacks, in the manner of net/http/httptest.
//
// Server speaks the documented wire format of the APIs wecom.Client uses:
// tokens expire and can be invalidated, message/send records deliveries,
// truncates content and applies the per-member rate limit the way WeCom
// does, OAuth codes are single-use and expire, and errcodes can be
// injected per path. NewCallback, VerifyURLQuery and the message builders
// produce callbacks byte-compatible with what WeCom sends, in XML and JSON.
//
// The package does not import testing, so the daemon can use it for a
// simulation mode as well as tests.
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
//   - The duplicate check compares raw request bodies; WeCom documents only
//     "同样内容（请求json）".
//   - Only the per-minute limit is enforced, not the hourly or daily ones.
package wecomtest
