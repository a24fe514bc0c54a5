package llmtest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"strings"
)

// TranscriptionRequest is one POST /audio/transcriptions received by the
// OpenAI fake.
type TranscriptionRequest struct {
	Model          string
	FileName       string
	ContentType    string // of the file part
	Data           []byte
	ResponseFormat string
	Language       string
	Prompt         string
}

// transcript is one scripted transcription answer.
type transcript struct {
	text   string
	status int
	code   string
}

// OpenAI's transcription limits: formats by file extension, and 25 MB.
var (
	speechFormats  = []string{"flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm"}
	maxSpeechBytes = 25 << 20
)

// PushTranscript queues transcription answers; each request consumes the
// next one. "" is a valid answer (silence). With the queue empty the fake
// answers "llmtest: N bytes of audio".
func (f *OpenAI) PushTranscript(texts ...string) {
	f.mu.Lock()
	for _, t := range texts {
		f.transcripts = append(f.transcripts, transcript{text: t})
	}
	f.mu.Unlock()
}

// FailTranscription queues an HTTP error for the next transcription
// request (code "" picks the usual one for the status).
func (f *OpenAI) FailTranscription(status int, code string) {
	f.mu.Lock()
	f.transcripts = append(f.transcripts, transcript{status: status, code: code})
	f.mu.Unlock()
}

// Transcriptions returns the transcription requests received so far,
// including refused ones.
func (f *OpenAI) Transcriptions() []TranscriptionRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]TranscriptionRequest(nil), f.transcriptions...)
}

func (f *OpenAI) serveTranscription(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, int64(maxSpeechBytes)+1<<20)
	if err := r.ParseMultipartForm(32 << 20); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			openAIError(w, 413, fmt.Sprintf("Maximum content size limit (%d) exceeded (%d bytes read)", maxSpeechBytes, tooBig.Limit),
				"server_error", "", "")
			return
		}
		openAIError(w, 400, "Could not parse multipart form", "invalid_request_error", "", "")
		return
	}
	defer r.MultipartForm.RemoveAll()
	rec := TranscriptionRequest{Model: r.FormValue("model"), ResponseFormat: r.FormValue("response_format"),
		Language: r.FormValue("language"), Prompt: r.FormValue("prompt")}
	fhs := r.MultipartForm.File["file"]
	if len(fhs) > 0 {
		rec.FileName, rec.ContentType = fhs[0].Filename, fhs[0].Header.Get("Content-Type")
		if fd, err := fhs[0].Open(); err == nil {
			rec.Data, _ = io.ReadAll(fd)
			_ = fd.Close()
		}
	}
	f.mu.Lock()
	f.transcriptions = append(f.transcriptions, rec)
	o := f.o
	var next transcript
	queued := len(f.transcripts) > 0
	if queued {
		next, f.transcripts = f.transcripts[0], f.transcripts[1:]
	}
	f.mu.Unlock()

	ext := strings.ToLower(strings.TrimPrefix(path.Ext(rec.FileName), "."))
	switch {
	case len(fhs) == 0:
		openAIError(w, 400, "1 validation error for Request\nbody -> file\n  field required (type=value_error.missing)", "invalid_request_error", "", "")
		return
	case rec.Model == "":
		openAIError(w, 400, "you must provide a model parameter", "invalid_request_error", "", "")
		return
	case !slices.Contains(o.speechModels, rec.Model):
		openAIError(w, 404, "The model `"+rec.Model+"` does not exist or you do not have access to it.", "invalid_request_error", "model_not_found", "")
		return
	case !slices.Contains(speechFormats, ext):
		openAIError(w, 400, "Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']",
			"invalid_request_error", "", "")
		return
	case len(rec.Data) > maxSpeechBytes:
		openAIError(w, 413, fmt.Sprintf("Maximum content size limit (%d) exceeded (%d bytes read)", maxSpeechBytes, len(rec.Data)),
			"server_error", "", "")
		return
	case len(rec.Data) == 0:
		openAIError(w, 400, "Audio file is empty", "invalid_request_error", "", "")
		return
	}
	if next.status != 0 {
		scriptedOpenAIError(w, Script{Status: next.status, Code: next.code})
		return
	}
	text := next.text
	if !queued {
		text = fmt.Sprintf("llmtest: %d bytes of audio", len(rec.Data))
	}
	switch rec.ResponseFormat {
	case "", "json":
		writeJSON(w, 200, render(styleCompact, object{{"text", text}})+"\n", "")
	case "text":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, text+"\n")
	case "verbose_json":
		writeJSON(w, 200, render(styleCompact, object{{"task", "transcribe"}, {"language", "chinese"},
			{"duration", 1.5}, {"text", text}, {"segments", []any{}}})+"\n", "")
	default:
		openAIError(w, 400, "llmtest: response_format "+rec.ResponseFormat+" is not faked", "invalid_request_error", "", "")
	}
}

// checkParts validates image_url parts as the chat completions API does;
// it returns the error message, or "".
func checkParts(msgs []Message, noVision bool) string {
	for i, m := range msgs {
		for j, p := range m.Parts {
			switch p.Type {
			case "text":
			case "image_url":
				if m.Role != "user" {
					return fmt.Sprintf("Invalid 'messages[%d]'. Image URLs are only allowed for messages with role 'user', but this message with role '%s' contains an image URL.", i, m.Role)
				}
				if noVision {
					return "Invalid content type. image_url is only supported by certain models."
				}
				if strings.HasPrefix(p.ImageURL, "http://") || strings.HasPrefix(p.ImageURL, "https://") {
					continue
				}
				mt, data, ok := p.DataURI()
				if !ok || len(data) == 0 {
					return fmt.Sprintf("Invalid 'messages[%d].content[%d].image_url.url'. Expected a valid URL, but got a value with an invalid format.", i, j)
				}
				if !slices.Contains([]string{"image/png", "image/jpeg", "image/gif", "image/webp"}, mt) {
					return fmt.Sprintf("Invalid 'messages[%d].content[%d].image_url.url'. Expected a base64-encoded data URL with an image MIME type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU='), but got unsupported MIME type '%s'.", i, j, mt)
				}
				if http.DetectContentType(data) != mt {
					return "You uploaded an unsupported image. Please make sure your image is valid."
				}
			default:
				return fmt.Sprintf("Invalid value: '%s'. Supported values are: 'text', 'image_url', 'input_audio', 'refusal', 'audio', and 'file'.", p.Type)
			}
		}
	}
	return ""
}
