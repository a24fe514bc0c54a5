package emulator_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

// botSDKDir returns .ci/aibot-sdk with its node_modules, or stops the test:
// under CI (env CI set) a missing install is a failure, elsewhere a loud
// skip, because only CI is guaranteed to have run `npm ci`.
func botSDKDir(t *testing.T) (dir, node string) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", ".ci", "aibot-sdk"))
	if err != nil {
		t.Fatal(err)
	}
	missing := ""
	if node, err = exec.LookPath("node"); err != nil {
		missing = "node is not on PATH"
	} else if _, err := os.Stat(filepath.Join(dir, "node_modules", "@wecom", "aibot-node-sdk", "package.json")); err != nil {
		missing = "the official SDK is not installed in " + dir + "/node_modules (run: npm ci --prefix .ci/aibot-sdk)"
	}
	if missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must prove the fake against Tencent's SDK, but %s", missing)
		}
		t.Skipf("SKIPPING the official-SDK conformance test: %s", missing)
	}
	return dir, node
}

type botSDKProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string
	done  chan error
}

func startBotSDK(t *testing.T, ctx context.Context, args ...string) *botSDKProc {
	t.Helper()
	dir, node := botSDKDir(t)
	cmd := exec.CommandContext(ctx, node, append([]string{filepath.Join(dir, "sdk-check.cjs")}, args...)...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &botSDKProc{t: t, cmd: cmd, lines: make(chan string, 16), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		err := cmd.Wait()
		if err != nil {
			t.Logf("sdk-check stderr:\n%s", stderr.String())
		}
		p.done <- err
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return p
}

func (p *botSDKProc) expect(ctx context.Context, want string) {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("sdk-check exited before printing %s: %v", want, <-p.done)
		}
		if l != want {
			p.t.Fatalf("sdk-check printed %q, want %q", l, want)
		}
	case <-ctx.Done():
		p.t.Fatalf("no %s from sdk-check: %v", want, ctx.Err())
	}
}

