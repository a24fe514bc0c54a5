package bridge

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
)

// needFFmpeg fails under CI (which installs ffmpeg: .ci/test.sh) and
// skips loudly elsewhere when ffmpeg is not on PATH.
func needFFmpeg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must convert real AMR voice with ffmpeg, but it is not on PATH (.ci/test.sh installs it): %v", err)
		}
		t.Skipf("SKIPPING the ffmpeg voice conversion test: ffmpeg is not on PATH (apt-get install ffmpeg): %v", err)
	}
}

// speechConfig is a config whose media.speech_backend is the fake.
func speechConfig(f *llmtest.OpenAI, ffmpeg string) *Config {
	return &Config{
		Media: MediaConfig{SpeechBackend: "speech", FFmpeg: ffmpeg, MaxBytes: DefaultMediaMaxBytes},
		Backends: map[string]llm.Config{"speech": {Type: llm.TypeOpenAI, BaseURL: f.URL(), APIKey: "sk-llmtest",
			TranscriptionModel: "whisper-1", RetryBase: 1}},
	}
}

func newTestSpeech(t *testing.T, cfg *Config) (*speech, *syncBuffer) {
	t.Helper()
	logs := newSyncBuffer() // harness_test.go
	s, err := newSpeech(t.Context(), cfg, nil, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatalf("newSpeech: %v", err)
	}
	if s == nil {
		t.Fatal("newSpeech returned nil with a speech backend configured")
	}
	return s, logs
}

// amrVoice is an AMR-NB file as WeCom serves app voice (RFC 4867 §5:
// "#!AMR\n", then frames), of n 20 ms frames in the 12.2 kbit/s mode
// (header 0x3C, 31 bytes) with pseudo-random speech bits. Debian's ffmpeg
// decodes AMR but has no AMR encoder, so the frames are written here.
func amrVoice(n int) []byte {
	r := rand.New(rand.NewPCG(11, 2026))
	b := []byte("#!AMR\n")
	for range n {
		b = append(b, 0x3C)
		for range 31 {
			b = append(b, byte(r.Uint32()))
		}
	}
	return b
}

// checkWAV asserts b is a 16 kHz mono 16-bit WAV with consistent sizes
// and returns its data bytes.
func checkWAV(t *testing.T, b []byte) int {
	t.Helper()
	if len(b) < 44 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" || string(b[12:16]) != "fmt " {
		t.Fatalf("not WAV: % x", b[:min(len(b), 16)])
	}
	if got := binary.LittleEndian.Uint32(b[4:8]); int(got) != len(b)-8 {
		t.Errorf("RIFF size %d, file has %d bytes after it", got, len(b)-8)
	}
	channels, rate, bits := binary.LittleEndian.Uint16(b[22:24]), binary.LittleEndian.Uint32(b[24:28]), binary.LittleEndian.Uint16(b[34:36])
	if channels != 1 || rate != 16000 || bits != 16 {
		t.Errorf("WAV is %d channel(s), %d Hz, %d bits; want 1, 16000, 16", channels, rate, bits)
	}
	i := bytes.Index(b, []byte("data"))
	if i < 0 {
		t.Fatal("WAV has no data chunk")
	}
	if got := binary.LittleEndian.Uint32(b[i+4 : i+8]); int(got) != len(b)-i-8 {
		t.Errorf("data size %d, file has %d bytes of samples", got, len(b)-i-8)
	}
	return len(b) - i - 8
}

