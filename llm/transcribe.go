package llm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	openai "github.com/sashabaranov/go-openai"
)

// Transcriber turns speech into text with an OpenAI-compatible
// POST {base_url}/audio/transcriptions endpoint (OpenAI whisper-1 or
// gpt-4o-transcribe, a local whisper server, SenseVoice behind an
// OpenAI-compatible API). It is safe for concurrent use.
type Transcriber struct {
	cfg    Config
	client *openai.Client
	log    *slog.Logger
}

// NewTranscriber builds a Transcriber from an "openai" backend config with
// transcription_model set; base_url, api_key, timeout, idle_timeout,
// max_retries, retry_base, transcription_language and max_audio_bytes
// apply. hc and log are as for New.
func NewTranscriber(cfg Config, hc *http.Client, log *slog.Logger) (*Transcriber, error) {
	if err := cfg.Validate(""); err != nil {
		return nil, fmt.Errorf("llm: invalid config: %w", err)
	}
	if cfg.Type != TypeOpenAI || cfg.TranscriptionModel == "" {
		return nil, errors.New(`llm: invalid config: transcription_model: 语音转写需要 type = "openai" 且填写 transcription_model / speech needs an "openai" backend with transcription_model`)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if hc == nil {
		hc = &http.Client{}
	}
	cfg = cfg.withDefaults()
	oc := openai.DefaultConfig(cfg.APIKey)
	oc.BaseURL = cfg.BaseURL
	oc.HTTPClient = &openAIDoer{hc: hc, secret: cfg.APIKey}
	return &Transcriber{cfg: cfg, client: openai.NewClientWithConfig(oc),
		log: log.With("component", "llm", "backend", "transcription")}, nil
}

// Transcribe returns the text spoken in audio. audio.Data holds a format
// the server reads (mp3, wav, m4a, ogg, webm, flac...): WeCom voice is AMR,
// which OpenAI refuses, so convert it first (ffmpeg). audio.Name gives the
// server the format by its extension; when empty it is derived from MIME.
//
// Errors: *FileError (ErrFileTooLarge, ErrUnsupportedFile) before sending,
// *APIError from the server (an unsupported format is a 400 with the
// server's message), ErrEmptyTranscript when no words were recognised, and
// the timeout errors of Stream.
func (t *Transcriber) Transcribe(ctx context.Context, audio File) (string, error) {
	text, err := t.transcribe(ctx, audio)
	return text, scrub(err, t.cfg.APIKey)
}

func (t *Transcriber) transcribe(ctx context.Context, audio File) (string, error) {
	fe := func(sentinel error, reason, hint string) *FileError {
		return &FileError{Backend: TypeOpenAI, Name: audio.Name, Kind: FileAudio, Size: int64(len(audio.Data)),
			kind: sentinel, Reason: reason, Hint: hint}
	}
	switch {
	case len(audio.Data) == 0:
		return "", fe(ErrUnsupportedFile, "语音是空的 / the audio is empty", "")
	case int64(len(audio.Data)) > t.cfg.MaxAudioBytes:
		e := fe(ErrFileTooLarge, fmt.Sprintf("语音太长（%s，上限 %s）/ audio too large (%s, limit %s)",
			humanBytes(int64(len(audio.Data))), humanBytes(t.cfg.MaxAudioBytes), humanBytes(int64(len(audio.Data))), humanBytes(t.cfg.MaxAudioBytes)),
			"可调大 max_audio_bytes / raise max_audio_bytes")
		e.Limit = t.cfg.MaxAudioBytes
		return "", e
	}
	if k := audio.kindOrDetect(); k != FileAudio && k != FileVideo {
		return "", fe(ErrUnsupportedFile, "这不是语音文件 / this is not an audio file", "")
	}
	name := audio.fileName()
	var text string
	_, err := retryLoop(ctx, t.cfg, t.log, func(ctx context.Context) (*Result, bool, error) {
		// No idle watch: a speech server answers only when it has heard
		// the whole file, so silence is normal; timeout bounds the wait.
		actx := ctx
		resp, err := t.client.CreateTranscription(actx, openai.AudioRequest{
			Model:    t.cfg.TranscriptionModel,
			FilePath: name,
			Reader:   bytes.NewReader(audio.Data),
			Language: t.cfg.TranscriptionLanguage,
			Format:   openai.AudioResponseFormatJSON,
		})
		if err != nil {
			var apiErr *APIError
			if errors.As(err, &apiErr) {
				return nil, false, apiErr
			}
			var oe *openai.APIError
			if errors.As(err, &oe) {
				return nil, false, fromOpenAIError(oe, t.cfg.APIKey, false)
			}
			if actx.Err() != nil || isTransport(err) {
				return nil, false, attemptError(TypeOpenAI, actx, err)
			}
			return nil, false, fmt.Errorf("llm: openai: transcription: %w (check base_url)", err)
		}
		text = resp.Text
		return nil, false, nil
	})
	if err != nil {
		return "", err
	}
	text = strings.TrimSpace(text)
	if text == "" {
		return "", wrap(TypeOpenAI, ErrEmptyTranscript)
	}
	t.log.Debug("audio transcribed", "bytes", len(audio.Data), "chars", len([]rune(text)))
	return text, nil
}

var _ Checker = (*Transcriber)(nil)

// Check implements Checker for the daemon's check command: it lists the
// server's models (GET /models) and confirms transcription_model is among
// them. Speech servers without a model list (404) pass unverified; Info.Mode
// is "transcription".
func (t *Transcriber) Check(ctx context.Context) (*Info, error) {
	info, err := t.check(ctx)
	return info, scrub(err, t.cfg.APIKey)
}

func (t *Transcriber) check(ctx context.Context) (*Info, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, t.cfg.IdleTimeout, &timeoutError{sentinel: ErrTimeout, after: t.cfg.IdleTimeout})
	defer cancel()
	info := &Info{Name: t.cfg.BaseURL, Mode: "transcription", Model: t.cfg.TranscriptionModel}
	list, err := t.client.ListModels(ctx)
	if err != nil {
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			if errors.Is(apiErr, ErrEndpointNotFound) {
				return info, nil
			}
			return info, apiErr
		}
		if ctx.Err() != nil || isTransport(err) {
			return info, attemptError(TypeOpenAI, ctx, err)
		}
		return info, fmt.Errorf("llm: openai: list models: %w (check base_url)", err)
	}
	for _, m := range list.Models {
		if m.ID == t.cfg.TranscriptionModel {
			return info, nil
		}
	}
	return info, &APIError{Backend: TypeOpenAI, Code: "model_not_found",
		Message: fmt.Sprintf("model %q is not among the %d models the server lists", t.cfg.TranscriptionModel, len(list.Models)),
		Hint:    "check transcription_model", kind: ErrModelNotFound}
}
