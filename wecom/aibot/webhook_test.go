package aibot_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
)

// The official test key and token (WECOM.md §1.9), used with the bot's
// receive id "".
const (
	whToken = "QDG6eK"
	whKey   = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
)

// sealIndependently encrypts like WeCom, without the code under test.
func sealIndependently(t *testing.T, msg, receiveID string) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(whKey + "=")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.WriteString("0123456789abcdef")
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(msg)))
	buf.Write(n[:])
	buf.WriteString(msg)
	buf.WriteString(receiveID)
	pad := 32 - buf.Len()%32
	buf.Write(bytes.Repeat([]byte{byte(pad)}, pad))
	block, _ := aes.NewCipher(key)
	out := buf.Bytes()
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, out)
	return base64.StdEncoding.EncodeToString(out)
}

func openIndependently(t *testing.T, enc string) string {
	t.Helper()
	key, _ := base64.StdEncoding.DecodeString(whKey + "=")
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(key)
	cipher.NewCBCDecrypter(block, key[:16]).CryptBlocks(raw, raw)
	raw = raw[:len(raw)-int(raw[len(raw)-1])]
	l := binary.BigEndian.Uint32(raw[16:20])
	if rest := string(raw[20+l:]); rest != "" {
		t.Fatalf("reply receive id %q, want empty", rest)
	}
	return string(raw[20 : 20+l])
}

func sig(parts ...string) string {
	sort.Strings(parts)
	s := sha1.Sum([]byte(strings.Join(parts, "")))
	return hex.EncodeToString(s[:])
}

func TestWebhookOpensWeComPost(t *testing.T) {
	w, err := aibot.NewWebhook(whToken, whKey)
	if err != nil {
		t.Fatal(err)
	}
	inner := `{"msgid":"M1","aibotid":"AIB","chattype":"group","chatid":"G1","from":{"userid":"U1"},"response_url":"R","msgtype":"text","text":{"content":"@bot 你好"}}`
	enc := sealIndependently(t, inner, "")
	for _, tc := range []struct {
		name, sigKey, body string
	}{
		{"encrypt", "msg_signature", `{"encrypt":"` + enc + `"}`},
		{"Encrypt", "msgsignature", `{"Encrypt":"` + enc + `","ToUserName":"x"}`},
		{"both equal", "signature", `{"encrypt":"` + enc + `","Encrypt":"` + enc + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{tc.sigKey: {sig(whToken, "1700000000", "nonce1", enc)}, "timestamp": {"1700000000"}, "nonce": {"nonce1"}}
			m, err := w.Open(q, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if m.MsgID != "M1" || m.ChatKey() != "G1" || m.Question() != "@bot 你好" {
				t.Errorf("%+v", m)
			}
		})
	}
	q := url.Values{"msg_signature": {sig(whToken, "1", "n", enc)}, "timestamp": {"1"}, "nonce": {"n"}}
	if _, err := w.Open(url.Values{"msg_signature": {strings.Repeat("0", 40)}, "timestamp": {"1"}, "nonce": {"n"}}, []byte(`{"encrypt":"`+enc+`"}`)); !errors.Is(err, wecom.ErrInvalidSignature) {
		t.Errorf("bad signature: %v", err)
	}
	corp := sealIndependently(t, inner, "wx5823bf96d3bd56c7")
	qc := url.Values{"msg_signature": {sig(whToken, "1", "n", corp)}, "timestamp": {"1"}, "nonce": {"n"}}
	if _, err := w.Open(qc, []byte(`{"encrypt":"`+corp+`"}`)); !errors.Is(err, wecom.ErrReceiverMismatch) {
		t.Errorf("app-addressed payload: %v", err)
	}
	for _, bad := range []string{`{"encrypt":"a","Encrypt":"b"}`, `{"encrypt":5}`, `{}`, `<xml/>`, `{"encrypt":""}`, `{`} {
		if _, err := w.Open(q, []byte(bad)); !errors.Is(err, wecom.ErrMalformed) {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if _, err := aibot.ParseEnvelope(bytes.Repeat([]byte(" "), aibot.MaxEnvelopeSize+1)); !errors.Is(err, wecom.ErrTooLarge) {
		t.Errorf("huge envelope: %v", err)
	}
}

func TestWebhookVerifyURL(t *testing.T) {
	w, _ := aibot.NewWebhook(whToken, whKey)
	echo := sealIndependently(t, "1616140317555161061", "")
	q := url.Values{"msg_signature": {sig(whToken, "1409659589", "263014780", echo)}, "timestamp": {"1409659589"}, "nonce": {"263014780"}, "echostr": {echo}}
	got, err := w.VerifyURL(q)
	if err != nil || string(got) != "1616140317555161061" {
		t.Fatalf("%q %v", got, err)
	}
	q.Set("nonce", "other")
	if _, err := w.VerifyURL(q); !errors.Is(err, wecom.ErrInvalidSignature) {
		t.Errorf("tampered: %v", err)
	}
}

func TestWebhookStreamReply(t *testing.T) {
	w, _ := aibot.NewWebhook(whToken, whKey)
	out, err := w.StreamReply("STREAM1", "**答案**", true, "fb", "1700000005", "n5")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Encrypt, MsgSignature, TimeStamp, Nonce string
	}
	var fields map[string]string
	if err := json.Unmarshal(out, &fields); err != nil {
		t.Fatal(err)
	}
	r.Encrypt, r.MsgSignature, r.TimeStamp, r.Nonce = fields["encrypt"], fields["msgsignature"], fields["timestamp"], fields["nonce"]
	if len(fields) != 4 || r.TimeStamp != "1700000005" || r.Nonce != "n5" {
		t.Fatalf("reply keys %v", fields)
	}
	if r.MsgSignature != sig(whToken, r.TimeStamp, r.Nonce, r.Encrypt) {
		t.Error("reply signature does not verify independently")
	}
	plain := openIndependently(t, r.Encrypt)
	if plain != `{"msgtype":"stream","stream":{"id":"STREAM1","finish":true,"content":"**答案**","feedback":{"id":"fb"}}}` {
		t.Errorf("reply plaintext %s", plain)
	}
	back, err := w.OpenReply(out)
	if err != nil || string(back) != plain {
		t.Errorf("OpenReply %q %v", back, err)
	}
	if _, err := w.StreamReply("S", strings.Repeat("x", aibot.MaxContentBytes+1), false, "", "1", "n"); !errors.Is(err, aibot.ErrContentTooLarge) {
		t.Errorf("big reply: %v", err)
	}
	body, s, err := w.Seal([]byte(`{"msgid":"m","msgtype":"text"}`), "1", "n")
	if err != nil {
		t.Fatal(err)
	}
	m, err := w.Open(url.Values{"msg_signature": {s}, "timestamp": {"1"}, "nonce": {"n"}}, body)
	if err != nil || m.MsgID != "m" {
		t.Errorf("Seal round trip %+v %v", m, err)
	}
}

func TestNewWebhookRejectsBadKey(t *testing.T) {
	if _, err := aibot.NewWebhook(whToken, "short"); !errors.Is(err, wecom.ErrInvalidKey) {
		t.Errorf("%v", err)
	}
	if _, err := aibot.NewWebhook("", whKey); !errors.Is(err, wecom.ErrInvalidConfig) {
		t.Errorf("%v", err)
	}
}
