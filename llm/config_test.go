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
