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
//	GET  /history/media/ID/N    a question's attachment (see Attachments)
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
// # Attachments (issue 11)
//
// A question's pictures, files and voice messages show under it: pictures
// as thumbnails (the picture itself, capped in size by the stylesheet,
// loaded lazily; a click opens it), files as a row with name and size,
// voice as its transcription, and why an attachment was not used as a
// note. The bytes are served by
//
//	GET  /history/media/ENTRY/N  attachment N of history entry ENTRY (?user= for admins)
//
// only to the owner and to admins, behind the sign-in: resolve turns
// ?user= into the history the request may see, exactly as for the page,
// and the entry is looked up under that user ([Store].Entry), so an id of
// someone else's entry is the same 404 as one that does not exist. The
// file is kv.Attachment.File inside [Config].MediaDir; it must be a plain
// name and is opened through an os.Root of the directory. Raster pictures
// are served inline; everything else downloads (Content-Disposition:
// attachment, the user's file name as RFC 8187 filename*), types a
// browser could run as a document go out as application/octet-stream, and
// each response has its own CSP (default-src 'none'), nosniff and
// Cache-Control: private, no-cache with an ETag. Exports list attachments
// by reference (kind, name, size, transcription, the route's path), never
// the bytes.
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
