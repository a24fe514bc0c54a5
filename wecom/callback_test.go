package wecom_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

// TestCallbackBuildersRoundTrip checks that every message the wecomtest
// builders render, in both formats, opens back into the same Message.
func TestCallbackBuildersRoundTrip(t *testing.T) {
	created := time.Unix(1409659813, 0)
	msgs := []wecom.Message{
		{MsgType: "text", Content: "你好 <b>&amp; ]]> 😀", MsgID: 18446744073709551615},
		{MsgType: "image", PicURL: "https://p.qpic.cn/x", MediaID: "m1", MsgID: 2},
		{MsgType: "voice", MediaID: "m2", Format: "amr", MsgID: 3},
		{MsgType: "video", MediaID: "m3", ThumbMediaID: "t3", MsgID: 4},
		{MsgType: "location", LocationX: 23.134521, LocationY: -113.5, Scale: 15, Label: "广州", MsgID: 5},
		{MsgType: "link", Title: "t", Description: "d", URL: "https://example.com/?a=1&b=2", PicURL: "p", MsgID: 6},
		{MsgType: "event", Event: "subscribe"},
		{MsgType: "event", Event: "enter_agent"},
		{MsgType: "event", Event: "click", EventKey: "#key"},
		{MsgType: "event", Event: "view", EventKey: "https://example.com/"},
		{MsgType: "event", Event: "template_card_event", EventKey: "btn"},
	}
	c := vecCrypto(t)
	for _, m := range msgs {
		m.ToUserName, m.FromUserName, m.CreateTime, m.AgentID = vecReceiveID, "lisi", created.Unix(), 1000002
		for _, format := range []wecom.Format{wecom.FormatXML, wecom.FormatJSON} {
			t.Run(m.MsgType+"/"+m.Event+"/"+format.String(), func(t *testing.T) {
				inner := wecomtest.MessageXML(&m)
				if format == wecom.FormatJSON {
					inner = wecomtest.MessageJSON(&m)
				}
				cb, err := wecomtest.NewCallback(vecToken, vecAESKey, vecReceiveID, 1000002, inner, format, nil)
				if err != nil {
					t.Fatal(err)
				}
				env, err := wecom.ParseEnvelope(cb.Body)
				if err != nil || env.AgentID != "1000002" || env.ToUserName != vecReceiveID {
					t.Fatalf("envelope %+v, %v", env, err)
				}
				q := cb.Query
				got, err := c.Open(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), cb.Body)
				if err != nil {
					t.Fatalf("Open: %v\n%s", err, inner)
				}
				if *got != m {
					t.Errorf("got  %+v\nwant %+v", *got, m)
				}
			})
		}
	}
}

func TestCallbackHelpers(t *testing.T) {
	c := vecCrypto(t)
	created := time.Unix(1700000000, 0)
	for name, inner := range map[string][]byte{
		"text xml":   wecomtest.TextMessageXML(vecReceiveID, "lisi", "hi", 7, 5, created),
		"text json":  wecomtest.TextMessageJSON(vecReceiveID, "lisi", "hi", 7, 5, created),
		"event xml":  wecomtest.EventXML(vecReceiveID, "lisi", "enter_agent", "", 5, created),
		"event json": wecomtest.EventJSON(vecReceiveID, "lisi", "enter_agent", "", 5, created),
		"image xml":  wecomtest.ImageMessageXML(vecReceiveID, "lisi", "https://p/x", "media", 8, 5, created),
	} {
		t.Run(name, func(t *testing.T) {
			cb, err := wecomtest.NewCallback(vecToken, vecAESKey, vecReceiveID, 5, inner, wecom.FormatXML, nil)
			if err != nil {
				t.Fatal(err)
			}
			target := cb.Target("https://bridge.example.com/wecom/callback")
			if !strings.HasPrefix(target, "https://bridge.example.com/wecom/callback?msg_signature=") && !strings.Contains(target, "msg_signature=") {
				t.Errorf("Target = %s", target)
			}
			m, err := c.Open(cb.Query.Get("msg_signature"), cb.Query.Get("timestamp"), cb.Query.Get("nonce"), cb.Body)
			if err != nil {
				t.Fatal(err)
			}
			if m.FromUserName != "lisi" || m.AgentID != 5 || m.CreateTime != created.Unix() {
				t.Errorf("message %+v", m)
			}
		})
	}

	q, err := wecomtest.VerifyURLQuery(vecToken, vecAESKey, vecReceiveID, "8827364511")
	if err != nil {
		t.Fatal(err)
	}
	echo, err := c.VerifyURL(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), q.Get("echostr"))
	if err != nil || string(echo) != "8827364511" {
		t.Fatalf("VerifyURL = %q, %v", echo, err)
	}

	// A callback for another corp is refused after decryption.
	cb, err := wecomtest.NewCallback(vecToken, vecAESKey, "wwother", 5, wecomtest.TextMessageXML("wwother", "x", "y", 1, 5, created), wecom.FormatJSON, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(cb.Query.Get("msg_signature"), cb.Query.Get("timestamp"), cb.Query.Get("nonce"), cb.Body); err == nil {
		t.Fatal("callback for another receive id accepted")
	}

	// A deterministic random source gives a reproducible callback.
	det := func() *wecomtest.Callback {
		cb, err := wecomtest.NewCallback(vecToken, vecAESKey, vecReceiveID, 5, []byte("<xml><MsgType>text</MsgType></xml>"), wecom.FormatXML,
			rand.NewChaCha8([32]byte{1}))
		if err != nil {
			t.Fatal(err)
		}
		return cb
	}
	a, b := det(), det()
	if !bytes.Equal(a.Body, b.Body) || a.Query.Get("nonce") != b.Query.Get("nonce") {
		t.Error("same random source, different callbacks")
	}
}

