package llm_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/llm"
)

// Problems gives each problem with the TOML key relative to the backend
// table, so a caller never parses error text back into keys; the order is
// stable from run to run.
func TestConfigProblemsStructured(t *testing.T) {
	cfg := llm.Config{Type: "dify", BaseURL: "ftp://x", Model: "m", SystemPrompt: "p", MaxTokens: 5,
		HistoryTurns: 2, IdleTimeout: time.Minute, Timeout: time.Second, RetryBase: -1}
	var keys []string
	for _, p := range cfg.Problems() {
		keys = append(keys, p.Key)
		if p.Msg == "" || p.Error() != p.Key+": "+p.Msg {
			t.Errorf("problem %+v formats as %q", p, p.Error())
		}
	}
	want := []string{"base_url", "api_key", "model", "system_prompt", "max_tokens", "history_turns", "idle_timeout", "retry_base"}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys %v, want %v", keys, want)
	}
	for i := 0; i < 20; i++ {
		var again []string
		for _, p := range cfg.Problems() {
			again = append(again, p.Key)
		}
		if !reflect.DeepEqual(again, want) {
			t.Fatalf("order changed: %v", again)
		}
	}
	if p := (llm.Config{Type: "openai", Model: "m"}).Problems(); len(p) != 0 {
		t.Fatalf("valid config has problems %v", p)
	}
	// Messages are Chinese first, with English.
	p := (llm.Config{}).Problems()
	if len(p) != 1 || p[0].Key != "type" || p[0].Msg != `必须填写 "dify" 或 "openai" / is required ("dify" or "openai")` {
		t.Fatalf("missing type: %+v", p)
	}
}

// The attachment keys: each is checked, names its key, and belongs to
// openai backends only.
func TestConfigAttachmentKeys(t *testing.T) {
	keys := func(c llm.Config) []string {
		var out []string
		for _, p := range c.Problems() {
			out = append(out, p.Key)
		}
		return out
	}
	tests := []struct {
		name string
		cfg  llm.Config
		want []string
	}{
		{"vision ok", llm.Config{Type: "openai", Model: "m", Vision: true, MaxImageBytes: 1 << 20, MaxFileText: 1000}, nil},
		{"speech only", llm.Config{Type: "openai", TranscriptionModel: "whisper-1", TranscriptionLanguage: "zh", MaxAudioBytes: 1}, nil},
		{"neither model", llm.Config{Type: "openai"}, []string{"model"}},
		{"image cap", llm.Config{Type: "openai", Model: "m", Vision: true, MaxImageBytes: 21 << 20}, []string{"max_image_bytes"}},
		{"negative image cap", llm.Config{Type: "openai", Model: "m", Vision: true, MaxImageBytes: -1}, []string{"max_image_bytes"}},
		{"image cap without vision", llm.Config{Type: "openai", Model: "m", MaxImageBytes: 1}, []string{"max_image_bytes"}},
		{"speech keys without model", llm.Config{Type: "openai", Model: "m", TranscriptionLanguage: "zh", MaxAudioBytes: 5},
			[]string{"max_audio_bytes", "transcription_language"}},
		{"bad language", llm.Config{Type: "openai", Model: "m", TranscriptionModel: "w", TranscriptionLanguage: "zh-CN"},
			[]string{"transcription_language"}},
		{"spaces", llm.Config{Type: "openai", Model: "m", TranscriptionModel: " w"}, []string{"transcription_model"}},
		{"negative audio", llm.Config{Type: "openai", Model: "m", TranscriptionModel: "w", MaxAudioBytes: -1}, []string{"max_audio_bytes"}},
		{"dify", llm.Config{Type: "dify", APIKey: "app-x", Vision: true, MaxFileText: 5, TranscriptionModel: "w"},
			[]string{"vision", "max_file_text_bytes", "transcription_model"}},
	}
	for _, tt := range tests {
		if got := keys(tt.cfg); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: keys %v, want %v", tt.name, got, tt.want)
		}
	}
	p := (llm.Config{Type: "dify", APIKey: "app-x", Vision: true}).Problems()
	if len(p) != 1 || p[0].Msg != "dify 后端不使用此项：附件类型在 Dify 应用编排 → 功能 → 文件上传里设置 / is not used by dify backends (attachments are set in the app's Features → File upload)" {
		t.Errorf("dify vision: %+v", p)
	}
}
