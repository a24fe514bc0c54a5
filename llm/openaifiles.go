package llm

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"
	"unicode/utf8"

	openai "github.com/sashabaranov/go-openai"
)

var _ FileSupport = (*openAI)(nil)

// visionMIMEs are the picture formats OpenAI-compatible vision models take.
var visionMIMEs = []string{"image/png", "image/jpeg", "image/gif", "image/webp"}

// Capabilities implements FileSupport. It needs no network: what an
// OpenAI-compatible backend takes follows from its configuration.
func (o *openAI) Capabilities(context.Context) (*FileCaps, error) {
	return o.fileCaps(), nil
}

func (o *openAI) fileCaps() *FileCaps {
	caps := &FileCaps{Backend: TypeOpenAI, MaxBytes: map[FileKind]int64{},
		Setting: "该 openai 后端的 vision 设置（图片）/ the backend's vision key (pictures)"}
	if o.cfg.Vision {
		caps.Kinds = append(caps.Kinds, FileImage)
		caps.MaxBytes[FileImage] = o.cfg.MaxImageBytes
	}
	if o.cfg.MaxFileText > 0 {
		caps.Kinds = append(caps.Kinds, FileDocument)
		caps.DocumentExtensions = slices.Clone(textExts)
	}
	caps.Enabled = len(caps.Kinds) > 0
	return caps
}

// userMessage builds the question's message: plain-text attachments are
// inlined before the question, pictures follow it as image_url parts.
func (o *openAI) userMessage(req Request) (openai.ChatCompletionMessage, error) {
	msg := openai.ChatCompletionMessage{Role: openai.ChatMessageRoleUser}
	if len(req.Files) == 0 {
		msg.Content = req.Query
		return msg, nil
	}
	caps := o.fileCaps()
	if err := caps.Check(req.Files...); err != nil {
		return msg, err
	}
	var (
		text   strings.Builder
		images []openai.ChatMessagePart
		budget = o.cfg.MaxFileText
	)
	for _, f := range req.Files {
		switch f.kindOrDetect() {
		case FileImage:
			mt := baseMIME(f.mime())
			if sniffed := baseMIME(f.sniff()); strings.HasPrefix(sniffed, "image/") {
				mt = sniffed // trust the bytes over the label
			}
			if !slices.Contains(visionMIMEs, mt) {
				return msg, &FileError{Backend: TypeOpenAI, Name: f.Name, Kind: FileImage, Size: int64(len(f.Data)),
					kind: ErrUnsupportedFile, Reason: "图片格式不支持，只支持 PNG、JPEG、GIF、WEBP / unsupported picture format (PNG, JPEG, GIF or WEBP only)"}
			}
			images = append(images, openai.ChatMessagePart{Type: openai.ChatMessagePartTypeImageURL,
				ImageURL: &openai.ChatMessageImageURL{URL: "data:" + mt + ";base64," + base64.StdEncoding.EncodeToString(f.Data)}})
		default: // a text-like document; Check refused everything else
			if !mostlyUTF8(f.Data) {
				return msg, &FileError{Backend: TypeOpenAI, Name: f.Name, Kind: FileDocument, Size: int64(len(f.Data)),
					kind: ErrUnsupportedFile, Reason: "文件不是 UTF-8 编码（可能是 GBK），请另存为 UTF-8 后再发 / the file is not UTF-8 text (GBK?); save it as UTF-8 and resend"}
			}
			budget = inlineText(&text, f, budget)
		}
	}
	text.WriteString(req.Query)
	if len(images) == 0 {
		msg.Content = text.String()
		return msg, nil
	}
	msg.MultiContent = append([]openai.ChatMessagePart{{Type: openai.ChatMessagePartTypeText, Text: text.String()}}, images...)
	return msg, nil
}

// inlineText appends one text file, cut to budget bytes, and returns the
// budget left.
func inlineText(b *strings.Builder, f File, budget int) int {
	name := path.Base(f.fileName())
	data := f.Data
	if len(data) >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF {
		data = data[3:] // UTF-8 byte order mark
	}
	content := strings.ToValidUTF8(string(data), "\uFFFD")
	cut := false
	if len(content) > budget {
		cut = true
		n := max(budget, 0)
		for n > 0 && !utf8.RuneStart(content[n]) {
			n--
		}
		// Prefer ending at a line break in the last quarter.
		if i := strings.LastIndexByte(content[:n], '\n'); i > n*3/4 {
			n = i + 1
		}
		content = content[:n]
	}
	fmt.Fprintf(b, "[附件 / attachment: %s]\n", name)
	if budget <= 0 {
		b.WriteString("（附件内容超出长度上限，未附上 / content left out: over the length limit）\n\n")
		return 0
	}
	b.WriteString(content)
	if !strings.HasSuffix(content, "\n") {
		b.WriteByte('\n')
	}
	if cut {
		fmt.Fprintf(b, "（文件过长，只附上了前 %d 字节，共 %d 字节 / truncated: first %d of %d bytes）\n",
			len(content), len(f.Data), len(content), len(f.Data))
	}
	fmt.Fprintf(b, "[附件结束 / end of %s]\n\n", name)
	return budget - len(content)
}

// mostlyUTF8 reports UTF-8 text with at most one invalid sequence per
// hundred bytes (a log with a stray byte passes; GBK does not).
func mostlyUTF8(b []byte) bool {
	total, bad := len(b), 0
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			bad++
		}
		b = b[n:]
	}
	return bad*100 <= total
}

// sniff returns the content type detected from the bytes.
func (f File) sniff() string {
	if len(f.Data) == 0 {
		return ""
	}
	return http.DetectContentType(f.Data)
}