// typicalCallback is a text message of about 300 bytes, as a member would
// send: the decrypted XML is ~300 bytes and the body ~500.
func typicalCallback(tb testing.TB) (*wecom.Crypto, *wecomtest.Callback) {
	tb.Helper()
	inner := wecomtest.TextMessageXML(vecReceiveID, "zhangsan", "请帮我总结一下今天下午三点的会议纪要，并列出待办事项。", 4561255354251345929, 1000002, time.Unix(1409659813, 0))
	cb, err := wecomtest.NewCallback(vecToken, vecAESKey, vecReceiveID, 1000002, inner, wecom.FormatXML, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return vecCrypto(tb), cb
}

func BenchmarkOpen(b *testing.B) {
	c, cb := typicalCallback(b)
	sig, ts, nonce := cb.Query.Get("msg_signature"), cb.Query.Get("timestamp"), cb.Query.Get("nonce")
	plain, err := c.Decrypt(sig, ts, nonce, cb.Body)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("decrypted message %d bytes, body %d bytes", len(plain), len(cb.Body))
	b.ReportAllocs()
	b.SetBytes(int64(len(cb.Body)))
	for b.Loop() {
		if _, err := c.Open(sig, ts, nonce, cb.Body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecrypt(b *testing.B) {
	c, cb := typicalCallback(b)
	sig, ts, nonce := cb.Query.Get("msg_signature"), cb.Query.Get("timestamp"), cb.Query.Get("nonce")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Decrypt(sig, ts, nonce, cb.Body); err != nil {
			b.Fatal(err)
		}
	}
}

func ExampleClient_Send() {
	fake := wecomtest.NewServer(wecomtest.Options{})
	defer fake.Close()
	fake.AddApp("ww0000000000000001", "app-secret", 1000002)
	fake.AddUser("lisi")

	c, err := wecom.New(wecom.Config{
		CorpID: "ww0000000000000001", Secret: "app-secret", AgentID: 1000002,
		APIBase: fake.URL(),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	var b strings.Builder
	for i := range 300 {
		fmt.Fprintf(&b, "第%03d句回答。", i) // 18 bytes per sentence
	}
	reply := b.String()
	for _, piece := range wecom.Split(reply, wecom.MaxContentBytes) {
		if _, err := c.Send(context.Background(), wecom.OutMessage{
			ToUser: "lisi", Content: piece, EnableDuplicateCheck: true,
		}); err != nil {
			fmt.Println(err)
			return
		}
	}
	for _, m := range fake.Sent() {
		fmt.Println(m.ToUser, len(m.Content), m.Truncated)
	}
	// Output:
	// lisi 2034 false
	// lisi 2034 false
	// lisi 1332 false
}

func ExampleCrypto_Open() {
	c, err := wecom.NewCrypto("QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "wx5823bf96d3bd56c7")
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := c.Open("477715d11cdb4164915debcba66cb864d751f3e6", "1409659813", "1372623149", []byte(vecA2Body))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.FromUserName, m.MsgType, m.Content, m.DedupKey())
	// Output: mycreate text hello m:4561255354251345929
}
