package llm_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
)

func TestOpenAIVisionSendsDataURIs(t *testing.T) {
	f := llmtest.NewOpenAI()
	defer f.Close()
	cfg := openAIConfig(f)
	cfg.Vision = true
	cfg.SystemPrompt = "sys"
	b, lb := newBackend(t, cfg)
	img := pngBytes(100)
	jpg := append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, bytes.Repeat([]byte{1}, 50)...)
	res, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "图里有什么问题？",
		History: []llm.Turn{{Question: "hi", Answer: "hello"}},
		Files: []llm.File{
			{Name: "屏幕截图.png", MIME: "image/png", Data: img},
			// A wrong label: the bytes decide.
			{Kind: llm.FileImage, Name: "photo", MIME: "application/octet-stream", Data: jpg},
		}}, (&collector{}).emit)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if res.Answer != "You asked: 图里有什么问题？" {
		t.Errorf("answer %q", res.Answer)
	}
	reqs := f.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	msgs := reqs[0].Messages
	if len(msgs) != 4 {
		t.Fatalf("messages %+v", msgs)
	}
	// History stays text.
	for _, m := range msgs[:3] {
		if m.Parts != nil {
			t.Errorf("history message with parts: %+v", m)
		}
	}
	if msgs[1].Content != "hi" || msgs[2].Content != "hello" {
		t.Errorf("history %+v", msgs[1:3])
	}
	last := msgs[3]
	if last.Role != "user" || len(last.Parts) != 3 || last.Parts[0].Type != "text" || last.Parts[0].Text != "图里有什么问题？" {
		t.Fatalf("question %+v", last)
	}
	ims := last.Images()
	if len(ims) != 2 {
		t.Fatalf("images %+v", ims)
	}
	for i, want := range []struct {
		mt   string
		data []byte
	}{{"image/png", img}, {"image/jpeg", jpg}} {
		mt, data, ok := ims[i].DataURI()
		if !ok || mt != want.mt || !bytes.Equal(data, want.data) {
			t.Errorf("image %d: %q %v %d bytes", i, mt, ok, len(data))
		}
	}
	if strings.Contains(lb.String(), "base64") || strings.Contains(lb.String(), "屏幕截图") {
		t.Errorf("log mentions the attachment:\n%s", lb.String())
	}
	caps := fileCaps(t, b)
	if !caps.Accepts(llm.FileImage) || caps.MaxBytes[llm.FileImage] != llm.DefaultMaxImageBytes {
		t.Errorf("caps %+v", caps)
	}
}

func TestOpenAIPictureRefusals(t *testing.T) {
	f := llmtest.NewOpenAI()
	defer f.Close()
	pic := llm.File{Name: "a.png", Data: pngBytes(2000)}

	b, _ := newBackend(t, openAIConfig(f))
	_, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q", Files: []llm.File{pic}}, (&collector{}).emit)
	fe := wantFileError(t, err, llm.ErrNoVision)
	mustContain(t, fe.Reason, "看不了图片")
	mustContain(t, fe.Hint, "vision = true")
	if caps := fileCaps(t, b); caps.Accepts(llm.FileImage) {
		t.Errorf("caps without vision accept pictures: %+v", caps)
	}

	cfg := openAIConfig(f)
	cfg.Vision, cfg.MaxImageBytes = true, 1000
	b, _ = newBackend(t, cfg)
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q", Files: []llm.File{pic}}, (&collector{}).emit)
	fe = wantFileError(t, err, llm.ErrFileTooLarge)
	if fe.Limit != 1000 || fe.Size != int64(len(pic.Data)) {
		t.Errorf("file error %+v", fe)
	}
	mustContain(t, fe.Hint, "max_image_bytes")

	bmp := llm.File{Name: "a.bmp", Data: append([]byte("BM"), make([]byte, 40)...)}
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q", Files: []llm.File{bmp}}, (&collector{}).emit)
	wantFileError(t, err, llm.ErrUnsupportedFile)
	if n := len(f.Requests()); n != 0 {
		t.Fatalf("%d requests sent for refused pictures", n)
	}

	// vision = true on a model that cannot see: the server's 400 comes
	// back typed and is not retried.
	g := llmtest.NewOpenAI(llmtest.WithoutVision())
	defer g.Close()
	cfg = openAIConfig(g)
	cfg.Vision = true
	b, _ = newBackend(t, cfg)
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q", Files: []llm.File{{Name: "a.png", Data: pngBytes(10)}}}, (&collector{}).emit)
	var apiErr *llm.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Fatalf("err = %v", err)
	}
	mustContain(t, apiErr.Message, "image_url is only supported by certain models")
	if n := len(g.Requests()); n != 1 {
		t.Errorf("%d requests", n)
	}
}

