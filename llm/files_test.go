package llm_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
)

// pngBytes is a picture whose content sniffs as image/png.
func pngBytes(n int) []byte {
	b := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), bytes.Repeat([]byte{7}, n)...)
	return b
}

var pdfBytes = []byte("%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n")

func fileCaps(t *testing.T, b llm.Backend) *llm.FileCaps {
	t.Helper()
	fs, ok := b.(llm.FileSupport)
	if !ok {
		t.Fatalf("%T does not implement llm.FileSupport", b)
	}
	caps, err := fs.Capabilities(ctxT(t))
	if err != nil {
		t.Fatalf("Capabilities: %v", err)
	}
	return caps
}

func wantFileError(t *testing.T, err, sentinel error) *llm.FileError {
	t.Helper()
	var fe *llm.FileError
	if !errors.Is(err, sentinel) || !errors.As(err, &fe) {
		t.Fatalf("err = %v, want a *FileError matching %v", err, sentinel)
	}
	return fe
}

func TestDifyUploadsAndReferencesFiles(t *testing.T) {
	for _, mode := range []string{"chat", "workflow", "completion"} {
		t.Run(mode, func(t *testing.T) {
			f := llmtest.NewDify(llmtest.WithApp("kb", mode))
			defer f.Close()
			f.SetFileUpload(llmtest.FileUpload{Enabled: true, Types: []string{"image", "document"}})
			cfg := difyConfig(f)
			cfg.DifyMode = mode
			b, lb := newBackend(t, cfg)
			img := pngBytes(64)
			res, err := b.Stream(ctxT(t), llm.Request{App: "kb", User: "alice", Query: "这张截图里的报错是什么意思？",
				Files: []llm.File{
					{Kind: llm.FileImage, Name: "截图.png", MIME: "image/png", Data: img},
					{Name: "合同.pdf", MIME: "application/pdf", Data: pdfBytes},
				}}, (&collector{}).emit)
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			if res.Answer == "" {
				t.Errorf("empty answer")
			}
			ups := f.UploadsBy("kb:alice")
			if len(ups) != 2 || len(f.Uploads()) != 2 {
				t.Fatalf("uploads %+v", f.Uploads())
			}
			if ups[0].Name != "截图.png" || ups[0].Extension != "png" || ups[0].MIME != "image/png" || !bytes.Equal(ups[0].Data, img) {
				t.Errorf("picture upload %+v", ups[0])
			}
			if ups[1].Name != "合同.pdf" || ups[1].MIME != "application/pdf" || !bytes.Equal(ups[1].Data, pdfBytes) {
				t.Errorf("pdf upload %+v", ups[1])
			}
			reqs := f.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d questions", len(reqs))
			}
			r := reqs[0]
			want := []llmtest.DifyFile{
				{Type: "image", TransferMethod: "local_file", UploadFileID: ups[0].ID},
				{Type: "document", TransferMethod: "local_file", UploadFileID: ups[1].ID},
			}
			if len(r.Files) != 2 || r.Files[0] != want[0] || r.Files[1] != want[1] {
				t.Errorf("files %+v, want %+v", r.Files, want)
			}
			if len(r.Attached) != 2 || r.FilesDropped {
				t.Errorf("attached %d, dropped %v", len(r.Attached), r.FilesDropped)
			}
			// Attachments are never logged, not even their names.
			if strings.Contains(lb.String(), "截图") || strings.Contains(lb.String(), "合同") {
				t.Errorf("log mentions a file name:\n%s", lb.String())
			}
		})
	}
}

