package bridge

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

// testPNG is a small real picture.
func testPNG(t testing.TB) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	for i := range 8 {
		img.Set(i, i, color.RGBA{R: 200, A: 255})
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// askImage posts an image message (media id from the fake WeCom) to app.
func (h *harness) askImage(app, user, mediaID string) {
	h.t.Helper()
	id := 9561255354251345929 + h.msgID.Add(1)
	inner := wecomtest.ImageMessageXML(testCorp, user, "http://127.0.0.1:1/pic", mediaID, id, appAgent(app), time.Now())
	cb, err := wecomtest.NewCallback(testToken, testAESKey, testCorp, appAgent(app), inner, wecom.FormatXML, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if st := h.postCallback(app, cb); st != http.StatusOK {
		h.t.Fatalf("image callback status %d", st)
	}
}

func mediaHarness(t *testing.T, media string) *harness {
	h := newHarness(t, "\n[media]\n"+media+"\n")
	h.dify.SetFileUpload(llmtest.FileUpload{Enabled: true, Types: []string{"image", "document"}})
	return h
}

// A picture, then the question about it: one Dify question, with the
// picture uploaded as the same user and passed in files.
func TestPictureThenTextIsOneQuestion(t *testing.T) {
	h := mediaHarness(t, `hold = "5s"`)
	pic := testPNG(t)
	mid := h.wc.AddMedia(testCorp, pic, "image/png", "报错截图.png")
	h.dify.Push(llmtest.Script{Answer: "截图里是 404 错误。"})
	h.askImage("helpdesk", "zhangsan", mid)
	h.ask("helpdesk", "zhangsan", "这个报错是什么意思？")
	h.waitSent("zhangsan", 1)
	h.waitIdle()
	reqs := h.dify.Requests()
	if len(reqs) != 1 || reqs[0].Query != "这个报错是什么意思？" || len(reqs[0].Attached) != 1 || reqs[0].FilesDropped {
		t.Fatalf("Dify got %+v", reqs)
	}
	if up := reqs[0].Attached[0]; !bytes.Equal(up.Data, pic) || up.User != reqs[0].User {
		t.Fatalf("uploaded %d bytes as %q, asked as %q", len(up.Data), up.User, reqs[0].User)
	}
	if got := h.sentTo("zhangsan"); len(got) != 1 || got[0].Content != "截图里是 404 错误。" {
		t.Fatalf("user got %q", contents(got))
	}
	e, _, err := h.store.History(kv.HistoryQuery{User: "zhangsan"})
	if err != nil || len(e) != 1 || len(e[0].Attachments) != 1 || e[0].Attachments[0].File == "" || e[0].Attachments[0].MediaID != "" {
		t.Fatalf("history %+v, %v: one entry with the picture", e, err)
	}
	if _, err := os.Stat(filepath.Join(h.dbPath+".media", e[0].Attachments[0].File)); err != nil {
		t.Fatalf("the picture is not kept next to the database: %v", err)
	}
	// The asker's history page shows the picture and serves its bytes.
	c := newPageClient(h)
	c.login("zhangsan")
	st, body, _ := c.get("/history")
	src := fmt.Sprintf("/history/media/%d/0", e[0].ID)
	if st != http.StatusOK || !strings.Contains(body, src) {
		t.Fatalf("history page %d lacks the thumbnail %s:\n%s", st, src, body)
	}
	if st, img, hdr := c.get(src); st != http.StatusOK || img != string(pic) || hdr.Get("Content-Type") != "image/png" {
		t.Fatalf("thumbnail: %d %s, %d bytes", st, hdr.Get("Content-Type"), len(img))
	}
	other := newPageClient(h)
	other.login("lisi")
	if st, _, _ := other.get(src); st != http.StatusNotFound {
		t.Fatalf("another user fetched the picture: %d", st)
	}
}

// Pictures alone: several in a row join; with no text after the hold
// window, they are asked about with the default prompt.
func TestPicturesAloneUseTheDefaultPrompt(t *testing.T) {
	h := mediaHarness(t, `hold = "300ms"`)
	h.dify.Push(llmtest.Script{Answer: "两张图都是报销单。"})
	h.askImage("helpdesk", "zhangsan", h.wc.AddMedia(testCorp, testPNG(t), "image/png", "a.png"))
	h.askImage("helpdesk", "zhangsan", h.wc.AddMedia(testCorp, testPNG(t), "image/png", "b.png"))
	h.waitSent("zhangsan", 1)
	h.waitIdle()
	reqs := h.dify.Requests()
	if len(reqs) != 1 || reqs[0].Query != DefaultMediaPrompt || len(reqs[0].Attached) != 2 {
		t.Fatalf("Dify got %+v", reqs)
	}
}

// Limits: an oversized picture and a kind not allowed get a clear Chinese
// reply; nothing else breaks.
func TestAttachmentLimits(t *testing.T) {
	h := mediaHarness(t, `max_bytes = 50
allowed = ["image"]`)
	h.askImage("helpdesk", "zhangsan", h.wc.AddMedia(testCorp, testPNG(t), "image/png", "big.png"))
	got := h.waitSent("zhangsan", 1)
	if !strings.Contains(got[0].Content, "文件太大") {
		t.Fatalf("oversized picture: %q", got[0].Content)
	}
	h.waitIdle()
	if len(h.dify.Requests()) != 0 {
		t.Fatal("an oversized picture was asked about")
	}
	h.dify.Push(llmtest.Script{Answer: "文字照常回答。"})
	h.ask("helpdesk", "zhangsan", "那文字呢？")
	if got := h.waitSent("zhangsan", 2); got[1].Content != "文字照常回答。" {
		t.Fatalf("after the refused picture: %q", contents(got))
	}
}

// A Dify app whose file upload is off: the user is told, and the log names
// the Dify setting to turn on.
func TestDifyAppNotTakingPictures(t *testing.T) {
	h := newHarness(t, "\n[media]\nhold = \"100ms\"\n")
	h.askImage("helpdesk", "zhangsan", h.wc.AddMedia(testCorp, testPNG(t), "image/png", "a.png"))
	got := h.waitSent("zhangsan", 1)
	h.waitIdle()
	if len(h.dify.Requests()) != 0 || !strings.Contains(h.logBuf.String(), "文件上传") {
		t.Fatalf("user got %q; log:\n%s", got[0].Content, h.logBuf.String())
	}
}

// OpenAI-compatible backend: without vision the user hears it cannot read
// pictures; with vision = true the picture goes as an image_url part.
func TestOpenAIVisionOnAndOff(t *testing.T) {
	h := newHarness(t, "\n[media]\nhold = \"100ms\"\n")
	h.askImage("chat", "zhangsan", h.wc.AddMedia(testCorp, testPNG(t), "image/png", "a.png"))
	got := h.waitSent("zhangsan", 1)
	if !strings.Contains(got[0].Content, "图片") {
		t.Fatalf("without vision: %q", got[0].Content)
	}
	h.waitIdle()
	h.stop()
	h.edit = func(s string) string {
		return strings.Replace(s, `model = "gpt-4o-mini"`, "model = \"gpt-4o-mini\"\nvision = true", 1)
	}
	h.start()
	h.oai.Push(llmtest.Script{Answer: "图里有一条红线。"})
	h.askImage("chat", "zhangsan", h.wc.AddMedia(testCorp, testPNG(t), "image/png", "b.png"))
	got = h.waitSent("zhangsan", 2)
	if got[1].Content != "图里有一条红线。" {
		t.Fatalf("with vision: %q", contents(got))
	}
	reqs := h.oai.Requests()
	last := reqs[len(reqs)-1].Messages
	imgs := last[len(last)-1].Images()
	if len(imgs) != 1 {
		t.Fatalf("OpenAI got %d images", len(imgs))
	}
	if mt, data, ok := imgs[0].DataURI(); !ok || mt != "image/png" || !bytes.Equal(data, testPNG(t)) {
		t.Fatalf("OpenAI got image %q (%d bytes, ok %v)", mt, len(data), ok)
	}
}

// An attachment accepted just before a crash (acked, not downloaded yet)
// is fetched from its durable record after the restart; an expired media
// id is told to the user.
func TestAttachmentFetchedAfterRestart(t *testing.T) {
	h := mediaHarness(t, `hold = "100ms"`)
	mid := h.wc.AddMedia(testCorp, testPNG(t), "image/png", "a.png")
	h.stop()
	store, err := kv.Open(h.dbPath, kv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range []string{mid, "expired-media-id"} {
		if _, _, err := store.Accept(kv.Question{App: "helpdesk", User: []string{"zhangsan", "lisi"}[i], DedupKey: fmt.Sprint("m:", i),
			Kind: kv.KindQuestion, MsgType: "image", Attachments: []kv.Attachment{{Kind: "image", MediaID: m}}}); err != nil {
			t.Fatal(err)
		}
	}
	store.Close()
	h.dify.Push(llmtest.Script{Answer: "重启后照样看到了图片。"})
	h.start()
	h.waitSent("zhangsan", 1)
	got := h.waitSent("lisi", 1)
	h.waitIdle()
	if r := h.dify.Requests(); len(r) != 1 || len(r[0].Attached) != 1 {
		t.Fatalf("Dify got %+v", r)
	}
	if !strings.Contains(got[0].Content, "过期") {
		t.Fatalf("expired media: %q", got[0].Content)
	}
}

// A bot's mixed message (text + picture): one question; the picture comes
// from its encrypted URL, decrypted with its aeskey. A PDF file goes to
// Dify as a document.
func TestBotMixedMessageAndPDF(t *testing.T) {
	h, bs := newBotHarness(t, "")
	h.stop()
	h.extra += "\n[media]\nhold = \"100ms\"\n"
	subs := bs.Subscribes(testBotID)
	h.start()
	// Wait for the restarted daemon's own subscription: the emulator may
	// not yet have noticed that the old connection is gone.
	waitFor(t, func() bool { return bs.Subscribes(testBotID) > subs && bs.Connected(testBotID) })
	h.dify.SetFileUpload(llmtest.FileUpload{Enabled: true, Types: []string{"image", "document"}})
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	aesKey := base64.StdEncoding.EncodeToString(key)
	files := map[string][]byte{"/pic": testPNG(t), "/doc": []byte("%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		enc, err := aibot.EncryptMedia(files[r.URL.Path], aesKey)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if r.URL.Path == "/doc" {
			w.Header().Set("Content-Disposition", `attachment; filename*=UTF-8''%E5%90%88%E5%90%8C.pdf`)
		}
		_, _ = w.Write(enc)
	}))
	defer srv.Close()
	h.dify.Push(llmtest.Script{Answer: "图里是报销单。"}, llmtest.Script{Answer: "合同没问题。"})
	if _, err := bs.Push(testBotID, aibot.Message{MsgType: aibot.MsgMixed, ChatType: aibot.ChatSingle, From: aibot.From{UserID: "zhangsan"},
		Mixed: &aibot.Mixed{Items: []aibot.MixedItem{
			{MsgType: "text", Text: &aibot.Text{Content: "看看这张图"}},
			{MsgType: "image", Image: &aibot.Media{URL: srv.URL + "/pic", AESKey: aesKey}},
		}}}); err != nil {
		t.Fatal(err)
	}
	waitBubbleDone(t, bs, 1)
	h.waitIdle()
	if _, err := bs.Push(testBotID, aibot.Message{MsgType: aibot.MsgFile, ChatType: aibot.ChatSingle, From: aibot.From{UserID: "zhangsan"},
		File: &aibot.Media{URL: srv.URL + "/doc", AESKey: aesKey}}); err != nil {
		t.Fatal(err)
	}
	waitBubbleDone(t, bs, 2)
	h.waitIdle()
	reqs := h.dify.Requests()
	if len(reqs) != 2 || reqs[0].Query != "看看这张图" || len(reqs[0].Attached) != 1 || !bytes.Equal(reqs[0].Attached[0].Data, files["/pic"]) {
		t.Fatalf("mixed message: Dify got %+v", reqs)
	}
	if len(reqs[1].Attached) != 1 || reqs[1].Attached[0].Name != "合同.pdf" || len(reqs[1].Files) != 1 || reqs[1].Files[0].Type != "document" {
		t.Fatalf("PDF: Dify got %+v", reqs[1])
	}
}

// Retention deletes an attachment's bytes with its history entry.
func TestRetentionDeletesAttachments(t *testing.T) {
	h := mediaHarness(t, `hold = "100ms"`)
	h.dify.Push(llmtest.Script{Answer: "好的。"})
	h.askImage("helpdesk", "zhangsan", h.wc.AddMedia(testCorp, testPNG(t), "image/png", "a.png"))
	h.waitSent("zhangsan", 1)
	h.waitIdle()
	dir := h.dbPath + ".media"
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("media dir has %d files", len(ents))
	}
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(filepath.Join(dir, ents[0].Name()), old, old); err != nil {
		t.Fatal(err)
	}
	h.b.pruneMedia(24 * time.Hour)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("retention left %d files", len(ents))
	}
}

