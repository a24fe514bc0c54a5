package llm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"
)

// FileKind is the broad type of an attachment. The values are Dify's file
// types, which the other backends follow.
type FileKind string

// File kinds.
const (
	FileImage    FileKind = "image"
	FileDocument FileKind = "document"
	FileAudio    FileKind = "audio"
	FileVideo    FileKind = "video"
)

// File is one attachment of a question. The caller reads Data from its own
// durable storage; this package never keeps it beyond the call.
type File struct {
	// Kind is the file's type; "" lets the backend infer it from Name and
	// MIME (see DetectKind).
	Kind FileKind
	// Name is the file name shown to the model and used for its
	// extension, e.g. "报销单.pdf". "" is replaced by a generic name with
	// an extension chosen from MIME.
	Name string
	// MIME is the content type, e.g. "image/png"; "" is sniffed from Data.
	MIME string
	// Data is the file content. It must not be empty.
	Data []byte
}

// FileSupport is implemented by backends that take attachments
// (Request.Files). The bridge uses it to refuse a file the backend cannot
// take before storing the question, and to tell the operator what to turn
// on.
type FileSupport interface {
	// Capabilities reports which attachments the backend accepts now. For
	// Dify it reads the app's GET /parameters (file_upload), so it reflects
	// the app's current Features → File upload setting.
	Capabilities(ctx context.Context) (*FileCaps, error)
}

// FileCaps describes which attachments a backend accepts.
type FileCaps struct {
	// Backend is "dify" or "openai".
	Backend string
	// Enabled reports that the backend accepts attachments at all.
	Enabled bool
	// Kinds lists the accepted kinds, in a stable order.
	Kinds []FileKind
	// DocumentExtensions, when not nil, restricts documents to these
	// extensions (lower case, with the dot). OpenAI-compatible backends
	// read only text-like documents, inlined into the prompt.
	DocumentExtensions []string
	// CustomExtensions are the extensions Dify accepts as "custom" files
	// (allowed_file_types has "custom"), lower case with the dot. A file
	// of a kind not in Kinds is still accepted when its extension is here.
	CustomExtensions []string
	// MaxFiles is the most files per question (Dify number_limits); 0
	// means no limit is known.
	MaxFiles int
	// MaxBytes is the largest accepted size per kind, 0 or absent when
	// unknown (Dify system_parameters *_file_size_limit; OpenAI
	// max_image_bytes).
	MaxBytes map[FileKind]int64
	// Legacy reports that Dify sent only the older file_upload.image form
	// (from before file types). Current Dify ignores it and drops files
	// silently, so Enabled is false; if its image.enabled was on, Setting
	// tells the operator to turn File upload on again.
	Legacy bool
	// Setting says, Chinese first, where the operator turns attachments
	// on, e.g. "Dify 应用编排 → 功能 → 文件上传 / Features → File upload".
	Setting string
}

// Accepts reports whether kind is among c.Kinds.
func (c *FileCaps) Accepts(kind FileKind) bool {
	return c != nil && c.Enabled && slices.Contains(c.Kinds, kind)
}

// Check reports the first reason the backend would refuse files: too many
// of them, a kind the backend does not take, or a file too large. It
// returns nil when all are acceptable, or a *FileError matching one of
// ErrTooManyFiles, ErrFileNotAccepted, ErrNoVision, ErrUnsupportedFile or
// ErrFileTooLarge.
func (c *FileCaps) Check(files ...File) error {
	if c == nil || len(files) == 0 {
		return nil
	}
	if c.MaxFiles > 0 && len(files) > c.MaxFiles {
		return &FileError{Backend: c.Backend, Limit: int64(c.MaxFiles), kind: ErrTooManyFiles,
			Reason: fmt.Sprintf("一次最多只能发送 %d 个附件 / at most %d attachments per question", c.MaxFiles, c.MaxFiles),
			Hint:   c.settingHint("number_limits / 最大上传数")}
	}
	for _, f := range files {
		if err := c.checkOne(f); err != nil {
			return err
		}
	}
	return nil
}

