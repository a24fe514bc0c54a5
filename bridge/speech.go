package bridge

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os/exec"
	"path"
	"strings"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm"
)

// App voice messages are AMR (WeCom §2, Format amr). Speech servers read
// wav/mp3/… but not AMR (OpenAI answers "Invalid file format"), so AMR is
// converted with ffmpeg, piped through stdin and stdout, before it is sent
// to media.speech_backend.

// Speech limits.
const (
	// ffmpegProbeTimeout bounds the start-up detection runs of ffmpeg.
	ffmpegProbeTimeout = 5 * time.Second
	// ffmpegConvertTimeout bounds one conversion (a WeCom voice message
	// is at most 60 s; ffmpeg converts it in well under a second).
	ffmpegConvertTimeout = time.Minute
	// ffmpegParallel caps the conversions running at once: each is a
	// process on a small machine.
	ffmpegParallel = 2
	// ffmpegStderrTail is how much of ffmpeg's stderr an error keeps.
	ffmpegStderrTail = 512
)

// Speech errors. Callers branch with errors.Is; each error's text names
// the config key or the fix for the operator.
var (
	// errNoSpeech: no media.speech_backend is configured (a nil *speech).
	errNoSpeech = errors.New("bridge: speech: 未配置语音转写：请设置 media.speech_backend 为带 transcription_model 的 [backends.NAME] / no speech backend: set media.speech_backend to a [backends.NAME] with transcription_model")
	// errNoFFmpeg: the audio is AMR and ffmpeg was not usable at start.
	errNoFFmpeg = errors.New("bridge: speech: 转换 AMR 语音需要 ffmpeg：请安装（apt-get install ffmpeg）或把 media.ffmpeg 设为它的路径，然后重启或重新加载 / AMR voice needs ffmpeg: install it (apt-get install ffmpeg) or set media.ffmpeg to its path, then restart or reload")
	// errConvert: ffmpeg could not convert the audio (*ffmpegError).
	errConvert = errors.New("bridge: speech: ffmpeg 无法转换这段语音 / ffmpeg could not convert the audio")
	// errAudioTooLarge: the audio, or its conversion, is over the limit.
	errAudioTooLarge = errors.New("bridge: speech: 语音太大 / audio too large")
)

// ffmpegError is a failed conversion: errors.Is(err, errConvert) holds.
// Stderr is the tail of ffmpeg's own messages (never the audio).
type ffmpegError struct {
	Err    error  // the process error, or why the output is unusable
	Stderr string // tail of ffmpeg's stderr, trimmed
}

func (e *ffmpegError) Error() string {
	s := errConvert.Error() + ": " + e.Err.Error()
	if e.Stderr != "" {
		s += ": " + e.Stderr
	}
	return s
}

func (e *ffmpegError) Unwrap() []error { return []error{errConvert, e.Err} }

// speech transcribes the app's voice messages with media.speech_backend.
// A nil *speech means no speech backend is configured; its methods then
// report errNoSpeech. It is safe for concurrent use.
type speech struct {
	tr      *llm.Transcriber
	backend string // media.speech_backend
	log     *slog.Logger

	maxIn  int64 // media.max_bytes: largest audio taken
	maxOut int64 // the backend's max_audio_bytes: largest conversion sent

	// ffmpeg state, detected once by newSpeech.
	ffmpegKey     string // media.ffmpeg as configured
	ffmpeg        string // resolved path; "" when not usable
	ffmpegVersion string // e.g. "5.1.9-0+deb12u1"
	ffmpegWhy     string // why ffmpeg is not usable ("" when it is)
	sem           chan struct{}
}

