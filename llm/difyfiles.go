package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// difyFileSetting is where a Dify app's attachments are turned on.
const difyFileSetting = "Dify 应用编排 → 功能 → 文件上传（Studio → app → Features → File upload）"

// difyCapsTTL is how long a /parameters answer is reused by Stream, so an
// operator who turns file upload on sees it work within a minute.
const difyCapsTTL = time.Minute

// maxParametersBody bounds the GET /parameters body (it carries the app's
// whole input form).
const maxParametersBody = 1 << 20

var _ FileSupport = (*dify)(nil)

// Capabilities implements FileSupport: it reads GET /parameters and
// reports the app's file_upload setting.
func (d *dify) Capabilities(ctx context.Context) (*FileCaps, error) {
	caps, err := d.fetchCaps(ctx)
	return caps, scrub(err, d.cfg.APIKey)
}

func (d *dify) fetchCaps(ctx context.Context) (*FileCaps, error) {
	body, err := d.get(ctx, "/parameters", maxParametersBody)
	if err != nil {
		return nil, err
	}
	caps, err := parseDifyParameters(body)
	if err != nil {
		return nil, &APIError{Backend: TypeDify, Status: http.StatusOK, Code: "bad_response",
			Message: "GET /parameters did not return the expected JSON: " + err.Error(),
			Hint:    "check base_url (it usually ends in /v1)", kind: ErrEndpointNotFound}
	}
	d.capsMu.Lock()
	d.caps, d.capsAt = caps, time.Now()
	d.capsMu.Unlock()
	return caps, nil
}

// cachedCaps returns a recent /parameters answer, fetching a new one when
// it is older than difyCapsTTL. It returns nil when the fetch fails; the
// upload and question then proceed and Dify judges.
func (d *dify) cachedCaps(ctx context.Context) *FileCaps {
	d.capsMu.Lock()
	caps, at := d.caps, d.capsAt
	d.capsMu.Unlock()
	if caps != nil && time.Since(at) < difyCapsTTL {
		return caps
	}
	caps, err := d.fetchCaps(ctx)
	if err != nil {
		d.log.Warn("dify: cannot read the app's file upload setting; sending attachments unchecked",
			"err", scrub(err, d.cfg.APIKey))
		return nil
	}
	return caps
}

// flexInt decodes a JSON number or a numeric string; anything else is 0.
type flexInt int64

func (n *flexInt) UnmarshalJSON(b []byte) error {
	var num json.Number
	if err := json.Unmarshal(b, &num); err != nil {
		var s string
		if json.Unmarshal(b, &s) != nil {
			*n = 0
			return nil
		}
		num = json.Number(strings.TrimSpace(s))
	}
	v, err := strconv.ParseFloat(string(num), 64)
	if err != nil || v < 0 || v > 1<<40 {
		*n = 0
		return nil
	}
	*n = flexInt(v)
	return nil
}

// flexBool decodes a JSON bool, or "true"/"false" strings, or numbers.
type flexBool bool

func (v *flexBool) UnmarshalJSON(b []byte) error {
	s := strings.Trim(strings.ToLower(strings.TrimSpace(string(b))), `"`)
	*v = s == "true" || s == "1"
	return nil
}

// difyParameters is the part of GET /parameters we read.
type difyParameters struct {
	FileUpload *struct {
		Enabled                  *flexBool `json:"enabled"`
		AllowedFileTypes         []string  `json:"allowed_file_types"`
		AllowedFileExtensions    []string  `json:"allowed_file_extensions"`
		AllowedFileUploadMethods []string  `json:"allowed_file_upload_methods"`
		NumberLimits             flexInt   `json:"number_limits"`
		Image                    *struct {
			Enabled         flexBool `json:"enabled"`
			NumberLimits    flexInt  `json:"number_limits"`
			TransferMethods []string `json:"transfer_methods"`
		} `json:"image"`
	} `json:"file_upload"`
	SystemParameters struct {
		FileSizeLimit      flexInt `json:"file_size_limit"`
		ImageFileSizeLimit flexInt `json:"image_file_size_limit"`
		AudioFileSizeLimit flexInt `json:"audio_file_size_limit"`
		VideoFileSizeLimit flexInt `json:"video_file_size_limit"`
	} `json:"system_parameters"`
}