func (c *FileCaps) checkOne(f File) error {
	kind := f.kindOrDetect()
	ext := strings.ToLower(path.Ext(f.Name))
	fe := func(sentinel error, reason, hint string) *FileError {
		return &FileError{Backend: c.Backend, Name: f.Name, Kind: kind, Size: int64(len(f.Data)), kind: sentinel,
			Reason: reason, Hint: hint}
	}
	if len(f.Data) == 0 {
		return fe(ErrUnsupportedFile, "文件是空的 / the file is empty", "")
	}
	if c.Backend == TypeOpenAI {
		switch {
		case kind == FileImage && !c.Accepts(FileImage):
			return fe(ErrNoVision, "这个助手看不了图片，请用文字描述 / this assistant cannot read pictures",
				"在该 openai 后端设置 vision = true（模型需支持图片输入）/ set vision = true on the backend (the model must accept images)")
		case kind == FileDocument && c.DocumentExtensions != nil && !slices.Contains(c.DocumentExtensions, ext) && !isTextMIME(f.MIME):
			return fe(ErrUnsupportedFile, "这个助手只能读取纯文本文件（txt、md、csv、json）/ this assistant reads plain-text files only (txt, md, csv, json)",
				"PDF、Word 等文件需要使用 Dify 后端 / PDF, Word and similar files need a dify backend")
		case kind == FileAudio:
			return fe(ErrUnsupportedFile, "这个助手不能直接听语音 / this assistant cannot take audio files",
				"语音需先转写：配置 transcription_model / transcribe voice first (transcription_model)")
		case !c.Accepts(kind):
			return fe(ErrUnsupportedFile, "这个助手不支持此类文件 / this assistant does not take this kind of file",
				"此类文件需要使用 Dify 后端 / this kind of file needs a dify backend")
		}
	} else if !c.Accepts(kind) && !slices.Contains(c.CustomExtensions, ext) {
		reason := "当前应用不接受此类文件 / the app does not accept this kind of file"
		if kind == FileImage {
			reason = "当前应用不接受图片 / the app does not accept pictures"
		}
		return fe(ErrFileNotAccepted, reason, c.settingHint(difyTypeLabel(kind)))
	}
	if limit := c.MaxBytes[kind]; limit > 0 && int64(len(f.Data)) > limit {
		e := fe(ErrFileTooLarge, fmt.Sprintf("文件太大（%s，上限 %s）/ file too large (%s, limit %s)",
			humanBytes(int64(len(f.Data))), humanBytes(limit), humanBytes(int64(len(f.Data))), humanBytes(limit)), "")
		e.Limit = limit
		if c.Backend == TypeOpenAI && kind == FileImage {
			e.Hint = "可调大 max_image_bytes / raise max_image_bytes"
		} else if c.Backend == TypeDify {
			e.Hint = "Dify 的上传上限由其环境变量 UPLOAD_*_FILE_SIZE_LIMIT 决定 / Dify's limit is set by its UPLOAD_*_FILE_SIZE_LIMIT environment variables"
		}
		return e
	}
	return nil
}

func (c *FileCaps) settingHint(what string) string {
	if c.Setting == "" {
		return ""
	}
	if what == "" {
		return c.Setting
	}
	return c.Setting + "：" + what
}

// difyTypeLabel names the checkbox of a kind in Dify's File upload panel.
func difyTypeLabel(k FileKind) string {
	switch k {
	case FileImage:
		return "勾选「图片」/ tick Image"
	case FileDocument:
		return "勾选「文档」/ tick Document"
	case FileAudio:
		return "勾选「音频」/ tick Audio"
	case FileVideo:
		return "勾选「视频」/ tick Video"
	}
	return ""
}

// FileError is an attachment the backend refuses before anything is sent.
// It matches one of the file sentinels with errors.Is. Its text carries the
// kind and size but never the file name or content; Name is there for the
// caller's reply to the user.
type FileError struct {
	// Backend is "dify" or "openai".
	Backend string
	// Name, Kind and Size describe the file.
	Name string
	Kind FileKind
	Size int64
	// Limit is the size or count limit that was exceeded, when one was.
	Limit int64
	// Reason is the user-facing explanation, Chinese first.
	Reason string
	// Hint names the operator setting to change, Chinese first; "" when
	// there is none.
	Hint string

	kind error
}