func (p *botSDKProc) exit(ctx context.Context) error {
	for {
		select {
		case _, ok := <-p.lines:
			if !ok {
				return <-p.done
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// botShape decodes a body into generic JSON for comparison.
func botShape(t *testing.T, raw json.RawMessage) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("body %s: %v", raw, err)
	}
	return v
}

const (
	botSDKID     = "aibSDKCHECK"
	botSDKSecret = "sdk-secret-0123456789"
	botSDKUser   = "zhangsan"
)

// TestBotServerSpeaksOfficialSDK runs Tencent's @wecom/aibot-node-sdk
// against the fake and checks that the fake recorded exactly the frames the
// SDK sent; then a Go aibot.Client displaces the SDK and repeats the same
// replies, and its frames must have the same botShape as the SDK's.
func TestBotServerSpeaksOfficialSDK(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	srv, err := emulator.NewBotServer(emulator.BotConfig{Bots: map[string]string{botSDKID: botSDKSecret}, AckDelay: 15 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wsURL, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	sdk := startBotSDK(t, ctx, wsURL, botSDKID, botSDKSecret, "roundtrip")
	sdk.expect(ctx, "READY")
	welcomeReq, err := srv.Push(botSDKID, aibot.Message{MsgType: aibot.MsgEvent, From: aibot.From{UserID: botSDKUser}, Event: &aibot.Event{EventType: aibot.EventEnterChat}})
	if err != nil {
		t.Fatal(err)
	}
	sdk.expect(ctx, "WELCOMED")
	textReq, err := srv.PushText(botSDKID, botSDKUser, "你好")
	if err != nil {
		t.Fatal(err)
	}
	sdk.expect(ctx, "DONE")

	sdkReplies := srv.Replies()
	checkBotSDKFrames(t, srv, sdkReplies, welcomeReq, textReq)
	if n := srv.Pings(botSDKID); n < 1 {
		t.Errorf("the SDK sent %d pings in 350 ms at a 100 ms interval", n)
	}
	frames := srv.Frames()
	if f := frames[0]; f.Cmd != aibot.CmdSubscribe || !strings.HasPrefix(f.ReqID, aibot.CmdSubscribe+"_") ||
		!reflect.DeepEqual(botShape(t, f.Body), map[string]any{"bot_id": botSDKID, "secret": "<redacted>"}) {
		t.Errorf("first frame = %+v, want the SDK's aibot_subscribe", f)
	}

	// A Go client subscribing for the same bot displaces the SDK: the SDK
	// must recognise the fake's disconnected_event and stop.
	goReplies := make(chan error, 2)
	var client *aibot.Client
	client, err = aibot.New(aibot.Config{BotID: botSDKID, Secret: botSDKSecret, URL: wsURL}, aibot.Deps{
		Handler: func(ctx context.Context, cb *aibot.Callback) {
			switch {
			case cb.Message.Event != nil && cb.Message.Event.EventType == aibot.EventEnterChat:
				goReplies <- client.RespondWelcome(ctx, cb.ReqID, "欢迎使用知识库助手")
			case cb.Message.MsgType == aibot.MsgText:
				goReplies <- func() error {
					for _, step := range []struct {
						text   string
						finish bool
						fb     string
					}{{"第一段", false, "fb-sdk-1"}, {"第一段\n\n第二段", false, ""}, {"第一段\n\n第二段\n\n**完**", true, ""}} {
						if err := client.RespondStream(ctx, cb.ReqID, "sdk-stream-2", step.text, step.finish, step.fb); err != nil {
							return err
						}
					}
					return client.SendMarkdown(ctx, cb.Message.ChatKey(), "**主动消息** from the SDK")
				}()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- client.Run(cctx) }()
	defer func() { stop(); <-runDone }()
	sdk.expect(ctx, "DISPLACED")
	if err := sdk.exit(ctx); err != nil {
		t.Fatalf("sdk-check after displacement: %v", err)
	}
	if err := client.WaitOnline(ctx); err != nil {
		t.Fatal(err)
	}
	if n := srv.Subscribes(botSDKID); n != 2 {
		t.Fatalf("subscribes = %d, want 2 (SDK, then Go client)", n)
	}

	n := len(srv.Replies())
	wReq, err := srv.Push(botSDKID, aibot.Message{MsgType: aibot.MsgEvent, From: aibot.From{UserID: botSDKUser}, Event: &aibot.Event{EventType: aibot.EventEnterChat}})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-goReplies; err != nil {
		t.Fatalf("Go welcome: %v", err)
	}
	tReq, err := srv.PushText(botSDKID, botSDKUser, "你好")
	if err != nil {
		t.Fatal(err)
	}
	if err := <-goReplies; err != nil {
		t.Fatalf("Go replies: %v", err)
	}
	goFrames := srv.Replies()[n:]
	if len(goFrames) != len(sdkReplies) {
		t.Fatalf("Go client sent %d reply frames, the SDK %d", len(goFrames), len(sdkReplies))
	}
	for i := range goFrames {
		g, s := goFrames[i], sdkReplies[i]
		gb, sb := botShape(t, g.Body), botShape(t, s.Body)
		if m, ok := gb.(map[string]any); ok {
			if st, ok := m["stream"].(map[string]any); ok {
				st["id"] = "sdk-stream-1"
			}
		}
		if g.Cmd != s.Cmd || !reflect.DeepEqual(gb, sb) || g.ErrCode != 0 {
			t.Errorf("frame %d: Go %s %s (errcode %d), SDK %s %s", i, g.Cmd, g.Body, g.ErrCode, s.Cmd, s.Body)
		}
	}
	if goFrames[0].ReqID != wReq || goFrames[1].ReqID != tReq {
		t.Errorf("Go client answered on %s/%s, want %s/%s", goFrames[0].ReqID, goFrames[1].ReqID, wReq, tReq)
	}
	if v := srv.Violations(); len(v) > 0 {
		t.Errorf("violations: %v", v)
	}
}

func checkBotSDKFrames(t *testing.T, srv *emulator.BotServer, got []emulator.BotFrame, welcomeReq, textReq string) {
	t.Helper()
	want := []struct {
		cmd, req string
		body     string
	}{
		{aibot.CmdRespondWelcome, welcomeReq, `{"msgtype":"text","text":{"content":"欢迎使用知识库助手"}}`},
		{aibot.CmdRespondMsg, textReq, `{"msgtype":"stream","stream":{"id":"sdk-stream-1","finish":false,"content":"第一段","feedback":{"id":"fb-sdk-1"}}}`},
		{aibot.CmdRespondMsg, textReq, `{"msgtype":"stream","stream":{"id":"sdk-stream-1","finish":false,"content":"第一段\n\n第二段"}}`},
		{aibot.CmdRespondMsg, textReq, `{"msgtype":"stream","stream":{"id":"sdk-stream-1","finish":true,"content":"第一段\n\n第二段\n\n**完**"}}`},
		{aibot.CmdSendMsg, "", `{"chatid":"zhangsan","msgtype":"markdown","markdown":{"content":"**主动消息** from the SDK"}}`},
	}
	if len(got) != len(want) {
		for _, f := range got {
			t.Logf("recorded %s %s %s", f.Cmd, f.ReqID, f.Body)
		}
		t.Fatalf("fake recorded %d reply frames, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Cmd != w.cmd || (w.req != "" && g.ReqID != w.req) || g.ErrCode != 0 ||
			!reflect.DeepEqual(botShape(t, g.Body), botShape(t, json.RawMessage(w.body))) {
			t.Errorf("frame %d = %s %s %s (errcode %d %s)\nwant %s %s %s", i, g.Cmd, g.ReqID, g.Body, g.ErrCode, g.ErrMsg, w.cmd, w.req, w.body)
		}
	}
	if !strings.HasPrefix(got[4].ReqID, aibot.CmdSendMsg+"_") {
		t.Errorf("sendMessage req_id %q, want the SDK's aibot_send_msg_… form", got[4].ReqID)
	}
	b, ok := srv.Bubble("sdk-stream-1")
	if !ok || b.Text != "第一段\n\n第二段\n\n**完**" || b.Frames != 3 || b.Finishes != 1 || b.FeedbackID != "fb-sdk-1" || b.ChatKey != botSDKUser {
		t.Errorf("bubble = %+v", b)
	}
	if s := srv.Sent(botSDKUser); !reflect.DeepEqual(s, []string{"**主动消息** from the SDK"}) {
		t.Errorf("sent = %q", s)
	}
	if w, _ := srv.Welcome(welcomeReq); w != "欢迎使用知识库助手" {
		t.Errorf("welcome = %q", w)
	}
	for i := 1; i < len(got); i++ {
		if got[i].At.Before(got[i-1].At) {
			t.Errorf("frames out of arrival order at %d", i)
		}
	}
	if v := srv.Violations(); len(v) > 0 {
		t.Errorf("the SDK violated ack-before-next-frame: %v", v)
	}
}

// TestBotServerRefusesOfficialSDKWithBadSecret: the SDK must see the fake's
// refusal as its own "Authentication failed".
func TestBotServerRefusesOfficialSDKWithBadSecret(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := emulator.NewBotServer(emulator.BotConfig{Bots: map[string]string{botSDKID: botSDKSecret}})
	if err != nil {
		t.Fatal(err)
	}
	wsURL, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	sdk := startBotSDK(t, ctx, wsURL, botSDKID, "wrong-secret", "badsecret")
	sdk.expect(ctx, "AUTHFAILED")
	if err := sdk.exit(ctx); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("sdk-check exit: %v", err)
		}
		t.Fatal(err)
	}
	if srv.AuthFailures(botSDKID) < 1 || srv.Subscribes(botSDKID) != 0 {
		t.Errorf("auth failures %d, subscribes %d", srv.AuthFailures(botSDKID), srv.Subscribes(botSDKID))
	}
}

// TestAIBotCryptoMatchesOfficialSDK checks aibot's media decryption and
// webhook crypto against the SDK's decryptFile and WecomCrypto, both ways.
func TestAIBotCryptoMatchesOfficialSDK(t *testing.T) {
	dir, node := botSDKDir(t)
	const (
		token  = "QDG6eK"
		encKey = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
		aesKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlBQkNERUY="
	)
	media := []byte(strings.Repeat("年假制度 PDF bytes ", 50))
	ct, err := aibot.EncryptMedia(media, aesKey)
	if err != nil {
		t.Fatal(err)
	}
	w, err := aibot.NewWebhook(token, encKey)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := w.StreamReply("STREAMID", "**答案**：见手册", false, "fb", "1700000000", "nonce-1")
	if err != nil {
		t.Fatal(err)
	}
	plain := `{"msgid":"sdk-m","aibotid":"A","chattype":"single","from":{"userid":"U"},"msgtype":"text","text":{"content":"SDK 加密"}}`
	req, _ := json.Marshal(map[string]string{
		"aeskey": aesKey, "media": base64.StdEncoding.EncodeToString(ct), "token": token, "encodingAESKey": encKey,
		"reply": string(reply), "plain": plain, "timestamp": "1700000009", "nonce": "nonce-9",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "sdk-check.cjs"), "crypto")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(string(req))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sdk-check crypto: %v", err)
	}
	var res struct {
		Media, Reply, Encrypt, Signature string
		ReplyOK                          bool
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if got, _ := base64.StdEncoding.DecodeString(res.Media); string(got) != string(media) {
		t.Error("the SDK's decryptFile disagrees with EncryptMedia")
	}
	if !res.ReplyOK || res.Reply != `{"msgtype":"stream","stream":{"id":"STREAMID","finish":false,"content":"**答案**：见手册","feedback":{"id":"fb"}}}` {
		t.Errorf("the SDK opened our passive reply as %q (signature ok %v)", res.Reply, res.ReplyOK)
	}
	body, _ := json.Marshal(map[string]string{"encrypt": res.Encrypt})
	m, err := w.Open(url.Values{"msg_signature": {res.Signature}, "timestamp": {"1700000009"}, "nonce": {"nonce-9"}}, body)
	if err != nil || m.MsgID != "sdk-m" || m.Question() != "SDK 加密" {
		t.Errorf("opening the SDK's ciphertext: %+v %v", m, err)
	}
	back, err := aibot.DecryptMedia(ct, aesKey)
	if err != nil || string(back) != string(media) {
		t.Errorf("DecryptMedia round trip: %v", err)
	}
}
