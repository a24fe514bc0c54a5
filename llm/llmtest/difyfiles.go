package llmtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"
)

// FileUpload is a Dify app's Features → File upload setting, as GET
// /parameters reports it in file_upload and as POST /chat-messages (and
// /workflows/run, /completion-messages) applies it to a question's files.
type FileUpload struct {
	// Enabled turns file upload on.
	Enabled bool
	// Types is allowed_file_types: "image", "document", "audio", "video",
	// "custom". Empty allows every type, as in Dify.
	Types []string
	// Extensions is allowed_file_extensions, used for "custom" files,
	// e.g. ".PDF" (compared without regard to case).
	Extensions []string
	// Methods is allowed_file_upload_methods (default local_file and
	// remote_url).
	Methods []string
	// NumberLimits is the most files per question (default 3).
	NumberLimits int
	// Legacy renders only the older form {"image": {"enabled": ...}} that
	// apps from before file types had, and that a fresh app reports
	// before its file upload was ever touched. Current Dify reads only the
	// top-level enabled, so with Legacy files are always dropped.
	Legacy bool
}

// DifyFile is one entry of a question's "files" as received.
type DifyFile struct {
	Type           string `json:"type"`
	TransferMethod string `json:"transfer_method"`
	UploadFileID   string `json:"upload_file_id"`
	URL            string `json:"url"`
}

// Upload is one file received by POST /files/upload.
type Upload struct {
	ID        string
	User      string // the form's user; "DEFAULT-USER" when it was left out, as in Dify
	Name      string
	Extension string // lower case, without the dot, as Dify stores it
	MIME      string // the part's Content-Type
	Size      int
	Data      []byte
	CreatedAt int64
}

// Dify's default upload size limits (UPLOAD_*_FILE_SIZE_LIMIT, MB).
const (
	difyImageLimitMB = 10
	difyAudioLimitMB = 50
	difyVideoLimitMB = 100
	difyFileLimitMB  = 15
)

// Extension lists as Dify classifies uploads (api/constants).
var (
	difyImageExts = []string{"jpg", "jpeg", "png", "webp", "gif", "svg"}
	difyVideoExts = []string{"mp4", "mov", "mpeg", "webm"}
	difyAudioExts = []string{"mp3", "m4a", "wav", "amr", "mpga"}
)

func difyKindOfExt(ext string) string {
	switch {
	case slices.Contains(difyImageExts, ext):
		return "image"
	case slices.Contains(difyVideoExts, ext):
		return "video"
	case slices.Contains(difyAudioExts, ext):
		return "audio"
	}
	return "document"
}

// SetFileUpload changes the app's file upload setting.
func (d *Dify) SetFileUpload(fu FileUpload) {
	d.mu.Lock()
	d.fileUpload = fu
	d.paramsBody = ""
	d.mu.Unlock()
}

// SetParametersBody makes GET /parameters answer with body verbatim (for
// shapes from other Dify versions). Questions still follow the
// FileUpload setting.
func (d *Dify) SetParametersBody(body string) {
	d.mu.Lock()
	d.paramsBody = body
	d.mu.Unlock()
}

// SetUploadLimit sets the upload size limit in bytes for a kind ("image",
// "audio", "video", "document"), like Dify's UPLOAD_*_FILE_SIZE_LIMIT.
// Defaults: 10, 50, 100 and 15 MB.
func (d *Dify) SetUploadLimit(kind string, bytes int64) {
	d.mu.Lock()
	d.uploadLimits[kind] = bytes
	d.mu.Unlock()
}

// BlockExtensions refuses uploads with these extensions (no dot) with 415
// unsupported_file_type, like Dify's UPLOAD_FILE_EXTENSION_BLACKLIST.
func (d *Dify) BlockExtensions(exts ...string) {
	d.mu.Lock()
	for _, e := range exts {
		d.blockedExts = append(d.blockedExts, strings.ToLower(strings.TrimPrefix(e, ".")))
	}
	d.mu.Unlock()
}

// Uploads returns the files uploaded so far, in order, by any user.
func (d *Dify) Uploads() []Upload {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Upload, len(d.uploadOrder))
	for i, id := range d.uploadOrder {
		out[i] = *d.uploads[id]
	}
	return out
}