func TestSpeechConvertsAMR(t *testing.T) {
	needFFmpeg(t)
	f := llmtest.NewOpenAI(llmtest.WithTranscriptionModels("whisper-1"))
	defer f.Close()
	s, logs := newTestSpeech(t, speechConfig(f, "ffmpeg"))
	if ok, why := s.available(); !ok {
		t.Fatalf("available = false with ffmpeg on PATH: %s", why)
	}
	if !strings.Contains(logs.String(), "ffmpeg found") || !strings.Contains(logs.String(), "version=") {
		t.Errorf("start-up log does not report ffmpeg and its version:\n%s", logs)
	}

	// The fake refuses AMR as OpenAI does: sent as is, it would fail.
	voice := amrVoice(50) // 1 s
	f.PushTranscript("请帮我查一下上个月的报销进度。")
	text, err := s.transcribe(t.Context(), voice, "audio/amr", "1234567.amr")
	if err != nil {
		t.Fatalf("transcribe: %v", err)
	}
	if text != "请帮我查一下上个月的报销进度。" {
		t.Errorf("text = %q", text)
	}
	got := f.Transcriptions()
	if len(got) != 1 {
		t.Fatalf("fake got %d transcription requests, want 1", len(got))
	}
	if got[0].FileName != "1234567.wav" || got[0].Model != "whisper-1" {
		t.Errorf("sent file %q to model %q, want 1234567.wav to whisper-1", got[0].FileName, got[0].Model)
	}
	if bytes.HasPrefix(got[0].Data, []byte("#!AMR")) {
		t.Fatal("AMR was sent unconverted")
	}
	if n := checkWAV(t, got[0].Data); n != 32000 {
		t.Errorf("WAV holds %d bytes of samples, want 32000 (1 s of 16 kHz 16-bit mono from 50 AMR frames)", n)
	}
	if strings.Contains(logs.String(), "报销") {
		t.Errorf("the transcript was logged above debug:\n%s", logs)
	}

	// Recognised by its magic alone (no MIME, no name).
	f.PushTranscript("第二条")
	if text, err := s.transcribe(t.Context(), amrVoice(10), "", ""); err != nil || text != "第二条" {
		t.Fatalf("transcribe by magic = %q, %v", text, err)
	}
	got = f.Transcriptions()
	if last := got[len(got)-1]; last.FileName != "voice.wav" || checkWAV(t, last.Data) != 6400 {
		t.Errorf("by magic: sent %q with %d bytes", last.FileName, len(last.Data))
	}

	// Other audio passes through unconverted, byte for byte.
	mp3 := append([]byte("ID3\x03\x00\x00\x00\x00\x00\x00"), bytes.Repeat([]byte{0xFF, 0xFB, 0x90, 0x00}, 200)...)
	f.PushTranscript("mp3 原样")
	if text, err := s.transcribe(t.Context(), mp3, "audio/mpeg", "note.mp3"); err != nil || text != "mp3 原样" {
		t.Fatalf("transcribe mp3 = %q, %v", text, err)
	}
	got = f.Transcriptions()
	if last := got[len(got)-1]; last.FileName != "note.mp3" || !bytes.Equal(last.Data, mp3) {
		t.Errorf("mp3 was altered: sent %q, %d bytes (want %d)", last.FileName, len(last.Data), len(mp3))
	}
}

func TestSpeechFFmpegFailures(t *testing.T) {
	needFFmpeg(t)
	f := llmtest.NewOpenAI()
	defer f.Close()
	s, _ := newTestSpeech(t, speechConfig(f, "ffmpeg"))

	// Not AMR at all, but named .amr: ffmpeg's amr demuxer refuses it.
	_, err := s.transcribe(t.Context(), []byte("this is not audio, just some text pretending"), "", "v.amr")
	var fe *ffmpegError
	if !errors.As(err, &fe) || !errors.Is(err, errConvert) {
		t.Fatalf("garbage: err = %v, want an *ffmpegError", err)
	}
	if !strings.Contains(fe.Stderr, "Invalid data") {
		t.Errorf("ffmpeg's stderr not kept: %q", fe.Stderr)
	}
	// A header and no frames decodes to nothing.
	if _, err := s.transcribe(t.Context(), []byte("#!AMR\n"), "audio/amr", "v.amr"); !errors.Is(err, errConvert) || !strings.Contains(err.Error(), "no audio") {
		t.Errorf("empty AMR: err = %v, want errConvert (no audio decoded)", err)
	}
	if n := len(f.Transcriptions()); n != 0 {
		t.Errorf("failed conversions were sent: %d requests", n)
	}

	// The conversion is bounded by the caller's context.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.transcribe(ctx, amrVoice(50), "audio/amr", "v.amr"); err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v, want context.Canceled", err)
	}

	// The converted size is bounded by the backend's max_audio_bytes.
	cfg := speechConfig(f, "ffmpeg")
	bc := cfg.Backends["speech"]
	bc.MaxAudioBytes = 10000
	cfg.Backends["speech"] = bc
	small, _ := newTestSpeech(t, cfg)
	if _, err := small.transcribe(t.Context(), amrVoice(50), "audio/amr", "v.amr"); !errors.Is(err, errAudioTooLarge) || !strings.Contains(err.Error(), "max_audio_bytes") {
		t.Errorf("over max_audio_bytes: err = %v, want errAudioTooLarge naming max_audio_bytes", err)
	}
	// And the input by media.max_bytes.
	cfg.Media.MaxBytes = 100
	tiny, _ := newTestSpeech(t, cfg)
	if _, err := tiny.transcribe(t.Context(), amrVoice(10), "audio/amr", "v.amr"); !errors.Is(err, errAudioTooLarge) || !strings.Contains(err.Error(), "media.max_bytes") {
		t.Errorf("over media.max_bytes: err = %v, want errAudioTooLarge naming media.max_bytes", err)
	}
	if n := len(f.Transcriptions()); n != 0 {
		t.Errorf("refused audio was sent: %d requests", n)
	}
}

