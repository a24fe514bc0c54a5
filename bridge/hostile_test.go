package bridge

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

// sealRaw encrypts a WeCom plaintext (16 random bytes, the message length,
// the message, the receive id) exactly as given plus pad, without the
// checks Encrypt makes, so malformed plaintexts can be built.
func sealRaw(t *testing.T, msg []byte, msgLen uint32, receiveID string, pad []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(testAESKey + "=")
	if err != nil {
		t.Fatal(err)
	}
	var plain []byte
	plain = append(plain, []byte("0123456789abcdef")...)
	plain = binary.BigEndian.AppendUint32(plain, msgLen)
	plain = append(plain, msg...)
	plain = append(plain, receiveID...)
	plain = append(plain, pad...)
	if len(plain)%aes.BlockSize != 0 {
		t.Fatalf("plaintext of %d bytes is not whole blocks", len(plain))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, key[:aes.BlockSize]).CryptBlocks(out, plain)
	return base64.StdEncoding.EncodeToString(out)
}

// pkcs7 returns WeCom's padding (32-byte blocks) for n bytes of plaintext.
func pkcs7(n int) []byte {
	p := 32 - n%32
	return bytes.Repeat([]byte{byte(p)}, p)
}

// signed wraps a ciphertext in an envelope with a valid signature for the
// given timestamp: it passes the signature check, whatever is inside.
func signed(encrypt string, ts time.Time) *wecomtest.Callback {
	return signedBody(encrypt, ts, nil)
}

func signedBody(encrypt string, ts time.Time, body []byte) *wecomtest.Callback {
	stamp := strconv.FormatInt(ts.Unix(), 10)
	nonce := "1372623149"
	if body == nil {
		body, _ = wecom.Envelope{ToUserName: testCorp, Encrypt: encrypt, AgentID: "1000002"}.Marshal(wecom.FormatXML)
	}
	return &wecomtest.Callback{
		Query: url.Values{"msg_signature": {wecom.Signature(testToken, stamp, nonce, encrypt)}, "timestamp": {stamp}, "nonce": {nonce}},
		Body:  body,
	}
}

// sealInner encrypts a decrypted message (any bytes) validly.
func sealInner(t *testing.T, inner []byte) string {
	t.Helper()
	n := len(inner) + 20 + len(testCorp)
	return sealRaw(t, inner, uint32(len(inner)), testCorp, pkcs7(n))
}

