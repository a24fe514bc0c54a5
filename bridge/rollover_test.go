package bridge

import (
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// After idle_rollover of silence the next question starts a new Dify
// conversation, and the history marks it.
func TestIdleRollover(t *testing.T) {
	h := newHarnessWith(t, editApp(`idle_rollover = "300ms"`+"\nthinking_after = \"-1s\""), "")
	h.ask("helpdesk", "zhangsan", "一")
	h.waitSent("zhangsan", 1)
	h.ask("helpdesk", "zhangsan", "二")
	h.waitSent("zhangsan", 2)
	h.waitIdle()
	time.Sleep(400 * time.Millisecond)
	h.ask("helpdesk", "zhangsan", "三")
	h.waitSent("zhangsan", 3)
	h.waitIdle()
	r := h.dify.Requests()
	if len(r) != 3 || r[1].ConversationID == "" || r[2].ConversationID != "" {
		t.Fatalf("conversation ids %q %q %q", r[0].ConversationID, r[1].ConversationID, r[2].ConversationID)
	}
	e, _, _ := h.store.History(kv.HistoryQuery{User: "zhangsan"})
	if len(e) != 3 || !e[0].NewConv || e[1].NewConv || e[0].ConvSeq == e[1].ConvSeq {
		t.Fatalf("history markers: %+v", e)
	}
}
