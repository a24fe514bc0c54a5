package wecom_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/wecom-bridge/wecom-bridge/wecom"
)

func vecCrypto(t testing.TB, opts ...wecom.CryptoOption) *wecom.Crypto {
	t.Helper()
	c, err := wecom.NewCrypto(vecToken, vecAESKey, vecReceiveID, opts...)
	if err != nil {
		t.Fatalf("NewCrypto: %v", err)
	}
	return c
}

func TestSignatureVectors(t *testing.T) {
	tests := []struct {
		name, ts, nonce, enc, want string
	}{
		{"A1", vecA1Timestamp, vecA1Nonce, vecA1Echostr, vecA1Signature},
		{"A2", vecA2Timestamp, vecA2Nonce, vecA2Encrypt, vecA2Signature},
		{"C", vecCTimestamp, vecCNonce, vecCEncrypt, vecCSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wecom.Signature(vecToken, tt.ts, tt.nonce, tt.enc); got != tt.want {
				t.Errorf("Signature = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestVerifyURLVectorA1(t *testing.T) {
	// Go through the raw query as a handler would, so the percent-decoding
	// of '/', '+' and '=' is covered too.
	q, err := url.ParseQuery(vecA1RawQuery)
	if err != nil {
		t.Fatal(err)
	}
	c := vecCrypto(t)
	got, err := c.VerifyURL(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), q.Get("echostr"))
	if err != nil {
		t.Fatalf("VerifyURL: %v", err)
	}
	if string(got) != vecA1Plain {
		t.Errorf("VerifyURL = %q, want %q", got, vecA1Plain)
	}
}

func TestDecryptVectorA2(t *testing.T) {
	c := vecCrypto(t)
	got, err := c.Decrypt(vecA2Signature, vecA2Timestamp, vecA2Nonce, []byte(vecA2Body))
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if len(got) != 284 || string(got) != vecA2Plain {
		t.Errorf("Decrypt = %d bytes %q, want 284 bytes %q", len(got), got, vecA2Plain)
	}
}

func TestOpenVectors(t *testing.T) {
	tests := []struct {
		name, sig, ts, nonce, body string
	}{
		{"A2 xml", vecA2Signature, vecA2Timestamp, vecA2Nonce, vecA2Body},
		{"C json", vecCSignature, vecCTimestamp, vecCNonce, vecCBody},
		{"C json numeric agentid", vecCSignature, vecCTimestamp, vecCNonce,
			`{"tousername":"wx5823bf96d3bd56c7","encrypt":"` + vecCEncrypt + `","agentid":218}`},
	}
	want := wecom.Message{
		ToUserName: vecReceiveID, FromUserName: "mycreate", CreateTime: 1409659813,
		MsgType: "text", Content: "hello", MsgID: 4561255354251345929, AgentID: 218,
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := vecCrypto(t).Open(tt.sig, tt.ts, tt.nonce, []byte(tt.body))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if *m != want {
				t.Errorf("Open = %+v, want %+v", *m, want)
			}
			if k := m.DedupKey(); k != "m:4561255354251345929" {
				t.Errorf("DedupKey = %q", k)
			}
		})
	}
}

func TestDecryptVectorC(t *testing.T) {
	got, err := vecCrypto(t).Decrypt(vecCSignature, vecCTimestamp, vecCNonce, []byte(vecCBody))
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if string(got) != vecCPlain {
		t.Errorf("Decrypt = %q, want %q", got, vecCPlain)
	}
}

// TestEncryptReproducesVectors re-encrypts the official plaintexts with the
// random prefixes recovered from them and expects the official ciphertexts
// byte for byte.
func TestEncryptReproducesVectors(t *testing.T) {
	tests := []struct {
		name, random, plain, want string
	}{
		{"A1", vecA1Random, vecA1Plain, vecA1Echostr},
		{"A2", vecA2Random, vecA2Plain, vecA2Encrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := vecCrypto(t, wecom.WithRand(strings.NewReader(tt.random)))
			got, err := c.Encrypt([]byte(tt.plain))
			if err != nil {
				t.Fatalf("Encrypt: %v", err)
			}
			if got != tt.want {
				t.Errorf("Encrypt =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestSealReproducesVectorA2(t *testing.T) {
	c := vecCrypto(t, wecom.WithRand(strings.NewReader(vecA2Random)))
	body, sig, err := c.Seal([]byte(vecA2Plain), vecA2Timestamp, vecA2Nonce, wecom.FormatXML)
	if err != nil {
		t.Fatal(err)
	}
	if sig != vecA2Signature {
		t.Errorf("signature = %s, want %s", sig, vecA2Signature)
	}
	env, err := wecom.ParseEnvelope(body)
	if err != nil {
		t.Fatal(err)
	}
	if env.Encrypt != vecA2Encrypt || env.ToUserName != vecReceiveID {
		t.Errorf("envelope = %+v", env)
	}
}

func TestSealRoundTrip(t *testing.T) {
	plain := []byte(`<xml><ToUserName><![CDATA[mycreate]]></ToUserName><FromUserName><![CDATA[wx5823bf96d3bd56c7]]></FromUserName><CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[this is a test]]></Content><MsgId>1234567890123456</MsgId><AgentID>128</AgentID></xml>`)
	c := vecCrypto(t)
	for _, f := range []wecom.Format{wecom.FormatXML, wecom.FormatJSON} {
		t.Run(f.String(), func(t *testing.T) {
			body, sig, err := c.Seal(plain, "1409659813", "1372623149", f)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Decrypt(sig, "1409659813", "1372623149", body)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(got, plain) {
				t.Errorf("round trip = %q", got)
			}
		})
	}
}

func TestSealReply(t *testing.T) {
	c := vecCrypto(t)
	plain := []byte("<xml><Content><![CDATA[hi]]></Content></xml>")
	for _, f := range []wecom.Format{wecom.FormatXML, wecom.FormatJSON} {
		t.Run(f.String(), func(t *testing.T) {
			body, err := c.SealReply(plain, "1409659813", "1372623149", f)
			if err != nil {
				t.Fatal(err)
			}
			var enc, sig, ts, nonce string
			switch f {
			case wecom.FormatXML:
				for _, name := range []string{"Encrypt", "MsgSignature", "TimeStamp", "Nonce"} {
					if !bytes.Contains(body, []byte("<"+name+">")) {
						t.Errorf("reply lacks <%s>: %s", name, body)
					}
				}
				enc = between(string(body), "<Encrypt><![CDATA[", "]]>")
				sig = between(string(body), "<MsgSignature><![CDATA[", "]]>")
				ts = between(string(body), "<TimeStamp>", "</TimeStamp>")
				nonce = between(string(body), "<Nonce><![CDATA[", "]]>")
			case wecom.FormatJSON:
				enc = between(string(body), `"encrypt":"`, `"`)
				sig = between(string(body), `"msgsignature":"`, `"`)
				ts = between(string(body), `"timestamp":"`, `"`)
				nonce = between(string(body), `"nonce":"`, `"`)
			}
			if ts != "1409659813" || nonce != "1372623149" {
				t.Errorf("timestamp/nonce = %q/%q", ts, nonce)
			}
			if want := wecom.Signature(vecToken, ts, nonce, enc); sig != want {
				t.Errorf("msgsignature = %q, want %q", sig, want)
			}
			got, err := c.VerifyURL(sig, ts, nonce, enc)
			if err != nil || !bytes.Equal(got, plain) {
				t.Errorf("decrypting the reply = %q, %v", got, err)
			}
		})
	}
}

func between(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	s = s[i+len(start):]
	j := strings.Index(s, end)
	if j < 0 {
		return ""
	}
	return s[:j]
}

func TestNewCryptoKeyValidation(t *testing.T) {
	tests := []struct {
		name, token, key string
		want             error
	}{
		{"ok official key with trailing bits", vecToken, vecAESKey, nil},
		{"empty token", "", vecAESKey, wecom.ErrInvalidConfig},
		{"short key", vecToken, vecAESKey[:42], wecom.ErrInvalidKey},
		{"long key", vecToken, vecAESKey + "A", wecom.ErrInvalidKey},
		{"not base64", vecToken, strings.Repeat("!", 43), wecom.ErrInvalidKey},
		{"padding inside", vecToken, "=" + vecAESKey[1:], wecom.ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wecom.NewCrypto(tt.token, tt.key, vecReceiveID)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("NewCrypto err = %v, want %v", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), tt.key) {
				t.Errorf("error leaks the key: %v", err)
			}
		})
	}
}

// rawCipher builds ciphertexts with arbitrary (possibly invalid) plaintext
// layouts under the vector key, to exercise every check in Decrypt.
func rawCipher(t *testing.T, plain []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(vecAESKey + "=")
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain)%aes.BlockSize != 0 {
		t.Fatalf("rawCipher needs whole blocks, got %d bytes", len(plain))
	}
	out := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, plain)
	return base64.StdEncoding.EncodeToString(out)
}

// layout builds random||len||msg||rid and pads it to a multiple of 32 with
// the given pad byte count and value function.
func layout(msgLen uint32, msg, rid string, pad int, padByte func(i int) byte) []byte {
	b := make([]byte, 16, 64)
	copy(b, "0123456789abcdef")
	b = binary.BigEndian.AppendUint32(b, msgLen)
	b = append(b, msg...)
	b = append(b, rid...)
	for i := range pad {
		b = append(b, padByte(i))
	}
	return b
}

func padTo32(n int) int { return 32 - n%32 }

func TestDecryptMalformed(t *testing.T) {
	c := vecCrypto(t)
	const ts, nonce = "1409659813", "1372623149"
	same := func(p int) func(int) byte { return func(int) byte { return byte(p) } }

	good := func(msg string) []byte {
		n := 20 + len(msg) + len(vecReceiveID)
		return layout(uint32(len(msg)), msg, vecReceiveID, padTo32(n), same(padTo32(n)))
	}
	// Sanity: the helper builds something Decrypt accepts.
	okPlain := good("hello")

	// 32 bytes of plaintext whose last byte is p, all bytes equal to p.
	allPad := func(p byte) []byte { return bytes.Repeat([]byte{p}, 32) }

	nonUniform := good("hello")
	nonUniform[len(nonUniform)-2] ^= 0xff

	tests := []struct {
		name    string
		encrypt string // used for the envelope; signature is made to match
		body    string // if set, used verbatim instead of an envelope
		sig     string // if set, overrides the computed signature
		want    error
	}{
		{name: "valid control", encrypt: rawCipher(t, okPlain), want: nil},
		{name: "bad signature", encrypt: rawCipher(t, okPlain), sig: strings.Repeat("0", 40), want: wecom.ErrInvalidSignature},
		{name: "short signature", encrypt: rawCipher(t, okPlain), sig: "abc", want: wecom.ErrInvalidSignature},
		{name: "uppercase signature", encrypt: vecA2Encrypt, sig: strings.ToUpper(vecA2Signature), want: wecom.ErrInvalidSignature},
		{name: "bad base64", encrypt: "!!!!not*base64", want: wecom.ErrMalformed},
		{name: "base64 missing padding", encrypt: strings.TrimRight(vecA2Encrypt, "="), want: wecom.ErrMalformed},
		{name: "not a multiple of 16", encrypt: base64.StdEncoding.EncodeToString(make([]byte, 17)), want: wecom.ErrMalformed},
		{name: "one byte", encrypt: base64.StdEncoding.EncodeToString([]byte{1}), want: wecom.ErrMalformed},
		{name: "pad zero", encrypt: rawCipher(t, allPad(0)), want: wecom.ErrMalformed},
		{name: "pad 33", encrypt: rawCipher(t, allPad(33)), want: wecom.ErrMalformed},
		{name: "pad 255", encrypt: rawCipher(t, allPad(255)), want: wecom.ErrMalformed},
		{name: "pad longer than ciphertext", encrypt: rawCipher(t, bytes.Repeat([]byte{32}, 16)), want: wecom.ErrMalformed},
		{name: "pad not uniform", encrypt: rawCipher(t, nonUniform), want: wecom.ErrMalformed},
		{name: "plaintext shorter than header", encrypt: rawCipher(t, append(make([]byte, 19), bytes.Repeat([]byte{13}, 13)...)), want: wecom.ErrMalformed},
		{name: "msg_len past buffer", encrypt: rawCipher(t, layout(1000, "hello", vecReceiveID, padTo32(43), same(padTo32(43)))), want: wecom.ErrMalformed},
		{name: "msg_len max uint32", encrypt: rawCipher(t, layout(0xffffffff, "hello", vecReceiveID, padTo32(43), same(padTo32(43)))), want: wecom.ErrMalformed},
		{name: "receiveid mismatch", encrypt: rawCipher(t, layout(5, "hello", "wx0000000000000000", padTo32(43), same(padTo32(43)))), want: wecom.ErrReceiverMismatch},
		{name: "receiveid empty", encrypt: rawCipher(t, layout(5, "hello", "", padTo32(25), same(padTo32(25)))), want: wecom.ErrReceiverMismatch},
		{name: "receiveid prefix only", encrypt: rawCipher(t, layout(5, "hello", vecReceiveID[:10], padTo32(35), same(padTo32(35)))), want: wecom.ErrReceiverMismatch},
		{name: "oversized body", body: "<xml><Encrypt>" + strings.Repeat("A", 70000) + "</Encrypt></xml>", want: wecom.ErrTooLarge},
		{name: "empty body", body: "", want: wecom.ErrMalformed},
		{name: "whitespace body", body: " \n\t", want: wecom.ErrMalformed},
		{name: "not xml or json", body: "encrypt=abc", want: wecom.ErrMalformed},
		{name: "xml without Encrypt", body: "<xml><ToUserName>x</ToUserName></xml>", want: wecom.ErrMalformed},
		{name: "xml empty Encrypt", body: "<xml><Encrypt></Encrypt></xml>", want: wecom.ErrMalformed},
		{name: "xml two Encrypt", body: "<xml><Encrypt>QUFB</Encrypt><Encrypt>QkJC</Encrypt></xml>", want: wecom.ErrMalformed},
		{name: "xml doctype", body: `<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x "QUFB">]><xml><Encrypt>&x;</Encrypt></xml>`, want: wecom.ErrMalformed},
		{name: "xml undeclared entity", body: `<xml><Encrypt>&x;</Encrypt></xml>`, want: wecom.ErrMalformed},
		{name: "xml external entity", body: `<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><Encrypt>&x;</Encrypt></xml>`, want: wecom.ErrMalformed},
		{name: "xml deep nesting", body: "<xml>" + strings.Repeat("<a>", 1000) + strings.Repeat("</a>", 1000) + "<Encrypt>QUFB</Encrypt></xml>", want: wecom.ErrMalformed},
		{name: "xml unclosed", body: "<xml><Encrypt>QUFB</Encrypt>", want: wecom.ErrMalformed},
		{name: "xml mismatched tags", body: "<xml><Encrypt>QUFB</Nope></xml>", want: wecom.ErrMalformed},
		{name: "xml two roots", body: "<xml><Encrypt>QUFB</Encrypt></xml><xml><Encrypt>QkJC</Encrypt></xml>", want: wecom.ErrMalformed},
		{name: "xml trailing text", body: "<xml><Encrypt>QUFB</Encrypt></xml>junk", want: wecom.ErrMalformed},
		{name: "json without encrypt", body: `{"tousername":"x","agentid":1}`, want: wecom.ErrMalformed},
		{name: "json encrypt not string", body: `{"encrypt":{"a":1}}`, want: wecom.ErrMalformed},
		{name: "json agentid bool", body: `{"encrypt":"QUFB","agentid":true}`, want: wecom.ErrMalformed},
		{name: "json truncated", body: `{"encrypt":"QUFB"`, want: wecom.ErrMalformed},
		{name: "json trailing garbage", body: `{"encrypt":"QUFB"} {}`, want: wecom.ErrMalformed},
		{name: "json array", body: `["QUFB"]`, want: wecom.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body
			enc := tt.encrypt
			if body == "" && enc != "" {
				body = "<xml><ToUserName><![CDATA[" + vecReceiveID + "]]></ToUserName><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>"
			}
			if enc == "" {
				enc = between(body, "<Encrypt>", "</Encrypt>")
			}
			sig := tt.sig
			if sig == "" {
				sig = wecom.Signature(vecToken, ts, nonce, enc)
			}
			got, err := c.Decrypt(sig, ts, nonce, []byte(body))
			if tt.want == nil {
				if err != nil || string(got) != "hello" {
					t.Fatalf("Decrypt = %q, %v; want hello", got, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decrypt err = %v, want %v", err, tt.want)
			}
			if got != nil {
				t.Errorf("Decrypt returned data with an error: %q", got)
			}
		})
	}
}

func TestVerifyURLRejects(t *testing.T) {
	c := vecCrypto(t, wecom.WithMaxBodySize(100))
	tests := []struct {
		name, sig, echostr string
		want               error
	}{
		{"wrong signature", vecA2Signature, vecA1Echostr, wecom.ErrInvalidSignature},
		{"empty", wecom.Signature(vecToken, vecA1Timestamp, vecA1Nonce, ""), "", wecom.ErrMalformed},
		{"plus decoded as space", vecA1Signature, strings.ReplaceAll(vecA1Echostr, "+", " "), wecom.ErrInvalidSignature},
		{"too large", vecA1Signature, strings.Repeat("A", 101), wecom.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.VerifyURL(tt.sig, vecA1Timestamp, vecA1Nonce, tt.echostr)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecryptResultDoesNotAliasReceiveID(t *testing.T) {
	c := vecCrypto(t)
	got, err := c.Decrypt(vecA2Signature, vecA2Timestamp, vecA2Nonce, []byte(vecA2Body))
	if err != nil {
		t.Fatal(err)
	}
	if cap(got) != len(got) {
		t.Errorf("cap %d > len %d: appending would overwrite adjacent data", cap(got), len(got))
	}
}

func TestFormatString(t *testing.T) {
	if wecom.FormatXML.String() != "xml" || wecom.FormatJSON.String() != "json" || wecom.Format(7).String() != "Format(7)" {
		t.Error("Format.String mismatch")
	}
	if _, _, err := vecCrypto(t).Seal([]byte("x"), "1", "2", wecom.Format(7)); !errors.Is(err, wecom.ErrInvalidConfig) {
		t.Errorf("Seal with unknown format: %v", err)
	}
}

func TestParseEnvelope(t *testing.T) {
	tests := []struct {
		name, body      string
		agentID, toUser string
		want            error
	}{
		{"xml", vecA2Body, "218", vecReceiveID, nil},
		{"json string agentid", vecCBody, "218", vecReceiveID, nil},
		{"json numeric agentid", `{"tousername":"a","encrypt":"QUFB","agentid":218}`, "218", "a", nil},
		{"json capitalised keys", `{"ToUserName":"a","Encrypt":"QUFB","AgentID":"7"}`, "7", "a", nil},
		{"json null agentid", `{"encrypt":"QUFB","agentid":null}`, "", "", nil},
		{"leading whitespace", "\n\t " + vecA2Body, "218", vecReceiveID, nil},
		{"too large", `{"encrypt":"` + strings.Repeat("A", wecom.DefaultMaxBodySize) + `"}`, "", "", wecom.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := wecom.ParseEnvelope([]byte(tt.body))
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err == nil && (env.AgentID != tt.agentID || env.ToUserName != tt.toUser || env.Encrypt == "") {
				t.Errorf("envelope = %+v", env)
			}
		})
	}
}

func TestEnvelopeMarshalEscapesCDATA(t *testing.T) {
	env := wecom.Envelope{ToUserName: "a]]>b", Encrypt: "QUFB", AgentID: "1"}
	body, err := env.Marshal(wecom.FormatXML)
	if err != nil {
		t.Fatal(err)
	}
	got, err := wecom.ParseEnvelope(body)
	if err != nil || *got != env {
		t.Fatalf("round trip = %+v, %v (%s)", got, err, body)
	}
}