// postOversized announces a callback body of n bytes and returns the
// status the daemon answers before any of it is sent. (Sending the body
// races with the server closing the connection after its 413: the client
// may see a reset instead of the answer.)
func postOversized(t *testing.T, base string, cb *wecomtest.Callback, n int) int {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	path := strings.TrimPrefix(cb.Target(base+"/wecom/helpdesk"), base)
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n", path, n); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("oversized body: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// badPad is a signed callback whose plaintext padding (at least two bytes,
// valid before spoil changes it) is spoiled.
func badPad(t *testing.T, spoil func(pad []byte)) *wecomtest.Callback {
	t.Helper()
	now := time.Now()
	for n := 1; ; n++ {
		msg := wecomtest.TextMessageXML(testCorp, "zhangsan", strings.Repeat("x", n), 98, 1000002, now)
		pad := pkcs7(len(msg) + 20 + len(testCorp))
		if len(pad) < 2 {
			continue
		}
		spoil(pad)
		return signed(sealRaw(t, msg, uint32(len(msg)), testCorp, pad), now)
	}
}

// Forged and malformed callbacks are each refused with the right status
// and one log line, and leave nothing behind: no pending job, no history,
// no dedup mark. The daemon goes on answering afterwards.
func TestHostileCallbacks(t *testing.T) {
	h := newHarness(t, "")
	now := time.Now()
	text := func(content string) []byte {
		return wecomtest.TextMessageXML(testCorp, "zhangsan", content, 99, 1000002, now)
	}
	good := h.callback("helpdesk", "zhangsan", "正常的问题")
	with := func(mod func(q url.Values)) *wecomtest.Callback {
		c := *good
		c.Query = cloneQuery(good.Query)
		mod(c.Query)
		return &c
	}
	deep := func(n int) string { return strings.Repeat("<a>", n) + strings.Repeat("</a>", n) }
	billion := `<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>`

	cases := []struct {
		name string
		cb   *wecomtest.Callback
		want int
	}{
		{"bad signature", with(func(q url.Values) { q.Set("msg_signature", strings.Repeat("0", 40)) }), 403},
		{"no signature", with(func(q url.Values) { q.Del("msg_signature") }), 403},
		{"signature of another nonce", with(func(q url.Values) { q.Set("nonce", "1111111111") }), 403},
		{"replayed old callback (signed 25 h ago)", signed(sealInner(t, text("旧的")), now.Add(-25*time.Hour)), 403},
		{"timestamp from the future", signed(sealInner(t, text("未来的")), now.Add(2*time.Hour)), 403},
		{"timestamp not a number", with(func(q url.Values) { q.Set("timestamp", "yesterday") }), 403},
		{"wrong receiveid", signed(sealRaw(t, text("x"), uint32(len(text("x"))), "wxOtherCorp", pkcs7(len(text("x"))+20+len("wxOtherCorp"))), now), 403},
		{"another app's agent id", signed(sealInner(t, wecomtest.TextMessageXML(testCorp, "zhangsan", "x", 99, 1000003, now)), now), 403},
		{"truncated ciphertext", signed(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 20)), now), 400},
		{"ciphertext cut to half", signed(sealInner(t, text("x"))[:44], now), 400},
		{"ciphertext not base64", signed("!!not*base64!!", now), 400},
		{"empty ciphertext", signed("", now), 400},
		{"padding byte zero", badPad(t, func(p []byte) { p[len(p)-1] = 0 }), 400},
		{"padding byte over 32", badPad(t, func(p []byte) { p[len(p)-1] = 33 }), 400},
		{"padding bytes not uniform", badPad(t, func(p []byte) { p[0] ^= 0x40 }), 400},
		{"message length past the end", signed(sealRaw(t, text("x"), 1<<20, testCorp, pkcs7(len(text("x"))+20+len(testCorp))), now), 400},
		{"invalid UTF-8 in CDATA", signed(sealInner(t, text("坏\xff\xfe字节")), now), 400},
		{"invalid UTF-8 in element text", signed(sealInner(t, []byte(fmt.Sprintf("<xml><ToUserName>%s</ToUserName><FromUserName>zhang\xffsan</FromUserName><CreateTime>%d</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>5</MsgId><AgentID>1000002</AgentID></xml>", testCorp, now.Unix()))), now), 400},
		{"entities in the message (billion laughs)", signed(sealInner(t, []byte(billion+fmt.Sprintf("<xml><ToUserName>%s</ToUserName><FromUserName>zhangsan</FromUserName><CreateTime>%d</CreateTime><MsgType>text</MsgType><Content>&c;</Content><MsgId>6</MsgId><AgentID>1000002</AgentID></xml>", testCorp, now.Unix()))), now), 400},
		{"NUL in FromUserName (never storable: 4xx, not a retry)", signed(sealInner(t, wecomtest.TextMessageXML(testCorp, "zhang\x00san", "x", 7, 1000002, now)), now), 400},
		{"33 KB FromUserName", signed(sealInner(t, wecomtest.TextMessageXML(testCorp, strings.Repeat("z", 33<<10), "x", 8, 1000002, now)), now), 400},
		{"entities in the envelope", signedBody("x", now, []byte(billion+"<xml><ToUserName>&c;</ToUserName><Encrypt>x</Encrypt></xml>")), 400},
		{"deep nesting in the message", signed(sealInner(t, []byte("<xml>"+deep(4000)+"</xml>")), now), 400},
		{"deep nesting in the envelope", signedBody("x", now, []byte("<xml><Encrypt>x</Encrypt>"+deep(4000)+"</xml>")), 400},
		{"not XML", func() *wecomtest.Callback { c := *good; c.Body = []byte("hello"); return &c }(), 400},
		{"empty body", func() *wecomtest.Callback { c := *good; c.Body = nil; return &c }(), 400},
		{"two envelopes", func() *wecomtest.Callback {
			c := *good
			c.Body = append(append([]byte{}, good.Body...), good.Body...)
			return &c
		}(), 400},
	}
	// A body over the limit, announced by Content-Length: refused before
	// it is read.
	before := h.logBuf.String()
	if st := postOversized(t, h.base, good, 70<<10); st != 413 {
		t.Errorf("huge body: status %d, want 413", st)
	}
	if n := strings.Count(strings.TrimPrefix(h.logBuf.String(), before), `msg="bad request"`); n != 1 {
		t.Errorf("huge body: logged %d times, want once", n)
	}
	for _, c := range cases {
		before := h.logBuf.String()
		if st := h.postCallback("helpdesk", c.cb); st != c.want {
			t.Errorf("%s: status %d, want %d", c.name, st, c.want)
		}
		logged := strings.TrimPrefix(h.logBuf.String(), before)
		if n := strings.Count(logged, `msg="rejected callback"`) + strings.Count(logged, `msg="bad request"`); n != 1 {
			t.Errorf("%s: logged %d times, want once:\n%s", c.name, n, logged)
		}
	}
	st, err := h.store.Stats()
	if err != nil || st.PendingJobs != 0 || st.HistoryEntries != 0 || st.SeenKeys != 0 {
		t.Fatalf("rejected callbacks left state: %+v %v", st, err)
	}
	if n := len(h.dify.Requests()); n != 0 {
		t.Fatalf("the LLM was asked %d times", n)
	}

	// Other methods and unknown apps.
	for _, m := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch} {
		req, _ := http.NewRequest(m, good.Target(h.base+"/wecom/helpdesk"), bytes.NewReader(good.Body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s: status %d", m, resp.StatusCode)
		}
	}
	if st := h.postCallback("nosuchapp", good); st != 404 {
		t.Errorf("unknown app: %d", st)
	}

	// A callback replayed within the window is a duplicate: acked, not
	// answered again.
	h.ask("helpdesk", "zhangsan", "真的问题")
	h.waitSent("zhangsan", 1)
	cb := h.callback("helpdesk", "lisi", "只问一次")
	for range 3 {
		if st := h.postCallback("helpdesk", cb); st != 200 {
			t.Fatalf("replay: status %d", st)
		}
	}
	h.waitSent("lisi", 1)
	h.waitIdle()
	if got := h.sentTo("lisi"); len(got) != 1 {
		t.Fatalf("a replayed callback was answered %d times", len(got))
	}
}