func TestOpenAITextFilesInlined(t *testing.T) {
	f := llmtest.NewOpenAI()
	defer f.Close()
	cfg := openAIConfig(f)
	cfg.MaxFileText = 100
	b, _ := newBackend(t, cfg)
	csv := "\xEF\xBB\xBF姓名,部门\n张三,销售\n"
	long := strings.Repeat("第一行内容。\n", 30) // 19 bytes a line
	_, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "总结一下",
		Files: []llm.File{
			{Name: "名单.csv", MIME: "text/csv", Data: []byte(csv)},
			{Name: "log", MIME: "text/plain; charset=utf-8", Data: []byte(long)},
			{Name: "more.json", Data: []byte(`{"a":1}`)},
		}}, (&collector{}).emit)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	q := f.Requests()[0].Messages[0]
	if q.Parts != nil {
		t.Fatalf("text files sent as parts: %+v", q.Parts)
	}
	mustContain(t, q.Content, "[附件 / attachment: 名单.csv]\n姓名,部门\n张三,销售\n[附件结束 / end of 名单.csv]")
	mustContain(t, q.Content, "[附件 / attachment: log]\n第一行内容。\n")
	// 100 - 28 bytes of CSV leaves 72; the cut falls back to the last
	// line break (3 lines of 19 bytes), and the rest goes to the JSON.
	mustContain(t, q.Content, "第一行内容。\n（文件过长，只附上了前 57 字节，共 570 字节 / truncated: first 57 of 570 bytes）\n[附件结束 / end of log]")
	mustContain(t, q.Content, "[附件 / attachment: more.json]\n{\"a\":1}\n[附件结束 / end of more.json]\n\n总结一下")
	if !strings.HasSuffix(q.Content, "\n\n总结一下") || strings.Contains(q.Content, "\uFEFF") {
		t.Errorf("question %q", q.Content)
	}

	// The budget used up: later files are named but left out.
	cfg.MaxFileText = 28
	b2, _ := newBackend(t, cfg)
	if _, err := b2.Stream(ctxT(t), llm.Request{User: "u", Query: "q", Files: []llm.File{
		{Name: "名单.csv", Data: []byte(csv)}, {Name: "b.txt", Data: []byte("later")}}}, (&collector{}).emit); err != nil {
		t.Fatal(err)
	}
	q = f.Requests()[1].Messages[0]
	mustContain(t, q.Content, "[附件 / attachment: b.txt]\n（附件内容超出长度上限，未附上 / content left out: over the length limit）")
	if strings.Contains(q.Content, "later") {
		t.Errorf("over-budget file inlined: %q", q.Content)
	}

	for _, tt := range []struct {
		file llm.File
		hint string
	}{
		{llm.File{Name: "合同.pdf", Data: pdfBytes}, "dify"},
		{llm.File{Name: "report.docx", Data: []byte("PK\x03\x04")}, "dify"},
		{llm.File{Name: "voice.amr", Data: []byte("#!AMR\n")}, "transcription_model"},
		{llm.File{Name: "clip.mp4", Data: []byte("....ftypisom")}, "dify"},
	} {
		_, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q", Files: []llm.File{tt.file}}, (&collector{}).emit)
		fe := wantFileError(t, err, llm.ErrUnsupportedFile)
		mustContain(t, fe.Hint, tt.hint)
	}
	if n := len(f.Requests()); n != 2 {
		t.Errorf("%d requests", n)
	}

	// GBK text is refused rather than sent as mojibake; a stray bad byte
	// in a long log is not.
	gbk := []byte{0xD5, 0xC5, 0xC8, 0xFD, ',', 0xCF, 0xFA, 0xCA, 0xDB, '\n'} // 张三,销售
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q", Files: []llm.File{{Name: "名单.csv", Data: gbk}}}, (&collector{}).emit)
	fe := wantFileError(t, err, llm.ErrUnsupportedFile)
	mustContain(t, fe.Reason, "UTF-8")
	stray := append([]byte(strings.Repeat("ok line\n", 20)), 0xFF)
	if _, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q", Files: []llm.File{{Name: "a.log", Data: stray}}}, (&collector{}).emit); err != nil {
		t.Errorf("stray byte: %v", err)
	}
	if n := len(f.Requests()); n != 3 {
		t.Errorf("%d requests", n)
	}

	// Negative max_file_text_bytes: no inlining, text files refused.
	cfg.MaxFileText = -1
	b, _ = newBackend(t, cfg)
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q", Files: []llm.File{{Name: "a.txt", Data: []byte("x")}}}, (&collector{}).emit)
	wantFileError(t, err, llm.ErrUnsupportedFile)
	if caps := fileCaps(t, b); caps.Enabled {
		t.Errorf("caps %+v", caps)
	}
}

