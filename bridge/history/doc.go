// Package history is the employee history page (issue 5): employees sign in
// with WeCom and read their own questions and answers; admins may read
// anyone's. Everything lives under {public_url}/history:
//
//	GET  /history               the page (?q= search, ?before= cursor, ?user= for admins)
//	GET  /history/login         start a WeCom sign-in (in-app OAuth or QR login)
//	GET  /history/callback      WeCom redirects back here with code and state
//	POST /history/logout        end the session (form with a CSRF token)
//	GET  /history/signed-out    the page shown after logging out
//	GET  /history/export.md     the whole history as Markdown (oldest first)
//	GET  /history/export.json   the same as JSON
//	GET  /history/static/...    embedded CSS and JS, cacheable forever
//
// The daemon sees paths without the path of public_url (a reverse proxy that
// serves it under https://host/prefix strips the prefix), but links and
// redirects it sends to browsers carry it. Both forms are accepted.
//
// The package does not know the daemon: it reads and writes its state
// through the small [Store] interface (*kv.Store satisfies it) and asks
// [Deps].LoginClient for the login app's WeCom client on every sign-in,
// because the daemon swaps its clients on a config reload. The daemon
// builds a [Handler] with [New], passes each new config to
// [Handler.Reload], and sends every request for which [Handler.Handles] is
// true to [Handler.Serve].
//
// # Attachments (issue 11, not built yet)
//
// Pictures, files and voice of a question will show on the page only to
// their owner and admins. The access rule already lives in one place:
// resolve authenticates the request and turns ?user= into the history it
// may see (its own, or anyone's for an admin), answering the sign-in
// redirect, 400 or 403 itself. A file route (/history/file/ENTRY/N) calls
// resolve, then looks the entry up under that user (kv's Entry(user, id),
// added to Store then), so an id of someone else's entry is a 404, and
// serves the bytes through a reader the daemon passes in Deps; thumbnails,
// names, sizes and transcriptions go into entryView. Such responses keep
// the security headers, no-store, and Content-Disposition: attachment for
// anything that is not an image.
//
// # Caveats
//
//   - WeCom userids are case-insensitive; the page folds ASCII letters of a
//     requested userid (?user=BOB) to lower case, the form WeCom sends, before
//     it looks anything up or compares.
//   - Every response of the page carries the security headers (CSP, nosniff,
//     no-referrer, framing limits, and HSTS when public_url is https),
//     including static files, redirects and errors.
package history