// Random corruption of a valid callback never gets a 5xx or brings the
// daemon down.
func TestMangledCallbacksNeverCrash(t *testing.T) {
	h := newHarness(t, "")
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		cb := h.callback("helpdesk", "zhangsan", fmt.Sprintf("问题 %d", i))
		body := append([]byte(nil), cb.Body...)
		for range 1 + r.IntN(4) {
			switch r.IntN(3) {
			case 0: // flip a byte
				body[r.IntN(len(body))] ^= byte(1 + r.IntN(255))
			case 1: // cut
				body = body[:r.IntN(len(body))]
			case 2: // insert junk
				at := r.IntN(len(body) + 1)
				junk := []string{"<", "]]>", "&", "<![CDATA[", "\x00", "\xff", "</xml>", "<!DOCTYPE x>"}[r.IntN(8)]
				body = append(body[:at:at], append([]byte(junk), body[at:]...)...)
			}
			if len(body) == 0 {
				body = []byte("<")
			}
		}
		cb.Body = body
		if st := h.postCallback("helpdesk", cb); st >= 500 {
			t.Fatalf("mangled callback %d: status %d\nbody %q", i, st, body)
		}
	}
	h.ask("helpdesk", "lisi", "还活着吗")
	if got := h.waitSent("lisi", 1); got[0].Content != echo("还活着吗") {
		t.Fatalf("after the mangled callbacks: %q", got[0].Content)
	}
}

// A slow client (slowloris: headers or body dribbled a byte at a time) is
// cut off by the server's read_timeout, while other callbacks are served
// as usual, and it leaves no record.
func TestSlowClientsCutOff(t *testing.T) {
	h := newHarness(t, "")
	h.stop()
	h.edit = func(s string) string {
		return strings.Replace(s, `public_url = "https://bot.example.com"`, `public_url = "https://bot.example.com"`+"\nread_timeout = \"1s\"", 1)
	}
	h.start()
	addr := strings.TrimPrefix(h.base, "http://")
	good := h.callback("helpdesk", "zhangsan", "慢吞吞")
	full := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s",
		strings.TrimPrefix(good.Target(h.base+"/wecom/helpdesk"), h.base), len(good.Body), good.Body)
	headerEnd := strings.Index(full, "\r\n\r\n") + 4

	type slow struct {
		conn   net.Conn
		closed chan time.Duration
	}
	var slows []slow
	start := time.Now()
	for i := range 20 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s := slow{conn: c, closed: make(chan time.Duration, 1)}
		slows = append(slows, s)
		// Half stall in the headers, half in the body.
		sendFirst := 10
		if i%2 == 1 {
			sendFirst = headerEnd + 10
		}
		if _, err := io.WriteString(c, full[:sendFirst]); err != nil {
			t.Fatal(err)
		}
		go func(rest string) {
			// Dribble a byte every 200 ms; watch for the server closing.
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = io.Copy(io.Discard, bufio.NewReader(c))
				s.closed <- time.Since(start)
			}()
			for k := 0; k < len(rest) && k < 30; k++ {
				select {
				case <-done:
					return
				case <-time.After(200 * time.Millisecond):
				}
				if _, err := c.Write([]byte{rest[k]}); err != nil {
					return
				}
			}
		}(full[sendFirst:])
	}
	// Meanwhile a normal question is acked and answered at once.
	t0 := time.Now()
	h.ask("helpdesk", "lisi", "我不慢")
	if d := time.Since(t0); d > 500*time.Millisecond {
		t.Errorf("a normal callback took %v next to the slow clients", d)
	}
	h.waitSent("lisi", 1)
	for i, s := range slows {
		select {
		case d := <-s.closed:
			if d > 3*time.Second {
				t.Errorf("slow client %d cut off only after %v", i, d)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("slow client %d still connected after 5s", i)
		}
	}
	h.waitIdle()
	if got := h.sentTo("zhangsan"); len(got) != 0 {
		t.Fatalf("a slow client's callback was answered: %q", contents(got))
	}
	st, _ := h.store.Stats()
	if st.HistoryEntries != 1 {
		t.Fatalf("history entries %d, want only the normal question", st.HistoryEntries)
	}
}