func transcriberConfig(f *llmtest.OpenAI) llm.Config {
	return llm.Config{Type: llm.TypeOpenAI, BaseURL: f.URL(), APIKey: "sk-llmtest", TranscriptionModel: "whisper-1",
		TranscriptionLanguage: "zh", RetryBase: 1}
}

func TestTranscribe(t *testing.T) {
	f := llmtest.NewOpenAI()
	defer f.Close()
	tr, err := llm.NewTranscriber(transcriberConfig(f), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mp3 := append([]byte("ID3\x03"), bytes.Repeat([]byte{9}, 500)...)
	f.PushTranscript("  请帮我查一下上个月的报销进度。\n")
	text, err := tr.Transcribe(ctxT(t), llm.File{MIME: "audio/mpeg", Data: mp3})
	if err != nil || text != "请帮我查一下上个月的报销进度。" {
		t.Fatalf("Transcribe = %q, %v", text, err)
	}
	rec := f.Transcriptions()
	if len(rec) != 1 || rec[0].Model != "whisper-1" || rec[0].FileName != "file.mp3" || rec[0].ResponseFormat != "json" ||
		rec[0].Language != "zh" || !bytes.Equal(rec[0].Data, mp3) {
		t.Errorf("request %+v", rec)
	}

	// Unconverted AMR: the server's refusal comes back typed, once.
	_, err = tr.Transcribe(ctxT(t), llm.File{Name: "voice.amr", MIME: "audio/amr", Data: []byte("#!AMR\n....")})
	var apiErr *llm.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Fatalf("amr: %v", err)
	}
	mustContain(t, apiErr.Message, "Invalid file format")
	if n := len(f.Transcriptions()); n != 2 {
		t.Errorf("a 400 was retried: %d requests", n)
	}

	// Silence.
	f.PushTranscript("")
	if _, err := tr.Transcribe(ctxT(t), llm.File{Name: "v.wav", Data: []byte("RIFF....WAVE")}); !errors.Is(err, llm.ErrEmptyTranscript) {
		t.Errorf("silence: %v", err)
	}

	// A server error is retried.
	f.FailTranscription(503, "")
	f.PushTranscript("好的")
	if text, err := tr.Transcribe(ctxT(t), llm.File{Name: "v.ogg", Data: []byte("OggS....")}); err != nil || text != "好的" {
		t.Errorf("after 503: %q, %v", text, err)
	}

	// Refused before sending.
	n := len(f.Transcriptions())
	if _, err := tr.Transcribe(ctxT(t), llm.File{Name: "v.mp3"}); !errors.Is(err, llm.ErrUnsupportedFile) {
		t.Errorf("empty: %v", err)
	}
	if _, err := tr.Transcribe(ctxT(t), llm.File{Name: "a.png", Data: pngBytes(5)}); !errors.Is(err, llm.ErrUnsupportedFile) {
		t.Errorf("picture: %v", err)
	}
	cfg := transcriberConfig(f)
	cfg.MaxAudioBytes = 10
	small, _ := llm.NewTranscriber(cfg, nil, nil)
	_, err = small.Transcribe(ctxT(t), llm.File{Name: "v.mp3", Data: mp3})
	fe := wantFileError(t, err, llm.ErrFileTooLarge)
	mustContain(t, fe.Hint, "max_audio_bytes")
	if len(f.Transcriptions()) != n {
		t.Errorf("refused audio was sent")
	}

	// Wrong model and wrong key.
	cfg = transcriberConfig(f)
	cfg.TranscriptionModel = "nope"
	bad, _ := llm.NewTranscriber(cfg, nil, nil)
	if _, err := bad.Transcribe(ctxT(t), llm.File{Name: "v.mp3", Data: mp3}); !errors.Is(err, llm.ErrModelNotFound) {
		t.Errorf("model: %v", err)
	}
	cfg = transcriberConfig(f)
	cfg.APIKey = "sk-wrong-secret"
	bad, _ = llm.NewTranscriber(cfg, nil, nil)
	_, err = bad.Transcribe(ctxT(t), llm.File{Name: "v.mp3", Data: mp3})
	if !errors.Is(err, llm.ErrUnauthorized) || strings.Contains(err.Error(), "sk-wrong-secret") {
		t.Errorf("key: %v", err)
	}
}