// parseDifyParameters turns a GET /parameters body into FileCaps.
//
// Current Dify has file_upload.enabled with allowed_file_types (image,
// document, audio, video, custom), allowed_file_extensions (for custom),
// allowed_file_upload_methods and number_limits; an empty type list means
// every type. Apps whose setting predates file types have only
// file_upload.image {enabled, number_limits, transfer_methods}, which
// current Dify ignores (Legacy, not Enabled). Sizes in system_parameters
// are megabytes.
func parseDifyParameters(body []byte) (*FileCaps, error) {
	var p difyParameters
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, err
	}
	caps := &FileCaps{Backend: TypeDify, Setting: difyFileSetting, MaxBytes: map[FileKind]int64{}}
	sp := p.SystemParameters
	for k, mb := range map[FileKind]flexInt{FileDocument: sp.FileSizeLimit, FileImage: sp.ImageFileSizeLimit,
		FileAudio: sp.AudioFileSizeLimit, FileVideo: sp.VideoFileSizeLimit} {
		if mb > 0 {
			caps.MaxBytes[k] = int64(mb) << 20
		}
	}
	fu := p.FileUpload
	if fu == nil {
		return caps, nil
	}
	localOK := func(methods []string) bool { return len(methods) == 0 || slices.Contains(methods, "local_file") }
	if fu.Enabled == nil {
		// The older form, from before file types. Dify up to 0.9 took
		// pictures with it; current Dify reads only file_upload.enabled
		// (FileUploadConfigManager.convert) and drops the files without a
		// word, so the app counts as not accepting any, with the fix named.
		caps.Legacy = fu.Image != nil
		if fu.Image != nil && bool(fu.Image.Enabled) {
			caps.Setting = difyFileSetting + "：这是旧版设置，当前 Dify 会忽略它，请重新打开文件上传并发布 / a legacy setting current Dify ignores: turn File upload on again and publish"
		}
		return caps, nil
	}
	if !bool(*fu.Enabled) {
		return caps, nil
	}
	if !localOK(fu.AllowedFileUploadMethods) {
		caps.Setting = difyFileSetting + "：上传方式勾选「本地上传」/ allow Local upload"
		return caps, nil
	}
	caps.Enabled = true
	caps.MaxFiles = int(fu.NumberLimits)
	all := []FileKind{FileImage, FileDocument, FileAudio, FileVideo}
	if len(fu.AllowedFileTypes) == 0 {
		caps.Kinds = all
	}
	custom := false
	for _, t := range fu.AllowedFileTypes {
		t = strings.ToLower(strings.TrimSpace(t))
		if t == "custom" {
			custom = true
			continue
		}
		if k := FileKind(t); slices.Contains(all, k) && !slices.Contains(caps.Kinds, k) {
			caps.Kinds = append(caps.Kinds, k)
		}
	}
	slices.SortFunc(caps.Kinds, func(a, b FileKind) int { return slices.Index(all, a) - slices.Index(all, b) })
	if custom {
		for _, e := range fu.AllowedFileExtensions {
			e = strings.ToLower(strings.TrimSpace(e))
			if e == "" {
				continue
			}
			if !strings.HasPrefix(e, ".") {
				e = "." + e
			}
			if e == "." { // a bare dot names no extension
				continue
			}
			if !slices.Contains(caps.CustomExtensions, e) {
				caps.CustomExtensions = append(caps.CustomExtensions, e)
			}
		}
	}
	return caps, nil
}

// difyFileRef is one entry of a question's "files".
type difyFileRef struct {
	Type           string `json:"type"`
	TransferMethod string `json:"transfer_method"`
	UploadFileID   string `json:"upload_file_id"`
}