func TestSpeechWithoutFFmpeg(t *testing.T) {
	f := llmtest.NewOpenAI(llmtest.WithModels("whisper-1"))
	defer f.Close()
	missing := filepath.Join(t.TempDir(), "no-such-ffmpeg")
	s, logs := newTestSpeech(t, speechConfig(f, missing))

	ok, why := s.available()
	if ok {
		t.Fatal("available = true with media.ffmpeg pointing at nothing")
	}
	for _, want := range []string{"apt-get install ffmpeg", "media.ffmpeg", missing} {
		if !strings.Contains(why, want) {
			t.Errorf("why does not say %q: %s", want, why)
		}
	}
	if l := logs.String(); strings.Count(l, "level=WARN") != 1 || !strings.Contains(l, "apt-get install ffmpeg") || !strings.Contains(l, "media.ffmpeg") {
		t.Errorf("want one start-up warning with the fix, got:\n%s", l)
	}

	if _, err := s.transcribe(t.Context(), amrVoice(5), "audio/amr", "v.amr"); !errors.Is(err, errNoFFmpeg) {
		t.Errorf("AMR without ffmpeg: err = %v, want errNoFFmpeg", err)
	}
	if n := len(f.Transcriptions()); n != 0 {
		t.Errorf("AMR was sent without conversion: %d requests", n)
	}
	// Audio the server reads needs no ffmpeg.
	wav := append([]byte("RIFF\x24\x00\x00\x00WAVEfmt "), make([]byte, 200)...)
	f.PushTranscript("无需转换")
	if text, err := s.transcribe(t.Context(), wav, "audio/wav", "a.wav"); err != nil || text != "无需转换" {
		t.Errorf("wav without ffmpeg = %q, %v", text, err)
	}
	if got := f.Transcriptions(); len(got) != 1 || !bytes.Equal(got[0].Data, wav) {
		t.Errorf("wav not passed through: %d requests", len(got))
	}

	r := s.checkRow(t.Context())
	if r.step != "speech" || r.status != "WARN" || !strings.Contains(r.detail, "apt-get install ffmpeg") {
		t.Errorf("check row = %+v, want WARN with the fix", r)
	}
}

// A program that is there but is not a working ffmpeg is found at start.
func TestSpeechNotAnFFmpeg(t *testing.T) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Fatalf("no true(1) on this machine: %v", err)
	}
	f := llmtest.NewOpenAI()
	defer f.Close()
	s, _ := newTestSpeech(t, speechConfig(f, truePath))
	ok, why := s.available()
	if ok || !strings.Contains(why, "AMR") || !strings.Contains(why, "media.ffmpeg") {
		t.Errorf("available = %v, %q; want false, saying it cannot convert AMR", ok, why)
	}
	if _, err := s.transcribe(t.Context(), amrVoice(5), "audio/amr", "v.amr"); !errors.Is(err, errNoFFmpeg) {
		t.Errorf("err = %v, want errNoFFmpeg", err)
	}
}