// An app's voice message (AMR): converted with ffmpeg, transcribed by the
// speech backend, asked as text, and the answer starts with what was
// understood.
func TestAppVoiceTranscribedAndEchoed(t *testing.T) {
	needFFmpeg(t)
	speechFake := llmtest.NewOpenAI(llmtest.WithTranscriptionModels("whisper-1"))
	defer speechFake.Close()
	speechFake.PushTranscript("年假怎么请")
	h := newHarness(t, fmt.Sprintf(`
[backends.speech]
type = "openai"
base_url = %q
api_key = "sk-llmtest"
transcription_model = "whisper-1"

[media]
speech_backend = "speech"
`, speechFake.URL()))
	h.dify.Push(llmtest.Script{Answer: "在 OA 里提交年假申请。"})
	mid := h.wc.AddMedia(testCorp, amrVoice(50), "audio/amr", "1234567.amr")
	id := 9761255354251345929 + h.msgID.Add(1)
	inner := []byte(fmt.Sprintf(`<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[%s]]></MediaId><Format><![CDATA[amr]]></Format><MsgId>%d</MsgId><AgentID>1000002</AgentID></xml>`, testCorp, time.Now().Unix(), mid, id))
	if st := h.postCallback("helpdesk", mustCallback(t, inner, 1000002)); st != http.StatusOK {
		t.Fatalf("voice callback: %d", st)
	}
	got := h.waitSent("zhangsan", 1)
	h.waitIdle()
	if r := h.dify.Requests(); len(r) != 1 || r[0].Query != "年假怎么请" || len(r[0].Attached) != 0 {
		t.Fatalf("Dify got %+v", r)
	}
	if !strings.HasPrefix(joined(got), "你说的是：年假怎么请") || !strings.Contains(joined(got), "在 OA 里提交年假申请。") {
		t.Fatalf("user got %q", contents(got))
	}
	if tr := speechFake.Transcriptions(); len(tr) != 1 || !strings.HasSuffix(tr[0].FileName, ".wav") {
		t.Fatalf("the speech backend got %+v (want WAV, converted from AMR)", tr)
	}
}