// attach checks and uploads the request's files and returns their
// references for the question body.
func (d *dify) attach(ctx context.Context, req Request) ([]difyFileRef, error) {
	if len(req.Files) == 0 {
		return nil, nil
	}
	for _, f := range req.Files {
		if len(f.Data) == 0 {
			return nil, &FileError{Backend: TypeDify, Name: f.Name, Kind: f.kindOrDetect(), kind: ErrUnsupportedFile,
				Reason: "文件是空的 / the file is empty"}
		}
	}
	caps := d.cachedCaps(ctx)
	if err := caps.Check(req.Files...); err != nil {
		return nil, err
	}
	user := endUser(req)
	refs := make([]difyFileRef, 0, len(req.Files))
	for _, f := range req.Files {
		kind := f.kindOrDetect()
		typ := string(kind)
		if caps != nil && !caps.Accepts(kind) && slices.Contains(caps.CustomExtensions, strings.ToLower(path.Ext(f.Name))) {
			typ = "custom"
		}
		var id string
		_, err := retryLoop(ctx, d.cfg, d.log, func(ctx context.Context) (*Result, bool, error) {
			var err error
			id, err = d.upload(ctx, f, user)
			return nil, false, err
		})
		if err != nil {
			return nil, scrub(err, d.cfg.APIKey)
		}
		d.log.Debug("dify: attachment uploaded", "kind", kind, "bytes", len(f.Data), "upload_file_id", id)
		refs = append(refs, difyFileRef{Type: typ, TransferMethod: "local_file", UploadFileID: id})
	}
	return refs, nil
}

// quoteEscaper escapes a multipart parameter value as mime/multipart does.
var quoteEscaper = strings.NewReplacer("\\", "\\\\", `"`, "\\\"", "\r", "", "\n", "")

// upload sends one file with POST /files/upload and returns its id.
func (d *dify) upload(ctx context.Context, f File, user string) (string, error) {
	actx, watch := newIdleWatch(ctx, d.cfg.IdleTimeout)
	defer watch.stop()

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="file"; filename="`+quoteEscaper.Replace(f.fileName())+`"`)
	h.Set("Content-Type", baseMIME(f.mime()))
	part, err := mw.CreatePart(h)
	if err == nil {
		_, err = part.Write(f.Data)
	}
	if err == nil {
		err = mw.WriteField("user", user)
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		return "", fmt.Errorf("llm: dify: encode upload: %w", err)
	}
	hreq, err := http.NewRequestWithContext(actx, http.MethodPost, d.cfg.BaseURL+"/files/upload",
		&sendProgress{r: bytes.NewReader(body.Bytes()), w: watch})
	if err != nil {
		return "", fmt.Errorf("llm: dify: build request: %w", err)
	}
	hreq.Header.Set("Authorization", "Bearer "+d.cfg.APIKey)
	hreq.ContentLength = int64(body.Len())
	hreq.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := d.hc.Do(hreq)
	if err != nil {
		return "", attemptError(TypeDify, actx, err)
	}
	defer resp.Body.Close()
	watch.kick()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return "", apiErrorFromResponse(TypeDify, resp, d.cfg.APIKey, false)
	}
	var out struct {
		ID string `json:"id"`
	}
	raw, err := io.ReadAll(io.LimitReader(&activityBody{ReadCloser: resp.Body, w: watch}, maxErrorBody))
	if err != nil {
		return "", attemptError(TypeDify, actx, err)
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.ID == "" {
		return "", &APIError{Backend: TypeDify, Status: resp.StatusCode, Code: "bad_response",
			Message: "POST /files/upload did not return a file id", Hint: "check base_url (it usually ends in /v1)"}
	}
	return out.ID, nil
}

// sendProgress counts a request body being sent as activity, so a large
// upload on a slow link is not taken for a silent server.
type sendProgress struct {
	r io.Reader
	w *idleWatch
}

func (p *sendProgress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.w.kick()
	}
	return n, err
}