// UploadsBy returns the files uploaded by user, in order.
func (d *Dify) UploadsBy(user string) []Upload {
	var out []Upload
	for _, u := range d.Uploads() {
		if u.User == user {
			out = append(out, u)
		}
	}
	return out
}

// endUserID returns the stable EndUser uuid Dify keeps for an API user.
// The caller holds d.mu.
func (d *Dify) endUserID(user string) string {
	id, ok := d.endUsers[user]
	if !ok {
		id = newUUID()
		d.endUsers[user] = id
	}
	return id
}

func (d *Dify) serveUpload(w http.ResponseWriter, r *http.Request) {
	if !d.authorized(w, r) {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 256<<20)
	// Read the parts by hand: like werkzeug, a part with a filename
	// parameter is a file even when the name is empty.
	type filePart struct {
		field, name, mime string
		data              []byte
	}
	var (
		files []filePart
		user  string
	)
	mr, err := r.MultipartReader()
	for err == nil {
		var p *multipart.Part
		p, err = mr.NextPart()
		if err != nil {
			break
		}
		data, rerr := io.ReadAll(p)
		if rerr != nil {
			err = rerr
			break
		}
		if strings.Contains(p.Header.Get("Content-Disposition"), "filename=") {
			files = append(files, filePart{field: p.FormName(), name: p.FileName(), mime: p.Header.Get("Content-Type"), data: data})
		} else if p.FormName() == "user" {
			user = string(data)
		}
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		difyError(w, 413, "file_too_large", "", "")
		return
	}
	var file *filePart
	for i := range files {
		if files[i].field == "file" {
			file = &files[i]
		}
	}
	switch {
	case file == nil:
		// Flask also sees no files in a body it cannot parse.
		difyError(w, 400, "no_file_uploaded", "Please upload your file.", "")
		return
	case len(files) > 1:
		difyError(w, 400, "too_many_files", "Only one file is allowed.", "")
		return
	case file.name == "":
		difyError(w, 400, "filename_not_exists_error", "The specified filename does not exist.", "")
		return
	}
	if user == "" {
		user = "DEFAULT-USER"
	}
	ext := strings.ToLower(strings.TrimPrefix(path.Ext(file.name), "."))
	data := file.data

	d.mu.Lock()
	blocked := slices.Contains(d.blockedExts, ext)
	limit := d.uploadLimits[difyKindOfExt(ext)]
	d.mu.Unlock()
	switch {
	case blocked:
		difyError(w, 415, "unsupported_file_type", "File type not allowed.", "")
		return
	case limit > 0 && int64(len(data)) > limit:
		difyError(w, 413, "file_too_large", "", "")
		return
	}
	up := &Upload{ID: newUUID(), User: user, Name: file.name, Extension: ext, MIME: file.mime,
		Size: len(data), Data: data, CreatedAt: time.Now().Unix()}
	d.mu.Lock()
	d.uploads[up.ID] = up
	d.uploadOrder = append(d.uploadOrder, up.ID)
	createdBy := d.endUserID(user)
	d.mu.Unlock()
	preview := d.srv.URL + "/files/" + up.ID + "/file-preview?timestamp=" + fmt.Sprint(up.CreatedAt) +
		"&nonce=" + newUUID()[:8] + "&sign=llmtest"
	writeJSON(w, http.StatusCreated, render(styleCompact, object{{"id", up.ID}, {"name", up.Name}, {"size", up.Size},
		{"extension", up.Extension}, {"mime_type", up.MIME}, {"created_by", createdBy}, {"created_at", up.CreatedAt},
		{"preview_url", nil}, {"source_url", preview}})+"\n", "")
}

// fileUploadObject renders file_upload for GET /parameters.
func (fu FileUpload) object() object {
	methods := fu.Methods
	if methods == nil {
		methods = []string{"remote_url", "local_file"}
	}
	n := fu.NumberLimits
	if n == 0 {
		n = 3
	}
	if fu.Legacy {
		return object{{"image", object{{"enabled", fu.Enabled}, {"number_limits", n}, {"detail", "high"},
			{"transfer_methods", methods}}}}
	}
	types, exts := fu.Types, fu.Extensions
	if types == nil {
		types = []string{}
	}
	if exts == nil {
		exts = []string{}
	}
	return object{{"image", object{{"enabled", fu.Enabled && (len(types) == 0 || slices.Contains(types, "image"))},
		{"number_limits", n}, {"transfer_methods", methods}}},
		{"enabled", fu.Enabled}, {"allowed_file_types", types}, {"allowed_file_extensions", exts},
		{"allowed_file_upload_methods", methods}, {"number_limits", n}}
}

