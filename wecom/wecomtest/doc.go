// Package wecomtest is the test face of package emulator, in the manner of
// net/http/httptest: NewServer starts an emulated WeCom (企业微信) API
// server on a loopback port without an error to check, and the callback
// builders produce encrypted callbacks byte-compatible with what WeCom
// sends, in XML and JSON.
//
// Server, Options and SentMessage are the emulator's types; see package
// emulator for what the server models (token expiry, the duplicate check,
// the per-member budget, OAuth codes, injected failures). Import this
// package from _test.go files only; the daemon itself uses emulator.
package wecomtest