func TestDifyRefusesFilesTheAppDoesNotTake(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	b, _ := newBackend(t, difyConfig(f))
	pic := llm.File{Name: "a.png", Data: pngBytes(8)}

	// A fresh app: file upload was never turned on. Dify would drop the
	// picture without a word; the backend refuses before uploading.
	_, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "看图", Files: []llm.File{pic}}, (&collector{}).emit)
	fe := wantFileError(t, err, llm.ErrFileNotAccepted)
	mustContain(t, fe.Hint, "应用编排 → 功能 → 文件上传")
	mustContain(t, fe.Hint, "Features → File upload")
	mustContain(t, fe.Hint, "图片")
	mustContain(t, fe.Reason, "不接受图片")
	if fe.Name != "a.png" || fe.Kind != llm.FileImage || strings.Contains(fe.Error(), "a.png") {
		t.Errorf("file error %+v / %q", fe, fe.Error())
	}
	if len(f.Uploads()) != 0 || len(f.Requests()) != 0 {
		t.Fatalf("sent %d uploads, %d questions", len(f.Uploads()), len(f.Requests()))
	}

	// Pictures only: a PDF is refused with the document checkbox named.
	f.SetFileUpload(llmtest.FileUpload{Enabled: true, Types: []string{"image"}, NumberLimits: 2})
	b, _ = newBackend(t, difyConfig(f)) // a new backend: no cached setting
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q",
		Files: []llm.File{{Name: "x.pdf", Data: pdfBytes}}}, (&collector{}).emit)
	fe = wantFileError(t, err, llm.ErrFileNotAccepted)
	mustContain(t, fe.Hint, "文档")

	// Too many.
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q", Files: []llm.File{pic, pic, pic}}, (&collector{}).emit)
	fe = wantFileError(t, err, llm.ErrTooManyFiles)
	if fe.Limit != 2 {
		t.Errorf("limit %d", fe.Limit)
	}
	// Empty.
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q", Files: []llm.File{{Name: "e.png"}}}, (&collector{}).emit)
	wantFileError(t, err, llm.ErrUnsupportedFile)
	if len(f.Uploads()) != 0 || len(f.Requests()) != 0 {
		t.Fatalf("sent %d uploads, %d questions", len(f.Uploads()), len(f.Requests()))
	}
}

// The setting changed in Dify after the backend read it: Dify's own check
// refuses the question, and that maps to the same sentinel and hint.
func TestDifyServerSideFileChecks(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	f.SetFileUpload(llmtest.FileUpload{Enabled: true, Types: []string{"image"}})
	b, _ := newBackend(t, difyConfig(f))
	_ = fileCaps(t, b) // cached for a minute
	f.SetFileUpload(llmtest.FileUpload{Enabled: true, Types: []string{"document"}})
	_, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q",
		Files: []llm.File{{Name: "a.png", Data: pngBytes(8)}}}, (&collector{}).emit)
	var apiErr *llm.APIError
	if !errors.As(err, &apiErr) || !errors.Is(err, llm.ErrFileNotAccepted) || apiErr.Status != 400 || apiErr.Code != "invalid_param" {
		t.Fatalf("err = %v", err)
	}
	mustContain(t, apiErr.Hint, "文件上传")
	mustContain(t, apiErr.Message, "File validation failed")
	if strings.Contains(err.Error(), "a.png") {
		t.Errorf("error names the file: %v", err)
	}
	if n := len(f.Requests()); n != 1 {
		t.Errorf("a 400 was retried: %d questions", n)
	}

	f.SetFileUpload(llmtest.FileUpload{Enabled: true, NumberLimits: 5})
	_ = fileCaps(t, b)
	f.SetFileUpload(llmtest.FileUpload{Enabled: true, NumberLimits: 1})
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q",
		Files: []llm.File{{Name: "a.pdf", Data: pdfBytes}, {Name: "b.pdf", Data: pdfBytes}}}, (&collector{}).emit)
	if !errors.Is(err, llm.ErrTooManyFiles) {
		t.Fatalf("err = %v", err)
	}
}