func (d *Dify) serveParameters(w http.ResponseWriter, r *http.Request) {
	if !d.authorized(w, r) {
		return
	}
	d.mu.Lock()
	fu, raw, lim := d.fileUpload, d.paramsBody, d.uploadLimits
	mb := func(k string) int { return int(lim[k] >> 20) }
	sys := object{{"image_file_size_limit", mb("image")}, {"video_file_size_limit", mb("video")},
		{"audio_file_size_limit", mb("audio")}, {"file_size_limit", mb("document")}, {"workflow_file_upload_limit", 10}}
	d.mu.Unlock()
	if raw != "" {
		writeJSON(w, 200, raw, "")
		return
	}
	writeJSON(w, 200, render(styleCompact, object{{"opening_statement", ""}, {"suggested_questions", []string{}},
		{"suggested_questions_after_answer", object{{"enabled", false}}}, {"speech_to_text", object{{"enabled", false}}},
		{"text_to_speech", object{{"enabled", false}}}, {"retriever_resource", object{{"enabled", false}}},
		{"annotation_reply", object{{"enabled", false}}}, {"more_like_this", object{{"enabled", false}}},
		{"user_input_form", []any{}}, {"sensitive_word_avoidance", object{{"enabled", false}}},
		{"file_upload", fu.object()}, {"system_parameters", sys}})+"\n", "")
}

// checkFiles applies the app's file upload setting to a question's files
// as Dify's file factory does. With file upload off Dify drops the files
// without a word (dropped is true); otherwise a file that fails a check is
// a 400 invalid_param, returned as its message.
func (d *Dify) checkFiles(user string, raw json.RawMessage) (files []DifyFile, accepted []Upload, dropped bool, msg string) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil, false, ""
	}
	if err := json.Unmarshal(raw, &files); err != nil {
		return nil, nil, false, "files: Input should be a valid list"
	}
	d.mu.Lock()
	fu := d.fileUpload
	uploads := d.uploads
	d.mu.Unlock()
	types, methods := fu.Types, fu.Methods
	if !fu.Enabled || fu.Legacy {
		return files, nil, len(files) > 0, ""
	}
	limit := fu.NumberLimits
	if limit == 0 {
		limit = 3
	}
	images := 0
	for _, f := range files {
		if f.TransferMethod == "" {
			continue // Dify skips mappings without a transfer method
		}
		if f.TransferMethod != "local_file" {
			return files, nil, false, "llmtest: only local_file transfers are faked"
		}
		switch {
		case f.UploadFileID == "":
			return files, nil, false, "Invalid upload file id"
		case !isUUID(f.UploadFileID):
			return files, nil, false, "Invalid upload file id format"
		}
		d.mu.Lock()
		up, ok := uploads[f.UploadFileID]
		var u Upload
		if ok {
			u = *up
		}
		d.mu.Unlock()
		// The docs: only requests with the same user can reference a file.
		if !ok || u.User != user {
			return files, nil, false, "Invalid upload file"
		}
		typ := f.Type
		if typ == "" {
			typ = "custom"
		}
		valid := true
		if len(types) > 0 && !slices.Contains(types, typ) && typ != "custom" {
			valid = false
		}
		if typ == "custom" && !slices.ContainsFunc(fu.Extensions, func(e string) bool {
			return strings.EqualFold(strings.TrimPrefix(e, "."), u.Extension)
		}) {
			valid = false
		}
		if len(methods) > 0 && !slices.Contains(methods, "local_file") {
			valid = false
		}
		if !valid {
			return files, nil, false, "File validation failed for file: " + u.Name
		}
		if typ == "image" {
			images++
		}
		accepted = append(accepted, u)
	}
	if images > limit {
		return files, nil, false, fmt.Sprintf("Number of image files exceeds the maximum limit %d", limit)
	}
	if len(accepted) > limit {
		return files, nil, false, fmt.Sprintf("Number of files exceeds the maximum limit %d", limit)
	}
	return files, accepted, false, ""
}
