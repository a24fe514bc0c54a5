package wecom_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// errorClasses are the sentinels every Decrypt/Open failure must wrap.
var errorClasses = []error{wecom.ErrInvalidSignature, wecom.ErrMalformed, wecom.ErrReceiverMismatch, wecom.ErrTooLarge}

func classified(err error) bool {
	for _, c := range errorClasses {
		if errors.Is(err, c) {
			return true
		}
	}
	return false
}

// FuzzOpen feeds arbitrary bodies to Open. When the body has a parsable
// envelope the signature is computed for it, so the fuzzer gets past the
// signature check and into base64, AES, padding and parsing. Anything Open
// accepts must survive a Seal/Open round trip unchanged.
func FuzzOpen(f *testing.F) {
	f.Add([]byte(vecA2Body), false)
	f.Add([]byte(vecCBody), false)
	f.Add([]byte(`{"encrypt":"`+vecCEncrypt+`","agentid":218}`), false)
	f.Add([]byte(vecA2Body), true)
	f.Add([]byte("<xml><Encrypt>QUFB</Encrypt></xml>"), false)
	f.Add([]byte(`<!DOCTYPE x><xml/>`), false)
	f.Add([]byte(`{"encrypt":null}`), false)
	f.Fuzz(func(t *testing.T, body []byte, useVectorSig bool) {
		c := vecCrypto(t)
		const ts, nonce = vecA2Timestamp, vecA2Nonce
		sig := vecA2Signature
		if !useVectorSig {
			if env, err := wecom.ParseEnvelope(body); err == nil {
				sig = wecom.Signature(vecToken, ts, nonce, env.Encrypt)
			}
		}
		m, err := c.Open(sig, ts, nonce, body)
		if err != nil {
			if m != nil {
				t.Fatalf("Open returned a message and an error: %v", err)
			}
			if !classified(err) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		plain, err := c.Decrypt(sig, ts, nonce, body)
		if err != nil {
			t.Fatalf("Open accepted but Decrypt failed: %v", err)
		}
		for _, format := range []wecom.Format{wecom.FormatXML, wecom.FormatJSON} {
			sealed, sig2, err := c.Seal(plain, ts, nonce, format)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			m2, err := c.Open(sig2, ts, nonce, sealed)
			if err != nil {
				t.Fatalf("re-Open after Seal(%v): %v", format, err)
			}
			if *m2 != *m && !(m.LocationX != m.LocationX || m.LocationY != m.LocationY) { // NaN != NaN
				t.Fatalf("round trip changed the message:\n%+v\n%+v", *m, *m2)
			}
		}
	})
}

// FuzzDecrypt encrypts an arbitrary plaintext layout under the vector key
// and checks Decrypt against an independent reading of that layout: it must
// accept exactly the well-formed ones and return exactly their message.
func FuzzDecrypt(f *testing.F) {
	rid := []byte(vecReceiveID)
	build := func(random string, msg []byte, rid []byte) []byte {
		b := append([]byte(random), 0, 0, 0, 0)
		binary.BigEndian.PutUint32(b[16:], uint32(len(msg)))
		b = append(b, msg...)
		b = append(b, rid...)
		pad := 32 - len(b)%32
		return append(b, bytes.Repeat([]byte{byte(pad)}, pad)...)
	}
	f.Add(build(vecA1Random, []byte(vecA1Plain), rid))
	f.Add(build(vecA2Random, []byte(vecA2Plain), rid))
	f.Add(build(vecA2Random, []byte(vecCPlain), rid))
	f.Add(build(vecA2Random, nil, rid))
	f.Add(build(vecA2Random, []byte("x"), []byte("other")))
	f.Add(bytes.Repeat([]byte{0}, 32))
	f.Add(bytes.Repeat([]byte{32}, 32))
	f.Fuzz(func(t *testing.T, layout []byte) {
		if len(layout) == 0 || len(layout) > 4096 {
			return
		}
		if r := len(layout) % 16; r != 0 {
			layout = append(layout, make([]byte, 16-r)...)
		}
		enc := rawCipher(t, layout)
		body := []byte(`{"encrypt":"` + enc + `"}`)
		sig := wecom.Signature(vecToken, "1", "2", enc)
		got, err := vecCrypto(t).Decrypt(sig, "1", "2", body)

		want, ok := referenceDecode(layout, rid)
		if !ok {
			if err == nil {
				t.Fatalf("Decrypt accepted a bad layout %x: %q", layout, got)
			}
			if !classified(err) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Decrypt rejected a good layout: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Decrypt = %q, want %q", got, want)
		}
	})
}

// referenceDecode is a straightforward second implementation of the
// plaintext checks, used as the fuzz oracle.
func referenceDecode(p, rid []byte) ([]byte, bool) {
	n := len(p)
	pad := int(p[n-1])
	if pad < 1 || pad > 32 || pad > n {
		return nil, false
	}
	for i := n - pad; i < n; i++ {
		if int(p[i]) != pad {
			return nil, false
		}
	}
	p = p[:n-pad]
	if len(p) < 20 {
		return nil, false
	}
	l := int64(binary.BigEndian.Uint32(p[16:20]))
	if l > int64(len(p)-20) {
		return nil, false
	}
	msg, tail := p[20:20+l], p[20+l:]
	if !bytes.Equal(tail, rid) {
		return nil, false
	}
	return msg, true
}

// FuzzParseMessage checks that ParseMessage never panics, classifies its
// errors, and that what it accepts is normalised and parses the same twice.
func FuzzParseMessage(f *testing.F) {
	f.Add([]byte(vecA2Plain))
	f.Add([]byte(vecCPlain))
	f.Add([]byte(`<xml><MsgType>event</MsgType><Event>CLICK</Event><EventKey>k</EventKey><ScanCodeInfo><a>b</a></ScanCodeInfo></xml>`))
	f.Add([]byte(`{"msgtype":"location","location_x":"1.5","scale":3,"x":{"y":[1]}}`))
	f.Add([]byte(`<!DOCTYPE x [<!ENTITY a "b">]><xml>&a;</xml>`))
	f.Add([]byte(`<xml><MsgType><![CDATA[te]]>xt</MsgType><MsgId> 1 </MsgId></xml>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := wecom.ParseMessage(data)
		if err != nil {
			if !classified(err) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if m.MsgType == "" || m.MsgType != strings.ToLower(m.MsgType) || m.Event != strings.ToLower(m.Event) {
			t.Fatalf("not normalised: %+v", *m)
		}
		if m.DedupKey() == "" {
			t.Fatal("empty dedup key")
		}
		m2, err := wecom.ParseMessage(data)
		if err != nil || (*m2 != *m && m.LocationX == m.LocationX && m.LocationY == m.LocationY) {
			t.Fatalf("second parse differs: %v", err)
		}
	})
}

// FuzzDispositionFilename: whatever the Content-Disposition header of a
// media/get answer says, the file name Media returns is safe to use as a
// single path element.
func FuzzDispositionFilename(f *testing.F) {
	for _, s := range []string{
		`attachment; filename="MEDIA_ID.jpg"`,
		`attachment; filename*=UTF-8''%E5%9B%BE.png`,
		`attachment; filename="../../etc/passwd"`,
		`attachment; filename="a\\b"`,
		"attachment; filename=\"\x00\"",
		`inline`, ``, `attachment; filename=".."`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, disp string) {
		name := wecom.DispositionFilename(disp)
		if name == "." || name == ".." || strings.ContainsAny(name, "/\\") {
			t.Fatalf("%q gave unsafe name %q", disp, name)
		}
		for _, r := range name {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("%q gave a control character in %q", disp, name)
			}
		}
	})
}