// newSpeech builds the transcriber of cfg.Media.SpeechBackend and detects
// ffmpeg (cfg.Media.FFmpeg): it is looked up, asked for its version and
// made to convert a built-in AMR clip, so a build without the AMR decoder
// is found at start, not on the first voice message. A missing ffmpeg is
// not an error (AMR then gets errNoFFmpeg; the fix is logged once here).
// It returns nil, nil when media.speech_backend is "".
func newSpeech(ctx context.Context, cfg *Config, hc *http.Client, log *slog.Logger) (*speech, error) {
	name := cfg.Media.SpeechBackend
	if name == "" {
		return nil, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bc, ok := cfg.Backends[name]
	if !ok {
		return nil, fmt.Errorf("bridge: media.speech_backend: 没有名为 %q 的后端 / no backend named %q", name, name)
	}
	tr, err := llm.NewTranscriber(bc, hc, log)
	if err != nil {
		return nil, fmt.Errorf("bridge: media.speech_backend = %q: %w", name, err)
	}
	s := &speech{tr: tr, backend: name, log: log.With("component", "speech"),
		maxIn: cfg.Media.MaxBytes, maxOut: bc.MaxAudioBytes,
		ffmpegKey: cfg.Media.FFmpeg, sem: make(chan struct{}, ffmpegParallel)}
	if s.maxOut <= 0 {
		s.maxOut = llm.DefaultMaxAudioBytes
	}
	if s.ffmpegKey == "" {
		s.ffmpegKey = "ffmpeg"
	}
	s.detect(ctx)
	if s.ffmpeg == "" {
		s.log.Warn("应用的语音消息需要 ffmpeg 把 AMR 转换后才能转写，现在会回复不支持语音：请安装（apt-get install ffmpeg）或设置 media.ffmpeg / app voice messages need ffmpeg to convert AMR before transcription and will get the not-supported reply: install it (apt-get install ffmpeg) or set media.ffmpeg",
			"ffmpeg", s.ffmpegKey, "reason", s.ffmpegWhy)
	} else {
		s.log.Info("ffmpeg found for voice messages", "path", s.ffmpeg, "version", s.ffmpegVersion, "speech_backend", name)
	}
	return s, nil
}

// detect finds ffmpeg and proves it converts AMR; it sets s.ffmpeg or
// s.ffmpegWhy.
func (s *speech) detect(ctx context.Context) {
	p, err := exec.LookPath(s.ffmpegKey)
	if err != nil {
		s.ffmpegWhy = fmt.Sprintf("找不到 ffmpeg（media.ffmpeg = %q）/ ffmpeg not found (media.ffmpeg = %q)", s.ffmpegKey, s.ffmpegKey)
		if !errors.Is(err, exec.ErrNotFound) && !errors.Is(err, fs.ErrNotExist) {
			s.ffmpegWhy += ": " + err.Error()
		}
		return
	}
	vctx, cancel := context.WithTimeout(ctx, ffmpegProbeTimeout)
	defer cancel()
	cmd := exec.CommandContext(vctx, p, "-hide_banner", "-version")
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		s.ffmpegWhy = fmt.Sprintf("%s -version 失败 / failed (media.ffmpeg = %q): %v", p, s.ffmpegKey, err)
		return
	}
	version := "unknown"
	if line, _, _ := strings.Cut(string(out), "\n"); strings.HasPrefix(line, "ffmpeg version ") {
		version, _, _ = strings.Cut(strings.TrimPrefix(line, "ffmpeg version "), " ")
	}
	// A conversion of a known clip proves the amr demuxer and decoder,
	// the wav muxer and the pipes, as the voice messages will use them.
	wav, err := s.run(ctx, p, amrClip(5), ffmpegProbeTimeout)
	if err != nil {
		s.ffmpegWhy = fmt.Sprintf("%s（%s）不能转换 AMR（需要 amrnb 解码器）/ cannot convert AMR (needs the amrnb decoder) (media.ffmpeg = %q): %v", p, version, s.ffmpegKey, err)
		return
	}
	const want = 5 * 20 * 16000 * 2 / 1000 // 5 frames of 20 ms, 16 kHz, 16 bits
	if n := wavDataBytes(wav); n != want {
		s.ffmpegWhy = fmt.Sprintf("%s（%s）转换测试片段得到 %d 字节而不是 %d / converted the test clip to %d bytes of samples, not %d (media.ffmpeg = %q)",
			p, version, n, want, n, want, s.ffmpegKey)
		return
	}
	s.ffmpeg, s.ffmpegVersion = p, version
}

// available reports whether app voice (AMR) can be transcribed; when not,
// why names the config key or the command that fixes it, for the operator.
func (s *speech) available() (ok bool, why string) {
	switch {
	case s == nil:
		return false, "未配置 media.speech_backend（需要带 transcription_model 的 [backends.NAME]）/ media.speech_backend is not set (it needs a [backends.NAME] with transcription_model)"
	case s.ffmpeg == "":
		return false, s.ffmpegWhy + "：请安装 ffmpeg（apt-get install ffmpeg）或设置 media.ffmpeg / install ffmpeg (apt-get install ffmpeg) or set media.ffmpeg"
	}
	return true, ""
}