// Error formats the error without the file name.
func (e *FileError) Error() string {
	var b strings.Builder
	b.WriteString("llm: ")
	if e.Backend != "" {
		b.WriteString(e.Backend)
		b.WriteString(": ")
	}
	b.WriteString("attachment")
	if e.Kind != "" {
		fmt.Fprintf(&b, " (%s", e.Kind)
		if e.Size > 0 {
			fmt.Fprintf(&b, ", %d bytes", e.Size)
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, ": %s", e.Reason)
	if e.Hint != "" {
		fmt.Fprintf(&b, " (%s)", e.Hint)
	}
	return b.String()
}

// Is reports whether target is the sentinel describing e.
func (e *FileError) Is(target error) bool { return e.kind != nil && target == e.kind }

// Sentinel errors about attachments.
var (
	// ErrNoVision means an OpenAI-compatible backend without vision = true
	// was given a picture. Tell the user this assistant cannot read
	// pictures.
	ErrNoVision = errors.New("llm: this backend cannot read pictures")
	// ErrUnsupportedFile means the backend cannot take this kind or format
	// of file at all (audio or a PDF to an OpenAI-compatible backend, a
	// file type Dify refuses with 415, an empty file).
	ErrUnsupportedFile = errors.New("llm: unsupported attachment")
	// ErrFileNotAccepted means the Dify app is set up not to accept this
	// kind of file; the operator can turn it on (the error's Hint says
	// where).
	ErrFileNotAccepted = errors.New("llm: the app does not accept this kind of attachment")
	// ErrFileTooLarge means an attachment exceeds the backend's size limit.
	ErrFileTooLarge = errors.New("llm: attachment too large")
	// ErrTooManyFiles means a question has more attachments than allowed.
	ErrTooManyFiles = errors.New("llm: too many attachments")
	// ErrEmptyTranscript means the speech service understood no words.
	ErrEmptyTranscript = errors.New("llm: transcription is empty")
)

// Extension lists, as Dify classifies files (api/constants).
var (
	imageExts    = []string{".jpg", ".jpeg", ".png", ".webp", ".gif", ".svg", ".bmp"}
	videoExts    = []string{".mp4", ".mov", ".mpeg", ".webm"}
	audioExts    = []string{".mp3", ".m4a", ".wav", ".amr", ".mpga", ".ogg", ".oga", ".flac", ".silk", ".opus"}
	documentExts = []string{".txt", ".markdown", ".md", ".mdx", ".pdf", ".html", ".htm", ".xlsx", ".xls", ".vtt",
		".properties", ".doc", ".docx", ".csv", ".eml", ".msg", ".pptx", ".ppt", ".xml", ".epub", ".json", ".log", ".tsv"}
	// textExts are the documents an OpenAI-compatible backend inlines.
	textExts = []string{".txt", ".text", ".md", ".markdown", ".csv", ".tsv", ".json", ".log"}
)

// DetectKind classifies a file by its extension, then its MIME type, as
// Dify does; anything unknown is a document.
func DetectKind(name, mime string) FileKind {
	ext := strings.ToLower(path.Ext(name))
	switch {
	case ext == "":
	case slices.Contains(imageExts, ext):
		return FileImage
	case slices.Contains(videoExts, ext):
		return FileVideo
	case slices.Contains(audioExts, ext):
		return FileAudio
	case slices.Contains(documentExts, ext):
		return FileDocument
	}
	mime = strings.ToLower(mime)
	switch {
	case strings.HasPrefix(mime, "image/"):
		return FileImage
	case strings.HasPrefix(mime, "video/"):
		return FileVideo
	case strings.HasPrefix(mime, "audio/"):
		return FileAudio
	}
	return FileDocument
}

func (f File) kindOrDetect() FileKind {
	if f.Kind != "" {
		return f.Kind
	}
	return DetectKind(f.Name, f.mime())
}

// mime returns the declared type, or one sniffed from the content.
func (f File) mime() string {
	if m := strings.TrimSpace(f.MIME); m != "" {
		return m
	}
	if len(f.Data) == 0 {
		return "application/octet-stream"
	}
	return http.DetectContentType(f.Data)
}

// baseMIME strips parameters: "text/plain; charset=utf-8" → "text/plain".
func baseMIME(m string) string {
	m, _, _ = strings.Cut(m, ";")
	return strings.ToLower(strings.TrimSpace(m))
}

// fileName returns f.Name, or a generic name with an extension for its
// type, since Dify and speech servers classify uploads by extension.
func (f File) fileName() string {
	if n := strings.TrimSpace(f.Name); n != "" && !strings.ContainsAny(n, "/\\") {
		return n
	} else if n != "" {
		return path.Base(strings.ReplaceAll(n, "\\", "/"))
	}
	ext := extForMIME(baseMIME(f.mime()))
	return "file" + ext
}

func extForMIME(m string) string {
	switch m {
	case "image/png":
		return ".png"
	case "image/jpeg", "image/jpg":
		return ".jpg"
	case "image/gif":
		return ".gif"
	case "image/webp":
		return ".webp"
	case "image/bmp":
		return ".bmp"
	case "application/pdf":
		return ".pdf"
	case "text/plain":
		return ".txt"
	case "text/markdown":
		return ".md"
	case "text/csv":
		return ".csv"
	case "application/json":
		return ".json"
	case "audio/amr":
		return ".amr"
	case "audio/mpeg", "audio/mp3":
		return ".mp3"
	case "audio/wav", "audio/x-wav", "audio/wave":
		return ".wav"
	case "audio/ogg":
		return ".ogg"
	case "audio/mp4", "audio/m4a", "audio/x-m4a":
		return ".m4a"
	case "audio/webm":
		return ".webm"
	case "audio/flac":
		return ".flac"
	case "video/mp4":
		return ".mp4"
	}
	return ".bin"
}

// isTextMIME reports a plain-text-like content type.
func isTextMIME(m string) bool {
	switch baseMIME(m) {
	case "text/plain", "text/markdown", "text/x-markdown", "text/csv", "text/tab-separated-values", "application/json":
		return true
	}
	return false
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