// Without a speech backend, a voice message gets a plain reply asking for
// text, and the LLM is not asked.
func TestAppVoiceWithoutSpeechBackend(t *testing.T) {
	h := newHarness(t, "")
	mid := h.wc.AddMedia(testCorp, amrVoice(5), "audio/amr", "1.amr")
	inner := []byte(fmt.Sprintf(`<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[%s]]></MediaId><Format><![CDATA[amr]]></Format><MsgId>77</MsgId><AgentID>1000002</AgentID></xml>`, testCorp, time.Now().Unix(), mid))
	if st := h.postCallback("helpdesk", mustCallback(t, inner, 1000002)); st != http.StatusOK {
		t.Fatalf("voice callback: %d", st)
	}
	got := h.waitSent("zhangsan", 1)
	h.waitIdle()
	if !strings.Contains(got[0].Content, "语音") || len(h.dify.Requests()) != 0 {
		t.Fatalf("user got %q; Dify asked %d times", got[0].Content, len(h.dify.Requests()))
	}
}

// BenchmarkPictureQuestion measures what a picture adds to a question:
// from the text's callback to Dify receiving the question, with a 200 KB
// picture sent just before (fetched from WeCom, kept, uploaded to Dify),
// against the same question without one. Run:
// go test -run '^$' -bench PictureQuestion -benchtime 30x ./bridge
func BenchmarkPictureQuestion(b *testing.B) {
	pic := bytes.Repeat(testPNG(b), 1) // a real PNG header...
	pic = append(pic, make([]byte, 200<<10)...)
	for _, withPic := range []bool{false, true} {
		name := "text"
		if withPic {
			name = "text+picture"
		}
		b.Run(name, func(b *testing.B) {
			h := newHarness(b, "\n[media]\nhold = \"10s\"\n")
			h.dify.SetFileUpload(llmtest.FileUpload{Enabled: true, Types: []string{"image"}})
			var total time.Duration
			for i := 0; i < b.N; i++ {
				h.dify.Push(llmtest.Script{Answer: "好。"})
				user := []string{"zhangsan", "lisi", "wangwu"}[i%3]
				if withPic {
					h.askImage("helpdesk", user, h.wc.AddMedia(testCorp, pic, "image/png", "p.png"))
				}
				n := len(h.dify.Requests())
				start := time.Now()
				h.ask("helpdesk", user, fmt.Sprintf("问题 %d", i))
				for len(h.dify.Requests()) == n {
					time.Sleep(200 * time.Microsecond)
				}
				total += time.Since(start)
				h.waitIdle()
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-to-dify")
			if withPic {
				ents, _ := os.ReadDir(h.dbPath + ".media")
				var size int64
				for _, e := range ents {
					if info, err := e.Info(); err == nil {
						size += info.Size()
					}
				}
				b.ReportMetric(float64(size)/float64(max(len(ents), 1)), "disk-bytes/attachment")
			}
		})
	}
}