// isAMR reports whether the audio is AMR, by MIME, file name or magic.
func isAMR(data []byte, mime, name string) bool {
	mt, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(mime)), ";")
	return strings.HasPrefix(strings.TrimSpace(mt), "audio/amr") ||
		strings.EqualFold(path.Ext(name), ".amr") ||
		bytes.HasPrefix(data, []byte("#!AMR"))
}

// transcribe returns the text spoken in data. AMR (the app's voice, by
// MIME audio/amr, a .amr name or the "#!AMR" magic) is converted with
// ffmpeg to 16 kHz mono WAV first; other audio is sent as it is. Errors:
// errNoSpeech (s is nil), errAudioTooLarge, errNoFFmpeg, *ffmpegError
// (errConvert), and the transcriber's (*llm.FileError, *llm.APIError,
// llm.ErrEmptyTranscript, timeouts).
func (s *speech) transcribe(ctx context.Context, data []byte, mime, name string) (string, error) {
	if s == nil {
		return "", errNoSpeech
	}
	if s.maxIn > 0 && int64(len(data)) > s.maxIn {
		return "", fmt.Errorf("%w: %d 字节，上限 media.max_bytes = %d / %d bytes, limit media.max_bytes = %d", errAudioTooLarge, len(data), s.maxIn, len(data), s.maxIn)
	}
	f := llm.File{Kind: llm.FileAudio, Name: name, MIME: mime, Data: data}
	if isAMR(data, mime, name) {
		if s.ffmpeg == "" {
			return "", errNoFFmpeg
		}
		wav, err := s.convert(ctx, data)
		if err != nil {
			return "", err
		}
		base := strings.TrimSuffix(path.Base(name), path.Ext(name))
		if name == "" || base == "" || base == "." || base == "/" {
			base = "voice"
		}
		f = llm.File{Kind: llm.FileAudio, Name: base + ".wav", MIME: "audio/wav", Data: wav}
	}
	text, err := s.tr.Transcribe(ctx, f)
	if err != nil {
		return "", fmt.Errorf("bridge: speech: media.speech_backend = %q: %w", s.backend, err)
	}
	s.log.Debug("voice transcribed", "bytes", len(data), "sent_bytes", len(f.Data), "chars", len([]rune(text)))
	return text, nil
}

// convert turns AMR into 16 kHz mono 16-bit WAV, at most maxOut bytes.
func (s *speech) convert(ctx context.Context, amr []byte) ([]byte, error) {
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	case <-ctx.Done():
		return nil, fmt.Errorf("bridge: speech: waiting for ffmpeg: %w", context.Cause(ctx))
	}
	wav, err := s.run(ctx, s.ffmpeg, amr, ffmpegConvertTimeout)
	if err != nil {
		return nil, err
	}
	s.log.Debug("voice converted", "amr_bytes", len(amr), "wav_bytes", len(wav))
	return wav, nil
}

// run pipes amr through ffmpeg at path p and returns the WAV, with its
// RIFF and data sizes filled in (ffmpeg cannot seek back on a pipe and
// leaves them 0xFFFFFFFF, which some readers refuse).
func (s *speech) run(ctx context.Context, p string, amr []byte, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p, "-hide_banner", "-loglevel", "error",
		"-f", "amr", "-i", "pipe:0",
		"-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le",
		"-fflags", "+bitexact", "-flags:a", "+bitexact", // no LIST/encoder chunk
		"-f", "wav", "pipe:1")
	cmd.Stdin = bytes.NewReader(amr)
	var stderr tailBuffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, &ffmpegError{Err: err}
	}
	if err := cmd.Start(); err != nil {
		return nil, &ffmpegError{Err: err}
	}
	maxOut := s.maxOut
	if maxOut <= 0 {
		maxOut = llm.DefaultMaxAudioBytes
	}
	wav, rerr := io.ReadAll(io.LimitReader(stdout, maxOut+1))
	tooLarge := int64(len(wav)) > maxOut
	if tooLarge {
		cancel() // stop ffmpeg; the rest is not wanted
	}
	werr := cmd.Wait()
	switch {
	case tooLarge:
		return nil, fmt.Errorf("%w: 转换后超过 %d 字节（后端 max_audio_bytes）/ converted audio is over %d bytes (the backend's max_audio_bytes)", errAudioTooLarge, maxOut, maxOut)
	case ctx.Err() != nil:
		return nil, &ffmpegError{Err: fmt.Errorf("stopped (limit %s): %w", timeout, context.Cause(ctx)), Stderr: stderr.String()}
	case werr != nil:
		return nil, &ffmpegError{Err: werr, Stderr: stderr.String()}
	case rerr != nil:
		return nil, &ffmpegError{Err: rerr, Stderr: stderr.String()}
	}
	if err := fixWAVSizes(wav); err != nil {
		return nil, &ffmpegError{Err: err, Stderr: stderr.String()}
	}
	if wavDataBytes(wav) == 0 {
		return nil, &ffmpegError{Err: errors.New("no audio decoded"), Stderr: stderr.String()}
	}
	return wav, nil
}