func TestDifyUploadErrors(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	f.SetFileUpload(llmtest.FileUpload{Enabled: true})
	f.SetUploadLimit("image", 100) // under 1 MB: /parameters cannot say it
	f.BlockExtensions("exe")
	b, _ := newBackend(t, difyConfig(f))

	_, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q",
		Files: []llm.File{{Name: "big.png", Data: pngBytes(200)}}}, (&collector{}).emit)
	var apiErr *llm.APIError
	if !errors.As(err, &apiErr) || !errors.Is(err, llm.ErrFileTooLarge) || apiErr.Status != 413 || apiErr.Code != "file_too_large" {
		t.Fatalf("err = %v", err)
	}
	mustContain(t, apiErr.Hint, "上传大小限制")

	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q",
		Files: []llm.File{{Kind: llm.FileDocument, Name: "setup.exe", Data: []byte("MZ....")}}}, (&collector{}).emit)
	if !errors.As(err, &apiErr) || !errors.Is(err, llm.ErrUnsupportedFile) || apiErr.Status != 415 {
		t.Fatalf("err = %v", err)
	}
	mustContain(t, apiErr.Hint, "UPLOAD_FILE_EXTENSION_BLACKLIST")
	if len(f.Requests()) != 0 {
		t.Errorf("a question was sent after a failed upload")
	}

	// A limit /parameters does state is applied before uploading.
	f.SetUploadLimit("document", 1<<20)
	b, _ = newBackend(t, difyConfig(f))
	_, err = b.Stream(ctxT(t), llm.Request{User: "u", Query: "q",
		Files: []llm.File{{Name: "big.pdf", Data: bytes.Repeat([]byte("x"), 1<<20+1)}}}, (&collector{}).emit)
	fe := wantFileError(t, err, llm.ErrFileTooLarge)
	if fe.Limit != 1<<20 {
		t.Errorf("limit %d", fe.Limit)
	}
}

func TestDifyUploadRetriedOnServerError(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	f.SetFileUpload(llmtest.FileUpload{Enabled: true})
	b, _ := newBackend(t, difyConfig(f))
	// The scripts are consumed by questions only; a 5xx on the question
	// is retried with the same upload ids, not uploaded again.
	f.Push(llmtest.Script{Status: 503})
	_, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q",
		Files: []llm.File{{Name: "a.png", Data: pngBytes(8)}}}, (&collector{}).emit)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	reqs := f.Requests()
	if len(f.Uploads()) != 1 || len(reqs) != 2 || reqs[1].Files[0].UploadFileID != f.Uploads()[0].ID {
		t.Errorf("%d uploads, %d questions", len(f.Uploads()), len(reqs))
	}
}

