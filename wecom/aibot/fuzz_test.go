package aibot_test

import (
	"encoding/json"
	"errors"
	"net/url"
	"testing"
	"unicode/utf8"

	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
)

// FuzzParseFrame: frames come from the network; parsing must never panic,
// must fail only with the documented sentinels, and a parsed frame must
// survive a marshal/parse round trip unchanged.
func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{
		`{"cmd":"aibot_msg_callback","headers":{"req_id":"r"},"body":{"msgid":"m","msgtype":"text","text":{"content":"hi"}}}`,
		`{"headers":{"req_id":"aibot_subscribe_1"},"errcode":0,"errmsg":"ok"}`,
		`{"headers":{"req_id":"p"},"errcode":"846605"}`,
		"{\"cmd\":\"x\",\x01\"headers\":{\"req_id\":\"r\"}}",
		`{"cmd":"aibot_event_callback","headers":{"req_id":"e"},"body":{"msgid":"d","msgtype":"event","event":{"eventtype":"disconnected_event"}}}`,
		`[]`, `{}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := aibot.ParseFrame(data)
		if err != nil {
			if !errors.Is(err, wecom.ErrMalformed) && !errors.Is(err, wecom.ErrTooLarge) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if fr.Headers.ReqID == "" {
			t.Fatal("parsed frame without req_id")
		}
		if fr.Cmd == aibot.CmdMsgCallback || fr.Cmd == aibot.CmdEventCallback {
			if _, err := aibot.ParseMessage(fr.Body); err != nil && !errors.Is(err, wecom.ErrMalformed) && !errors.Is(err, wecom.ErrTooLarge) {
				t.Fatalf("undocumented body error %v", err)
			}
		}
		if !utf8.ValidString(fr.Headers.ReqID) {
			return // JSON re-encoding replaces invalid UTF-8
		}
		out, err := json.Marshal(fr)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := aibot.ParseFrame(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if back.Cmd != fr.Cmd || back.Headers != fr.Headers || back.ErrCode != fr.ErrCode {
			t.Fatalf("round trip changed %+v to %+v", fr, back)
		}
	})
}

// FuzzParseMessage: callback bodies arrive over the wire and, in webhook
// mode, from any client that knows the URL (after decryption).
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{
		`{"msgid":"m","aibotid":"a","chattype":"group","chatid":"c","from":{"userid":"u"},"msgtype":"mixed","mixed":{"msg_item":[{"msgtype":"text","text":{"content":"x"}}]},"create_time":"17"}`,
		`{"msgid":"f","msgtype":"event","event":{"eventtype":"feedback_event","feedback_event":{"id":"1","type":2,"inaccurate_reason_list":[1]}}}`,
		`{"msgid":"q","msgtype":"text","quote":{"msgtype":"image","image":{"url":"u"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := aibot.ParseMessage(data)
		if err != nil {
			if !errors.Is(err, wecom.ErrMalformed) && !errors.Is(err, wecom.ErrTooLarge) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if m.MsgID == "" || m.MsgType == "" {
			t.Fatal("parsed message without msgid or msgtype")
		}
		_ = m.Question()
		_ = m.ChatKey()
	})
}

// FuzzWebhookEnvelope: the webhook URL is public; the envelope parser and
// the verify/decrypt path must reject anything malformed without panicking.
// Seeds with valid signatures let the fuzzer reach the decryption.
func FuzzWebhookEnvelope(f *testing.F) {
	w, err := aibot.NewWebhook(whToken, whKey)
	if err != nil {
		f.Fatal(err)
	}
	body, s, err := w.Seal([]byte(`{"msgid":"m","msgtype":"text"}`), "1", "n")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body, s, "1", "n")
	f.Add([]byte(`{"Encrypt":"AAAA"}`), "", "", "")
	f.Add([]byte(`{"encrypt":"a","Encrypt":"b"}`), "x", "1", "2")
	f.Fuzz(func(t *testing.T, body []byte, signature, ts, nonce string) {
		if _, err := aibot.ParseEnvelope(body); err != nil && !errors.Is(err, wecom.ErrMalformed) && !errors.Is(err, wecom.ErrTooLarge) {
			t.Fatalf("undocumented envelope error %v", err)
		}
		q := url.Values{"msg_signature": {signature}, "timestamp": {ts}, "nonce": {nonce}}
		m, err := w.Open(q, body)
		if err != nil {
			for _, s := range []error{wecom.ErrMalformed, wecom.ErrTooLarge, wecom.ErrInvalidSignature, wecom.ErrReceiverMismatch} {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("undocumented error %v", err)
		}
		if m.MsgID == "" {
			t.Fatal("opened message without msgid")
		}
	})
}

// FuzzDecryptMedia: downloaded bytes are attacker-controlled if the URL is.
func FuzzDecryptMedia(f *testing.F) {
	key := "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlBQkNERUY="
	ct, _ := aibot.EncryptMedia([]byte("hello"), key)
	f.Add(ct, key)
	f.Add([]byte{1, 2, 3}, "short")
	f.Fuzz(func(t *testing.T, data []byte, k string) {
		plain, err := aibot.DecryptMedia(data, k)
		if err != nil {
			if !errors.Is(err, wecom.ErrMalformed) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if len(plain) >= len(data) {
			t.Fatal("plaintext not shorter than ciphertext")
		}
	})
}

// FuzzMediaFilename: the header comes from a download server; the name must
// be safe to use as a bare file name.
func FuzzMediaFilename(f *testing.F) {
	f.Add(`attachment; filename*=UTF-8''%E6%8A%A5.pdf`)
	f.Add(`attachment; filename="../x"`)
	f.Fuzz(func(t *testing.T, h string) {
		n := aibot.MediaFilename(h)
		if len(n) > 255 || n == "." || n == ".." {
			t.Fatalf("unsafe name %q", n)
		}
		for _, r := range n {
			if r == '/' || r == '\\' || r < 0x20 || r == 0x7f {
				t.Fatalf("unsafe name %q", n)
			}
		}
		if !utf8.ValidString(n) {
			t.Fatalf("invalid UTF-8 %q", n)
		}
	})
}