func TestSpeechNotConfigured(t *testing.T) {
	s, err := newSpeech(t.Context(), &Config{Media: MediaConfig{FFmpeg: "ffmpeg"}}, nil, nil)
	if s != nil || err != nil {
		t.Fatalf("newSpeech without media.speech_backend = %v, %v; want nil, nil", s, err)
	}
	if ok, why := s.available(); ok || !strings.Contains(why, "media.speech_backend") {
		t.Errorf("available = %v, %q", ok, why)
	}
	if _, err := s.transcribe(t.Context(), amrVoice(5), "audio/amr", "v.amr"); !errors.Is(err, errNoSpeech) {
		t.Errorf("err = %v, want errNoSpeech", err)
	}
	if r := s.checkRow(t.Context()); r.status != "INFO" || !strings.Contains(r.detail, "media.speech_backend") {
		t.Errorf("check row = %+v", r)
	}

	// A backend without transcription_model is refused, naming the key.
	cfg := &Config{Media: MediaConfig{SpeechBackend: "chat", FFmpeg: "ffmpeg"},
		Backends: map[string]llm.Config{"chat": {Type: llm.TypeOpenAI, BaseURL: "http://127.0.0.1:1/v1", APIKey: "sk-x", Model: "gpt-4o-mini"}}}
	if _, err := newSpeech(t.Context(), cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "transcription_model") || !strings.Contains(err.Error(), "media.speech_backend") {
		t.Errorf("backend without transcription_model: err = %v", err)
	}
	cfg.Media.SpeechBackend = "nope"
	if _, err := newSpeech(t.Context(), cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "media.speech_backend") {
		t.Errorf("unknown backend: err = %v", err)
	}
}

func TestSpeechCheckRow(t *testing.T) {
	needFFmpeg(t)
	f := llmtest.NewOpenAI(llmtest.WithModels("gpt-4o-mini", "whisper-1"))
	defer f.Close()
	s, _ := newTestSpeech(t, speechConfig(f, "ffmpeg"))
	r := s.checkRow(t.Context())
	if r.app != "-" || r.step != "speech" || r.status != "OK" || !strings.Contains(r.detail, "ffmpeg "+s.ffmpegVersion) || !strings.Contains(r.detail, "whisper-1") {
		t.Errorf("check row = %+v, want OK with the ffmpeg version and the model", r)
	}
	if s.ffmpegVersion == "" || s.ffmpegVersion == "unknown" {
		t.Errorf("ffmpeg version not read: %q", s.ffmpegVersion)
	}

	// The server does not list transcription_model: FAIL, naming it.
	f.SetModels("gpt-4o-mini")
	if r := s.checkRow(t.Context()); r.status != "FAIL" || !strings.Contains(r.detail, "backends.speech") || !strings.Contains(r.detail, "transcription_model") || strings.Contains(r.detail, "HTTP 0") {
		t.Errorf("check row = %+v, want FAIL naming the backend and transcription_model", r)
	}
	// The server is down: FAIL.
	f.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if r := s.checkRow(ctx); r.status != "FAIL" {
		t.Errorf("check row with the server down = %+v, want FAIL", r)
	}
}

func TestWAVSizes(t *testing.T) {
	// As ffmpeg writes WAV to a pipe: sizes unknown (0xFFFFFFFF).
	b := []byte("RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00" + strings.Repeat("\x00", 16) + "data\xff\xff\xff\xff" + "\x01\x02\x03\x04")
	if err := fixWAVSizes(b); err != nil {
		t.Fatal(err)
	}
	if n := wavDataBytes(b); n != 4 {
		t.Errorf("data bytes = %d, want 4", n)
	}
	if got := binary.LittleEndian.Uint32(b[4:8]); int(got) != len(b)-8 {
		t.Errorf("RIFF size = %d, want %d", got, len(b)-8)
	}
	for _, bad := range []string{"", "RIFF", "RIFF\x00\x00\x00\x00WAVE", "RIFF\x00\x00\x00\x00WAVEfmt \xff\xff\xff\x7f"} {
		if err := fixWAVSizes([]byte(bad)); err == nil {
			t.Errorf("fixWAVSizes(%q) = nil", bad)
		}
	}
}

// FuzzWAVSizes: the WAV parsers never panic nor read out of bounds,
// whatever ffmpeg (or a program in its place) writes.
func FuzzWAVSizes(f *testing.F) {
	f.Add([]byte("RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00" + strings.Repeat("\x00", 16) + "data\xff\xff\xff\xff\x01\x02"))
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVEfmt \xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := wavDataBytes(b)
		if n < 0 || n > len(b) {
			t.Fatalf("wavDataBytes = %d for %d bytes", n, len(b))
		}
		if fixWAVSizes(b) == nil && wavDataBytes(b) > len(b) {
			t.Fatal("fixed sizes run past the end")
		}
	})
}