func TestDifyCapabilities(t *testing.T) {
	f := llmtest.NewDify()
	defer f.Close()
	b, _ := newBackend(t, difyConfig(f))
	kinds := func(c *llm.FileCaps) string {
		var s []string
		for _, k := range c.Kinds {
			s = append(s, string(k))
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		name    string
		fu      llmtest.FileUpload
		enabled bool
		kinds   string
		custom  string
		max     int
		legacy  bool
	}{
		{"fresh app", llmtest.FileUpload{Legacy: true}, false, "", "", 0, true},
		{"legacy pictures", llmtest.FileUpload{Legacy: true, Enabled: true, NumberLimits: 4}, false, "", "", 0, true},
		{"legacy remote only", llmtest.FileUpload{Legacy: true, Enabled: true, Methods: []string{"remote_url"}}, false, "", "", 0, true},
		{"all types", llmtest.FileUpload{Enabled: true}, true, "image,document,audio,video", "", 3, false},
		{"some types", llmtest.FileUpload{Enabled: true, Types: []string{"document", "image"}, NumberLimits: 5}, true, "image,document", "", 5, false},
		{"custom", llmtest.FileUpload{Enabled: true, Types: []string{"custom"}, Extensions: []string{".PDF", "DOCX"}}, true, "", ".pdf,.docx", 3, false},
		{"off", llmtest.FileUpload{Enabled: false, Types: []string{"image"}}, false, "", "", 0, false},
		{"remote only", llmtest.FileUpload{Enabled: true, Methods: []string{"remote_url"}}, false, "", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.SetFileUpload(tt.fu)
			c := fileCaps(t, b)
			if c.Backend != "dify" || c.Enabled != tt.enabled || kinds(c) != tt.kinds || strings.Join(c.CustomExtensions, ",") != tt.custom ||
				c.MaxFiles != tt.max || c.Legacy != tt.legacy {
				t.Errorf("caps %+v", c)
			}
			if c.MaxBytes[llm.FileImage] != 10<<20 || c.MaxBytes[llm.FileDocument] != 15<<20 ||
				c.MaxBytes[llm.FileAudio] != 50<<20 || c.MaxBytes[llm.FileVideo] != 100<<20 {
				t.Errorf("sizes %v", c.MaxBytes)
			}
			mustContain(t, c.Setting, "文件上传")
			if tt.name == "remote only" {
				mustContain(t, c.Setting, "本地上传")
			}
			if tt.name == "legacy pictures" {
				mustContain(t, c.Setting, "旧版设置")
			}
		})
	}

	// A custom extension lets a file of an unlisted kind through as
	// "custom".
	f.SetFileUpload(llmtest.FileUpload{Enabled: true, Types: []string{"image", "custom"}, Extensions: []string{".pdf"}})
	b, _ = newBackend(t, difyConfig(f))
	if _, err := b.Stream(ctxT(t), llm.Request{User: "u", Query: "q",
		Files: []llm.File{{Name: "a.pdf", Data: pdfBytes}}}, (&collector{}).emit); err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if r := f.Requests()[0]; len(r.Files) != 1 || r.Files[0].Type != "custom" || len(r.Attached) != 1 {
		t.Errorf("request files %+v", r.Files)
	}

	// Other shapes: numbers as strings, no file_upload at all, not JSON.
	f.SetParametersBody(`{"file_upload":{"enabled":true,"allowed_file_types":["image"],"number_limits":"6"},"system_parameters":{"image_file_size_limit":"2"}}`)
	c := fileCaps(t, b)
	if !c.Enabled || c.MaxFiles != 6 || c.MaxBytes[llm.FileImage] != 2<<20 {
		t.Errorf("string numbers: %+v", c)
	}
	f.SetParametersBody(`{"opening_statement":""}`)
	if c := fileCaps(t, b); c.Enabled {
		t.Errorf("no file_upload: %+v", c)
	}
	f.SetParametersBody(`<html>oops</html>`)
	_, err := b.(llm.FileSupport).Capabilities(ctxT(t))
	var apiErr *llm.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != "bad_response" {
		t.Errorf("html: %v", err)
	}
	f.SetAPIKey("app-other")
	if _, err := b.(llm.FileSupport).Capabilities(ctxT(t)); !errors.Is(err, llm.ErrUnauthorized) {
		t.Errorf("bad key: %v", err)
	}
}

func TestDetectKind(t *testing.T) {
	tests := []struct {
		name, mime string
		want       llm.FileKind
	}{
		{"a.PNG", "", llm.FileImage},
		{"a.jpeg", "application/octet-stream", llm.FileImage},
		{"voice.amr", "", llm.FileAudio},
		{"clip.mp4", "", llm.FileVideo},
		{"合同.pdf", "", llm.FileDocument},
		{"notes.md", "", llm.FileDocument},
		{"", "image/webp", llm.FileImage},
		{"x", "audio/amr", llm.FileAudio},
		{"blob", "application/zip", llm.FileDocument},
	}
	for _, tt := range tests {
		if got := llm.DetectKind(tt.name, tt.mime); got != tt.want {
			t.Errorf("DetectKind(%q, %q) = %q, want %q", tt.name, tt.mime, got, tt.want)
		}
	}
}

// BenchmarkDifyPictureQuestion reports what a picture adds to a Dify
// question on loopback: the /parameters read (cached after the first),
// the multipart upload of a 1 MB picture and the question itself.
func BenchmarkDifyPictureQuestion(b *testing.B) {
	f := llmtest.NewDify()
	defer f.Close()
	f.SetFileUpload(llmtest.FileUpload{Enabled: true, Types: []string{"image"}})
	be, err := llm.New(difyConfig(f), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	pic := llm.File{Name: "photo.png", Data: pngBytes(1 << 20)}
	ctx := b.Context()
	b.SetBytes(int64(len(pic.Data)))
	for b.Loop() {
		if _, err := be.Stream(ctx, llm.Request{User: "u", Query: "q", Files: []llm.File{pic}}, func(llm.Delta) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
