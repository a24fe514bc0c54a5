package aibot_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
)

func TestParseFrame(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     *aibot.Frame
		err      error
	}{
		{"callback", `{"cmd":"aibot_msg_callback","headers":{"req_id":"R1","x":1},"body":{"msgid":"m"},"extra":true}`,
			&aibot.Frame{Cmd: aibot.CmdMsgCallback, Headers: aibot.Headers{ReqID: "R1"}, Body: json.RawMessage(`{"msgid":"m"}`)}, nil},
		{"ack ok", `{"headers":{"req_id":"aibot_subscribe_1_ab"},"errcode":0,"errmsg":"ok"}`,
			&aibot.Frame{Headers: aibot.Headers{ReqID: "aibot_subscribe_1_ab"}, ErrMsg: "ok"}, nil},
		{"ack error", `{"headers":{"req_id":"r"},"errcode":846605,"errmsg":"invalid req_id"}`,
			&aibot.Frame{Headers: aibot.Headers{ReqID: "r"}, ErrCode: 846605, ErrMsg: "invalid req_id"}, nil},
		{"errcode as string", `{"headers":{"req_id":"r"},"errcode":"0"}`, &aibot.Frame{Headers: aibot.Headers{ReqID: "r"}}, nil},
		{"null body", `{"cmd":"ping","headers":{"req_id":"p"},"body":null}`, &aibot.Frame{Cmd: "ping", Headers: aibot.Headers{ReqID: "p"}}, nil},
		{"control chars stripped like the SDK", "{\"cmd\":\"aibot_msg_callback\",\x01\"headers\":{\"req_id\":\"r\x02\"}}",
			&aibot.Frame{Cmd: aibot.CmdMsgCallback, Headers: aibot.Headers{ReqID: "r"}}, nil},
		{"ack without errcode", `{"headers":{"req_id":"r"}}`, nil, wecom.ErrMalformed},
		{"no req_id", `{"cmd":"aibot_msg_callback","headers":{}}`, nil, wecom.ErrMalformed},
		{"empty req_id", `{"cmd":"x","headers":{"req_id":""}}`, nil, wecom.ErrMalformed},
		{"no headers", `{"cmd":"x"}`, nil, wecom.ErrMalformed},
		{"array", `[1]`, nil, wecom.ErrMalformed},
		{"garbage", `{"cmd":`, nil, wecom.ErrMalformed},
		{"req_id not string", `{"cmd":"x","headers":{"req_id":5}}`, nil, wecom.ErrMalformed},
		{"long req_id", `{"cmd":"x","headers":{"req_id":"` + strings.Repeat("a", 257) + `"}}`, nil, wecom.ErrTooLarge},
		{"long cmd", `{"cmd":"` + strings.Repeat("c", 65) + `","headers":{"req_id":"r"}}`, nil, wecom.ErrTooLarge},
		{"huge", `{"cmd":"x","headers":{"req_id":"r"},"body":"` + strings.Repeat("a", aibot.MaxFrameSize) + `"}`, nil, wecom.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := aibot.ParseFrame([]byte(tc.in))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestFrameMarshal(t *testing.T) {
	ack, _ := json.Marshal(aibot.Frame{Headers: aibot.Headers{ReqID: "r"}})
	if string(ack) != `{"headers":{"req_id":"r"},"errcode":0,"errmsg":""}` {
		t.Errorf("ack %s: the SDK needs errcode present", ack)
	}
	cmd, _ := json.Marshal(aibot.Frame{Cmd: aibot.CmdPing, Headers: aibot.Headers{ReqID: "ping_1"}})
	if string(cmd) != `{"cmd":"ping","headers":{"req_id":"ping_1"}}` {
		t.Errorf("ping %s", cmd)
	}
	withBody, _ := json.Marshal(&aibot.Frame{Cmd: aibot.CmdSendMsg, Headers: aibot.Headers{ReqID: "s"}, Body: json.RawMessage(`{"a":1}`)})
	if string(withBody) != `{"cmd":"aibot_send_msg","headers":{"req_id":"s"},"body":{"a":1}}` {
		t.Errorf("frame %s", withBody)
	}
}

func TestParseMessage(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		check    func(t *testing.T, m *aibot.Message)
	}{
		{"group text", `{"msgid":"CAIQ16HMjQYY\/NGagIOAgAMgq4KM0AI=","aibotid":"AIBOTID","chatid":"CHATID","chattype":"group","from":{"userid":"USERID"},"response_url":"RESPONSEURL","msgtype":"text","text":{"content":"@RobotA hello robot"},"create_time":1700000000}`,
			func(t *testing.T, m *aibot.Message) {
				if m.MsgID != "CAIQ16HMjQYY/NGagIOAgAMgq4KM0AI=" || m.ChatKey() != "CHATID" || m.Question() != "@RobotA hello robot" || m.CreateTime != 1700000000 || m.ResponseURL != "RESPONSEURL" {
					t.Errorf("%+v", m)
				}
			}},
		{"single voice, create_time string", `{"msgid":"v","aibotid":"A","chattype":"single","from":{"userid":"U"},"msgtype":"voice","voice":{"content":"语音转文字"},"create_time":"1700000001"}`,
			func(t *testing.T, m *aibot.Message) {
				if m.Question() != "语音转文字" || m.ChatKey() != "U" || m.CreateTime != 1700000001 {
					t.Errorf("%+v", m)
				}
			}},
		{"mixed", `{"msgid":"x","msgtype":"mixed","chattype":"single","from":{"userid":"U"},"mixed":{"msg_item":[{"msgtype":"text","text":{"content":"看图"}},{"msgtype":"image","image":{"url":"https://example.invalid/i","aeskey":"K"}},{"msgtype":"text","text":{"content":"说明"}}]}}`,
			func(t *testing.T, m *aibot.Message) {
				if m.Question() != "看图\n说明" || len(m.Mixed.Items) != 3 || m.Mixed.Items[1].Image.AESKey != "K" {
					t.Errorf("%+v", m.Mixed)
				}
			}},
		{"image file video", `{"msgid":"i","msgtype":"image","from":{"userid":"U"},"image":{"url":"u1","aeskey":"k1"},"file":{"url":"u2"},"video":{"url":"u3","aeskey":"k3"}}`,
			func(t *testing.T, m *aibot.Message) {
				if m.Image.URL != "u1" || m.Image.AESKey != "k1" || m.File.URL != "u2" || m.Video.AESKey != "k3" || m.Question() != "" {
					t.Errorf("%+v", m)
				}
			}},
		{"quote", `{"msgid":"q","msgtype":"text","from":{"userid":"U"},"text":{"content":"这个对吗"},"quote":{"msgtype":"text","text":{"content":"原文"}}}`,
			func(t *testing.T, m *aibot.Message) {
				if m.Quote == nil || m.Quote.MsgType != "text" || m.Quote.Text.Content != "原文" {
					t.Errorf("%+v", m.Quote)
				}
			}},
		{"stream refresh", `{"msgid":"s","msgtype":"stream","stream":{"id":"STREAMID"},"from":{"userid":"U"}}`,
			func(t *testing.T, m *aibot.Message) {
				if m.Stream == nil || m.Stream.ID != "STREAMID" {
					t.Errorf("%+v", m)
				}
			}},
		{"enter_chat", `{"msgid":"e","create_time":1700000000,"aibotid":"A","from":{"userid":"U","corpid":"C"},"msgtype":"event","event":{"eventtype":"enter_chat"}}`,
			func(t *testing.T, m *aibot.Message) {
				if m.Event.EventType != aibot.EventEnterChat || m.From.CorpID != "C" {
					t.Errorf("%+v", m)
				}
			}},
		{"feedback", `{"msgid":"f","msgtype":"event","from":{"userid":"U"},"event":{"eventtype":"feedback_event","feedback_event":{"id":"FB1","type":2,"content":"再详细些","inaccurate_reason_list":[2,4]}}}`,
			func(t *testing.T, m *aibot.Message) {
				fb := m.Event.Feedback
				if fb == nil || fb.ID != "FB1" || fb.Type != aibot.FeedbackInaccurate || fb.Content != "再详细些" || !reflect.DeepEqual(fb.InaccurateReasons, []int{2, 4}) {
					t.Errorf("%+v", fb)
				}
			}},
		{"template card", `{"msgid":"t","msgtype":"event","from":{"userid":"U"},"event":{"eventtype":"template_card_event","template_card_event":{"card_type":"button_interaction","event_key":"ok","task_id":"T1"}}}`,
			func(t *testing.T, m *aibot.Message) {
				if tc := m.Event.TemplateCard; tc == nil || tc.EventKey != "ok" || tc.TaskID != "T1" {
					t.Errorf("%+v", tc)
				}
			}},
		{"disconnected", `{"msgid":"d","msgtype":"event","aibotid":"A","create_time":1,"event":{"eventtype":"disconnected_event"}}`,
			func(t *testing.T, m *aibot.Message) {
				if m.Event.EventType != aibot.EventDisconnected {
					t.Errorf("%+v", m)
				}
			}},
		{"unknown type passes", `{"msgid":"u","msgtype":"location","from":{"userid":"U"},"location":{"x":1}}`,
			func(t *testing.T, m *aibot.Message) {
				if m.MsgType != "location" || m.Question() != "" {
					t.Errorf("%+v", m)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := aibot.ParseMessage([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, m)
		})
	}
}

func TestParseMessageRejects(t *testing.T) {
	items := strings.Repeat(`{"msgtype":"text","text":{"content":"a"}},`, 65)
	for _, tc := range []struct {
		name, in string
		err      error
	}{
		{"no msgid", `{"msgtype":"text"}`, wecom.ErrMalformed},
		{"no msgtype", `{"msgid":"m"}`, wecom.ErrMalformed},
		{"event without type", `{"msgid":"m","msgtype":"event","event":{}}`, wecom.ErrMalformed},
		{"event missing", `{"msgid":"m","msgtype":"event"}`, wecom.ErrMalformed},
		{"wrong shape", `{"msgid":"m","msgtype":"text","text":"flat"}`, wecom.ErrMalformed},
		{"bad create_time", `{"msgid":"m","msgtype":"text","create_time":"soon"}`, wecom.ErrMalformed},
		{"not object", `"x"`, wecom.ErrMalformed},
		{"too many items", `{"msgid":"m","msgtype":"mixed","mixed":{"msg_item":[` + items[:len(items)-1] + `]}}`, wecom.ErrMalformed},
		{"huge userid", `{"msgid":"m","msgtype":"text","from":{"userid":"` + strings.Repeat("u", 513) + `"}}`, wecom.ErrTooLarge},
		{"huge body", `{"msgid":"m","msgtype":"text","text":{"content":"` + strings.Repeat("u", aibot.MaxFrameSize) + `"}}`, wecom.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := aibot.ParseMessage([]byte(tc.in)); !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
		})
	}
}

func TestNewStreamBody(t *testing.T) {
	b, err := aibot.NewStreamBody("sid", "内容", false, "fb")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(b)
	if string(raw) != `{"msgtype":"stream","stream":{"id":"sid","finish":false,"content":"内容","feedback":{"id":"fb"}}}` {
		t.Errorf("%s", raw)
	}
	if _, err := aibot.NewStreamBody("", "x", false, ""); !errors.Is(err, wecom.ErrInvalidConfig) {
		t.Errorf("empty id: %v", err)
	}
	if _, err := aibot.NewStreamBody("s", strings.Repeat("x", aibot.MaxContentBytes+1), false, ""); !errors.Is(err, aibot.ErrContentTooLarge) || !errors.Is(err, wecom.ErrTooLarge) {
		t.Errorf("big: %v", err)
	}
	if _, err := aibot.NewStreamBody("s", strings.Repeat("x", aibot.MaxContentBytes), true, ""); err != nil {
		t.Errorf("at the limit: %v", err)
	}
	if _, err := aibot.NewStreamBody("s", "x", false, strings.Repeat("f", 257)); !errors.Is(err, wecom.ErrTooLarge) {
		t.Errorf("feedback id: %v", err)
	}
}

func TestAPIErrorMatching(t *testing.T) {
	var err error = &aibot.APIError{Cmd: aibot.CmdRespondMsg, ReqID: "r", Code: 846608, Msg: "stream message update expired"}
	if !errors.Is(err, aibot.ErrStreamExpired) || errors.Is(err, aibot.ErrInvalidReqID) {
		t.Error("846608 matching")
	}
	if !strings.Contains(err.Error(), "846608") || !strings.Contains(err.Error(), "proactively") {
		t.Errorf("message %q", err)
	}
	err = &aibot.APIError{Code: 846605}
	if !errors.Is(err, aibot.ErrInvalidReqID) {
		t.Error("846605 matching")
	}
	if errors.Is(&aibot.APIError{Code: 40058}, aibot.ErrInvalidReqID) {
		t.Error("other code matched")
	}
}
