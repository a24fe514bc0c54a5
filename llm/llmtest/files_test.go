package llmtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/wecom-bridge/wecom-bridge/llm"
)

// multipartBody builds a form with the given files (field, name, data)
// and fields.
func multipartBody(t *testing.T, files [][3]string, fields map[string]string) (io.Reader, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, f := range files {
		w, err := mw.CreateFormFile(f[0], f[1])
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(f[2]))
	}
	for k, v := range fields {
		_ = mw.WriteField(k, v)
	}
	_ = mw.Close()
	return &b, mw.FormDataContentType()
}

func post(t *testing.T, url, key, contentType string, body io.Reader) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, body)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDifyUploadEndpoint(t *testing.T) {
	d := NewDify()
	defer d.Close()
	upload := func(files [][3]string, fields map[string]string) (int, string) {
		body, ct := multipartBody(t, files, fields)
		return post(t, d.URL()+"/files/upload", "app-llmtest", ct, body)
	}
	status, body := upload([][3]string{{"file", "发票.PNG", "\x89PNG"}}, map[string]string{"user": "kb:alice"})
	if status != 201 {
		t.Fatalf("status %d: %s", status, body)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	// The documented shape, keys in Dify's order.
	for i, k := range []string{`{"id":`, `,"name":"发票.PNG"`, `,"size":4`, `,"extension":"png"`, `,"mime_type":"application/octet-stream"`,
		`,"created_by":`, `,"created_at":`, `,"preview_url":null`, `,"source_url":`} {
		if !strings.Contains(body, k) {
			t.Errorf("key %d %s missing from %s", i, k, body)
		}
	}
	ups := d.Uploads()
	if len(ups) != 1 || ups[0].ID != out["id"] || ups[0].User != "kb:alice" || string(ups[0].Data) != "\x89PNG" {
		t.Fatalf("uploads %+v", ups)
	}
	_, body2 := upload([][3]string{{"file", "b.txt", "x"}}, map[string]string{"user": "kb:alice"})
	_, body3 := upload([][3]string{{"file", "c.txt", "x"}}, nil)
	var o2, o3 map[string]any
	_ = json.Unmarshal([]byte(body2), &o2)
	_ = json.Unmarshal([]byte(body3), &o3)
	if o2["created_by"] != out["created_by"] || o3["created_by"] == out["created_by"] {
		t.Errorf("created_by: %v %v %v", out["created_by"], o2["created_by"], o3["created_by"])
	}
	if got := d.UploadsBy("DEFAULT-USER"); len(got) != 1 {
		t.Errorf("no user: %+v", got)
	}

	for _, tt := range []struct {
		name   string
		files  [][3]string
		status int
		code   string
	}{
		{"no file", nil, 400, "no_file_uploaded"},
		{"wrong field", [][3]string{{"upload", "a.txt", "x"}}, 400, "no_file_uploaded"},
		{"two files", [][3]string{{"file", "a.txt", "x"}, {"file", "b.txt", "y"}}, 400, "too_many_files"},
		{"no name", [][3]string{{"file", "", "x"}}, 400, "filename_not_exists_error"},
	} {
		status, body := upload(tt.files, map[string]string{"user": "u"})
		if status != tt.status || !strings.Contains(body, `"code":"`+tt.code+`"`) {
			t.Errorf("%s: %d %s", tt.name, status, body)
		}
	}
	status, body = post(t, d.URL()+"/files/upload", "app-wrong", "multipart/form-data", strings.NewReader(""))
	if status != 401 {
		t.Errorf("bad key: %d %s", status, body)
	}
}

func TestDifyQuestionFiles(t *testing.T) {
	d := NewDify()
	defer d.Close()
	up := func(user, name string) string {
		body, ct := multipartBody(t, [][3]string{{"file", name, "data"}}, map[string]string{"user": user})
		_, out := post(t, d.URL()+"/files/upload", "app-llmtest", ct, body)
		var o struct{ ID string }
		_ = json.Unmarshal([]byte(out), &o)
		return o.ID
	}
	ask := func(user string, files ...DifyFile) (int, string) {
		b, _ := json.Marshal(map[string]any{"inputs": map[string]any{}, "query": "q", "user": user,
			"response_mode": "streaming", "files": files})
		return post(t, d.URL()+"/chat-messages", "app-llmtest", "application/json", bytes.NewReader(b))
	}
	alice := up("alice", "a.png")
	pdf := up("alice", "a.pdf")
	bob := up("bob", "b.png")
	ref := func(typ, id string) DifyFile {
		return DifyFile{Type: typ, TransferMethod: "local_file", UploadFileID: id}
	}

	// Upload off (a fresh app): Dify drops the files and answers anyway.
	status, body := ask("alice", ref("image", alice))
	if status != 200 || !strings.Contains(body, "message_end") {
		t.Fatalf("upload off: %d %s", status, body)
	}
	if r := d.Requests()[0]; !r.FilesDropped || len(r.Attached) != 0 || len(r.Files) != 1 {
		t.Errorf("upload off: %+v", r)
	}

	d.SetFileUpload(FileUpload{Enabled: true, Types: []string{"image"}, NumberLimits: 2})
	for _, tt := range []struct {
		name  string
		user  string
		files []DifyFile
		msg   string
	}{
		{"another user's upload", "alice", []DifyFile{ref("image", bob)}, "Invalid upload file"},
		{"unknown id", "alice", []DifyFile{ref("image", newUUID())}, "Invalid upload file"},
		{"not a uuid", "alice", []DifyFile{ref("image", "123")}, "Invalid upload file id format"},
		{"no id", "alice", []DifyFile{ref("image", "")}, "Invalid upload file id"},
		{"type not allowed", "alice", []DifyFile{ref("document", pdf)}, "File validation failed for file: a.pdf"},
		{"custom without extensions", "alice", []DifyFile{ref("custom", pdf)}, "File validation failed for file: a.pdf"},
		{"too many pictures", "alice", []DifyFile{ref("image", alice), ref("image", alice), ref("image", alice)},
			"Number of image files exceeds the maximum limit 2"},
	} {
		status, body := ask(tt.user, tt.files...)
		if status != 400 || !strings.Contains(body, `"code":"invalid_param","message":"`+tt.msg+`"`) {
			t.Errorf("%s: %d %s", tt.name, status, body)
		}
	}
	status, body = ask("alice", ref("image", alice), DifyFile{}) // an empty mapping is skipped
	if status != 200 {
		t.Fatalf("accepted: %d %s", status, body)
	}
	reqs := d.Requests()
	if r := reqs[len(reqs)-1]; len(r.Attached) != 1 || r.Attached[0].ID != alice || r.FilesDropped {
		t.Errorf("accepted: %+v", r)
	}

	// GET /parameters follows the setting.
	req, _ := http.NewRequest(http.MethodGet, d.URL()+"/parameters", nil)
	req.Header.Set("Authorization", "Bearer app-llmtest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`"file_upload":{"image":{"enabled":true,"number_limits":2,"transfer_methods":["remote_url","local_file"]},"enabled":true,"allowed_file_types":["image"],"allowed_file_extensions":[],"allowed_file_upload_methods":["remote_url","local_file"],"number_limits":2}`,
		`"system_parameters":{"image_file_size_limit":10,"video_file_size_limit":100,"audio_file_size_limit":50,"file_size_limit":15,"workflow_file_upload_limit":10}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("parameters %s\nmissing %s", b, want)
		}
	}
}

func TestOpenAIContentParts(t *testing.T) {
	f := NewOpenAI()
	defer f.Close()
	chat := func(content any, role string) (int, string) {
		b, _ := json.Marshal(map[string]any{"model": "gpt-4o-mini", "stream": true,
			"messages": []any{map[string]any{"role": role, "content": content}}})
		return post(t, f.URL()+"/chat/completions", "sk-llmtest", "application/json", bytes.NewReader(b))
	}
	png := "data:image/png;base64," + base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\n...."))
	parts := []any{map[string]any{"type": "text", "text": "看这个"},
		map[string]any{"type": "image_url", "image_url": map[string]any{"url": png, "detail": "low"}}}
	status, body := chat(parts, "user")
	if status != 200 || !strings.Contains(body, "看这个") {
		t.Fatalf("%d %s", status, body)
	}
	m := f.Requests()[0].Messages[0]
	if m.Content != "看这个" || len(m.Parts) != 2 || len(m.Images()) != 1 || m.Images()[0].Detail != "low" {
		t.Fatalf("message %+v", m)
	}
	if mt, data, ok := m.Images()[0].DataURI(); !ok || mt != "image/png" || !bytes.HasPrefix(data, []byte("\x89PNG")) {
		t.Errorf("data uri %q %v", mt, ok)
	}
	bmp := "data:image/bmp;base64," + base64.StdEncoding.EncodeToString([]byte("BM...."))
	lying := "data:image/png;base64," + base64.StdEncoding.EncodeToString([]byte("not a picture"))
	for _, tt := range []struct {
		name    string
		content any
		role    string
		msg     string
	}{
		{"system image", parts, "system", "only allowed for messages with role 'user'"},
		{"bmp", []any{map[string]any{"type": "image_url", "image_url": map[string]any{"url": bmp}}}, "user", "unsupported MIME type 'image/bmp'"},
		{"not an image", []any{map[string]any{"type": "image_url", "image_url": map[string]any{"url": lying}}}, "user", "unsupported image"},
		{"bad url", []any{map[string]any{"type": "image_url", "image_url": map[string]any{"url": "data:xx"}}}, "user", "invalid format"},
		{"bad type", []any{map[string]any{"type": "video"}}, "user", "Supported values"},
	} {
		status, body := chat(tt.content, tt.role)
		if status != 400 || !strings.Contains(body, tt.msg) {
			t.Errorf("%s: %d %s", tt.name, status, body)
		}
	}

	g := NewOpenAI(WithoutVision())
	defer g.Close()
	b, _ := json.Marshal(map[string]any{"model": "gpt-4o-mini", "stream": true,
		"messages": []any{map[string]any{"role": "user", "content": parts}}})
	status, body = post(t, g.URL()+"/chat/completions", "sk-llmtest", "application/json", bytes.NewReader(b))
	if status != 400 || !strings.Contains(body, "image_url is only supported by certain models") {
		t.Errorf("no vision: %d %s", status, body)
	}
}

func TestOpenAITranscriptionEndpoint(t *testing.T) {
	f := NewOpenAI(WithTranscriptionModels("whisper-1", "sensevoice"))
	defer f.Close()
	send := func(files [][3]string, fields map[string]string) (int, string) {
		body, ct := multipartBody(t, files, fields)
		return post(t, f.URL()+"/audio/transcriptions", "sk-llmtest", ct, body)
	}
	voice := [][3]string{{"file", "v.wav", "RIFF"}}
	status, body := send(voice, map[string]string{"model": "sensevoice"})
	if status != 200 || body != `{"text":"llmtest: 4 bytes of audio"}`+"\n" {
		t.Errorf("default: %d %q", status, body)
	}
	f.PushTranscript("你好")
	status, body = send(voice, map[string]string{"model": "whisper-1", "response_format": "text"})
	if status != 200 || body != "你好\n" {
		t.Errorf("text: %d %q", status, body)
	}
	for _, tt := range []struct {
		name   string
		files  [][3]string
		fields map[string]string
		status int
		msg    string
	}{
		{"amr", [][3]string{{"file", "v.amr", "#!AMR"}}, map[string]string{"model": "whisper-1"}, 400, "Invalid file format"},
		{"no file", nil, map[string]string{"model": "whisper-1"}, 400, "field required"},
		{"no model", voice, nil, 400, "model"},
		{"unknown model", voice, map[string]string{"model": "x"}, 404, "model_not_found"},
		{"empty", [][3]string{{"file", "v.wav", ""}}, map[string]string{"model": "whisper-1"}, 400, "empty"},
	} {
		status, body := send(tt.files, tt.fields)
		if status != tt.status || !strings.Contains(body, tt.msg) {
			t.Errorf("%s: %d %s", tt.name, status, body)
		}
	}
	if n := len(f.Transcriptions()); n != 7 {
		t.Errorf("%d transcriptions recorded", n)
	}
}

func TestBackendCapabilities(t *testing.T) {
	b := NewBackend()
	ctx := context.Background()
	caps, err := b.Capabilities(ctx)
	if err != nil || !caps.Accepts(llm.FileImage) {
		t.Fatalf("default caps %+v, %v", caps, err)
	}
	pic := llm.File{Name: "a.png", Data: []byte{1}}
	if _, err := b.Stream(ctx, llm.Request{User: "u", Query: "q", Files: []llm.File{pic}}, func(llm.Delta) error { return nil }); err != nil {
		t.Fatal(err)
	}
	b.SetCapabilities(&llm.FileCaps{Backend: "dify", Setting: "S"}, nil)
	_, err = b.Stream(ctx, llm.Request{User: "u", Query: "q", Files: []llm.File{pic}}, func(llm.Delta) error { return nil })
	if !errors.Is(err, llm.ErrFileNotAccepted) {
		t.Fatalf("err = %v", err)
	}
	if got := b.Requests(); len(got) != 2 || len(got[0].Files) != 1 {
		t.Errorf("requests %+v", got)
	}
}