// fixWAVSizes sets the RIFF size and the data chunk's size of a WAV held
// whole in memory (the data chunk is taken to run to the end).
func fixWAVSizes(b []byte) error {
	if len(b) < 12 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return errors.New("output is not WAV")
	}
	binary.LittleEndian.PutUint32(b[4:8], uint32(len(b)-8))
	for off := 12; off+8 <= len(b); {
		id, size := string(b[off:off+4]), binary.LittleEndian.Uint32(b[off+4:off+8])
		if id == "data" {
			binary.LittleEndian.PutUint32(b[off+4:off+8], uint32(len(b)-off-8))
			return nil
		}
		next := int64(off) + 8 + int64(size) + int64(size&1)
		if next > int64(len(b)) {
			break
		}
		off = int(next)
	}
	return errors.New("output WAV has no data chunk")
}

// wavDataBytes returns the size of a WAV's data chunk (0 when there is
// none), as its header states it, capped by what is there.
func wavDataBytes(b []byte) int {
	if len(b) < 12 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return 0
	}
	for off := int64(12); off+8 <= int64(len(b)); {
		id, size := string(b[off:off+4]), int64(binary.LittleEndian.Uint32(b[off+4:off+8]))
		if id == "data" {
			return int(min(size, int64(len(b))-off-8))
		}
		off += 8 + size + size&1
	}
	return 0
}

// amrClip returns an AMR-NB file (RFC 4867 §5 storage format) of n
// 20 ms frames in the 4.75 kbit/s mode (frame header 0x04, 12 bytes of
// speech bits, here zeros): the start-up test input.
func amrClip(n int) []byte {
	b := append(make([]byte, 0, 6+13*n), "#!AMR\n"...)
	for range n {
		b = append(b, 0x04)
		b = append(b, make([]byte, 12)...)
	}
	return b
}

// tailBuffer keeps the last ffmpegStderrTail bytes written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - ffmpegStderrTail; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	return strings.Join(strings.Fields(strings.ToValidUTF8(string(t.b), "")), " ")
}

// checkRow reports, for the check command, whether app voice can be
// transcribed: ffmpeg (path and version, or the fix) and whether the
// speech backend answers (its model list names transcription_model).
// Status: OK when both work, WARN when the backend answers but ffmpeg is
// missing (app voice gets the not-supported reply), FAIL when the backend
// does not answer, INFO when no speech backend is configured.
func (s *speech) checkRow(ctx context.Context) checkRow {
	if s == nil {
		return checkRow{"-", "speech", "INFO", "未配置 media.speech_backend：应用的语音消息会回复不支持语音 / no media.speech_backend: app voice messages get the not-supported reply"}
	}
	ctx, cancel := context.WithTimeout(ctx, checkStepTimeout)
	defer cancel()
	var parts []string
	status := "OK"
	if s.ffmpeg != "" {
		parts = append(parts, fmt.Sprintf("ffmpeg %s（%s）可转换 AMR / converts AMR", s.ffmpegVersion, s.ffmpeg))
	} else {
		status = "WARN"
		_, why := s.available()
		parts = append(parts, why)
	}
	info, err := s.tr.Check(ctx)
	model := ""
	if info != nil {
		model = info.Model
	}
	if err != nil {
		status = "FAIL"
		detail := explain(err)
		if le := (*llm.APIError)(nil); errors.As(err, &le) && le.Status == 0 {
			detail = le.Error() // no HTTP status to show (e.g. the model list lacks the model)
		}
		parts = append(parts, fmt.Sprintf("语音后端 backends.%s 不可用 / speech backend backends.%s fails: %s", s.backend, s.backend, detail))
	} else {
		parts = append(parts, fmt.Sprintf("语音后端 backends.%s 可用（%s）/ speech backend answers (transcription_model %s)", s.backend, model, model))
	}
	return checkRow{"-", "speech", status, strings.Join(parts, "; ")}
}