func TestTranscriberCheck(t *testing.T) {
	f := llmtest.NewOpenAI(llmtest.WithModels("gpt-4o-mini", "whisper-1"))
	defer f.Close()
	tr, _ := llm.NewTranscriber(transcriberConfig(f), nil, nil)
	if info, err := tr.Check(ctxT(t)); err != nil || info.Model != "whisper-1" || info.Mode != "transcription" {
		t.Fatalf("Check = %+v, %v", info, err)
	}
	f.SetModels("gpt-4o-mini")
	_, err := tr.Check(ctxT(t))
	var apiErr *llm.APIError
	if !errors.Is(err, llm.ErrModelNotFound) || !errors.As(err, &apiErr) || apiErr.Hint != "check transcription_model" {
		t.Errorf("missing model: %v", err)
	}
	f.SetAPIKey("sk-other")
	if _, err := tr.Check(ctxT(t)); !errors.Is(err, llm.ErrUnauthorized) {
		t.Errorf("bad key: %v", err)
	}
	// A speech server without GET /models passes unverified.
	d := llmtest.NewDify() // answers 404 for /models
	defer d.Close()
	cfg := transcriberConfig(f)
	cfg.BaseURL = d.URL()
	tr, _ = llm.NewTranscriber(cfg, nil, nil)
	if _, err := tr.Check(ctxT(t)); err != nil {
		t.Errorf("no model list: %v", err)
	}
}

func TestTranscriberConfig(t *testing.T) {
	speech := llm.Config{Type: llm.TypeOpenAI, BaseURL: "http://127.0.0.1:9/v1", TranscriptionModel: "sensevoice"}
	if p := speech.Problems(); len(p) != 0 {
		t.Fatalf("speech-only backend: %v", p)
	}
	if _, err := llm.NewTranscriber(speech, nil, nil); err != nil {
		t.Fatalf("NewTranscriber: %v", err)
	}
	if _, err := llm.New(speech, nil, nil); err == nil || !strings.Contains(err.Error(), "transcription_model") {
		t.Errorf("New on a speech-only backend: %v", err)
	}
	if _, err := llm.NewTranscriber(llm.Config{Type: llm.TypeOpenAI, Model: "m"}, nil, nil); err == nil ||
		!strings.Contains(err.Error(), "transcription_model") {
		t.Errorf("NewTranscriber without transcription_model: %v", err)
	}
	if _, err := llm.NewTranscriber(llm.Config{Type: llm.TypeDify, APIKey: "app-x"}, nil, nil); err == nil {
		t.Errorf("NewTranscriber on dify succeeded")
	}
}
