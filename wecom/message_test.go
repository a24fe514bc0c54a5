package wecom_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/wecom-bridge/wecom-bridge/wecom"
)

func TestParseMessageTypes(t *testing.T) {
	const head = `<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>1348831860</CreateTime><AgentID>1000002</AgentID>`
	base := wecom.Message{ToUserName: "ww1", FromUserName: "zhangsan", CreateTime: 1348831860, AgentID: 1000002}
	with := func(f func(m *wecom.Message)) wecom.Message {
		m := base
		f(&m)
		return m
	}
	tests := []struct {
		name, in string
		want     wecom.Message
		key      string
	}{
		{
			name: "text",
			in:   head + `<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 <b>&amp;]]></Content><MsgId>18446744073709551615</MsgId></xml>`,
			want: with(func(m *wecom.Message) {
				m.MsgType, m.Content, m.MsgID = "text", "你好 <b>&amp;", 18446744073709551615
			}),
			key: "m:18446744073709551615",
		},
		{
			name: "text escaped",
			in:   head + `<MsgType>text</MsgType><Content>a &lt; b &amp; c</Content><MsgId>7</MsgId></xml>`,
			want: with(func(m *wecom.Message) { m.MsgType, m.Content, m.MsgID = "text", "a < b & c", 7 }),
			key:  "m:7",
		},
		{
			name: "image",
			in:   head + `<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[https://p.qpic.cn/x]]></PicUrl><MediaId><![CDATA[media1]]></MediaId><MsgId>8</MsgId></xml>`,
			want: with(func(m *wecom.Message) {
				m.MsgType, m.PicURL, m.MediaID, m.MsgID = "image", "https://p.qpic.cn/x", "media1", 8
			}),
			key: "m:8",
		},
		{
			name: "voice",
			in:   head + `<MsgType>voice</MsgType><MediaId>v1</MediaId><Format>amr</Format><MsgId>9</MsgId></xml>`,
			want: with(func(m *wecom.Message) { m.MsgType, m.MediaID, m.Format, m.MsgID = "voice", "v1", "amr", 9 }),
			key:  "m:9",
		},
		{
			name: "video",
			in:   head + `<MsgType>video</MsgType><MediaId>v2</MediaId><ThumbMediaId>t2</ThumbMediaId><MsgId>10</MsgId></xml>`,
			want: with(func(m *wecom.Message) { m.MsgType, m.MediaID, m.ThumbMediaID, m.MsgID = "video", "v2", "t2", 10 }),
			key:  "m:10",
		},
		{
			name: "location",
			in:   head + `<MsgType>location</MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale><Label><![CDATA[广州市]]></Label><MsgId>11</MsgId><AppType><![CDATA[wxwork]]></AppType></xml>`,
			want: with(func(m *wecom.Message) {
				m.MsgType, m.LocationX, m.LocationY, m.Scale, m.Label, m.MsgID = "location", 23.134521, 113.358803, 20, "广州市", 11
			}),
			key: "m:11",
		},
		{
			name: "link",
			in:   head + `<MsgType>link</MsgType><Title>t</Title><Description>d</Description><Url>https://example.com/</Url><PicUrl>p</PicUrl><MsgId>12</MsgId></xml>`,
			want: with(func(m *wecom.Message) {
				m.MsgType, m.Title, m.Description, m.URL, m.PicURL, m.MsgID = "link", "t", "d", "https://example.com/", "p", 12
			}),
			key: "m:12",
		},
		{
			name: "subscribe",
			in:   head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>`,
			want: with(func(m *wecom.Message) { m.MsgType, m.Event = "event", "subscribe" }),
			key:  "e:zhangsan|1348831860|subscribe|",
		},
		{
			name: "unsubscribe",
			in:   head + `<MsgType>event</MsgType><Event>unsubscribe</Event></xml>`,
			want: with(func(m *wecom.Message) { m.MsgType, m.Event = "event", "unsubscribe" }),
			key:  "e:zhangsan|1348831860|unsubscribe|",
		},
		{
			name: "enter_agent",
			in:   head + `<MsgType>event</MsgType><Event>enter_agent</Event><EventKey><![CDATA[]]></EventKey></xml>`,
			want: with(func(m *wecom.Message) { m.MsgType, m.Event = "event", "enter_agent" }),
			key:  "e:zhangsan|1348831860|enter_agent|",
		},
		{
			name: "click upper-case is lowered",
			in:   head + `<MsgType>EVENT</MsgType><Event>CLICK</Event><EventKey>#menu1</EventKey></xml>`,
			want: with(func(m *wecom.Message) { m.MsgType, m.Event, m.EventKey = "event", "click", "#menu1" }),
			key:  "e:zhangsan|1348831860|click|#menu1",
		},
		{
			name: "view",
			in:   head + `<MsgType>event</MsgType><Event>view</Event><EventKey>https://example.com/a</EventKey></xml>`,
			want: with(func(m *wecom.Message) { m.MsgType, m.Event, m.EventKey = "event", "view", "https://example.com/a" }),
			key:  "e:zhangsan|1348831860|view|https://example.com/a",
		},
		{
			name: "unknown event passes through with nested elements",
			in:   head + `<MsgType>event</MsgType><Event>scancode_push</Event><EventKey>k</EventKey><ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>r</ScanResult></ScanCodeInfo></xml>`,
			want: with(func(m *wecom.Message) { m.MsgType, m.Event, m.EventKey = "event", "scancode_push", "k" }),
			key:  "e:zhangsan|1348831860|scancode_push|k",
		},
		{
			name: "element order and case do not matter, declaration allowed",
			in:   `<?xml version="1.0" encoding="UTF-8"?><!-- c --><xml><msgid>13</msgid><AgentId>1000002</AgentId><msgtype>Text</msgtype><CreateTime> 1348831860 </CreateTime><FromUserName>zhangsan</FromUserName><ToUserName>ww1</ToUserName></xml>`,
			want: with(func(m *wecom.Message) { m.MsgType, m.MsgID = "text", 13 }),
			key:  "m:13",
		},
		{
			name: "json text with numbers",
			in:   `{"ToUserName":"ww1","FromUserName":"zhangsan","CreateTime":1348831860,"MsgType":"text","Content":"hi","MsgId":9223372036854775809,"AgentID":1000002}`,
			want: with(func(m *wecom.Message) { m.MsgType, m.Content, m.MsgID = "text", "hi", 9223372036854775809 }),
			key:  "m:9223372036854775809",
		},
		{
			name: "json numbers as strings, keys in any case",
			in:   `{"tousername":"ww1","fromusername":"zhangsan","createtime":"1348831860","msgtype":"location","location_x":"1.5","Location_Y":2.25,"scale":"3","msgid":"14","agentid":"1000002","extra":{"a":[1,2]}}`,
			want: with(func(m *wecom.Message) {
				m.MsgType, m.LocationX, m.LocationY, m.Scale, m.MsgID = "location", 1.5, 2.25, 3, 14
			}),
			key: "m:14",
		},
		{
			name: "json event",
			in:   `{"ToUserName":"ww1","FromUserName":"zhangsan","CreateTime":1348831860,"MsgType":"event","Event":"Enter_Agent","EventKey":"","AgentID":1000002}`,
			want: with(func(m *wecom.Message) { m.MsgType, m.Event = "event", "enter_agent" }),
			key:  "e:zhangsan|1348831860|enter_agent|",
		},
		{
			name: "text without MsgId uses the event-style key",
			in:   head + `<MsgType>text</MsgType><Content>x</Content></xml>`,
			want: with(func(m *wecom.Message) { m.MsgType, m.Content = "text", "x" }),
			key:  "e:zhangsan|1348831860||",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := wecom.ParseMessage([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseMessage: %v", err)
			}
			if *m != tt.want {
				t.Errorf("got  %+v\nwant %+v", *m, tt.want)
			}
			if k := m.DedupKey(); k != tt.key {
				t.Errorf("DedupKey = %q, want %q", k, tt.key)
			}
			if m.IsEvent() != (tt.want.MsgType == "event") {
				t.Errorf("IsEvent = %v", m.IsEvent())
			}
		})
	}
}

func TestParseMessageMalformed(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{"empty", "", wecom.ErrMalformed},
		{"plain text", "hello", wecom.ErrMalformed},
		{"no MsgType", "<xml><Content>x</Content></xml>", wecom.ErrMalformed},
		{"bad MsgId", "<xml><MsgType>text</MsgType><MsgId>12x</MsgId></xml>", wecom.ErrMalformed},
		{"negative MsgId", "<xml><MsgType>text</MsgType><MsgId>-1</MsgId></xml>", wecom.ErrMalformed},
		{"MsgId overflow", "<xml><MsgType>text</MsgType><MsgId>18446744073709551616</MsgId></xml>", wecom.ErrMalformed},
		{"bad CreateTime", "<xml><MsgType>text</MsgType><CreateTime>soon</CreateTime></xml>", wecom.ErrMalformed},
		{"bad AgentID", "<xml><MsgType>text</MsgType><AgentID>1.5</AgentID></xml>", wecom.ErrMalformed},
		{"bad Location_X", "<xml><MsgType>location</MsgType><Location_X>north</Location_X></xml>", wecom.ErrMalformed},
		{"doctype", `<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><xml><MsgType>text</MsgType><Content>&b;</Content></xml>`, wecom.ErrMalformed},
		{"undeclared entity", `<xml><MsgType>text</MsgType><Content>&lol;</Content></xml>`, wecom.ErrMalformed},
		{"deep nesting", "<xml>" + strings.Repeat("<a>", 17) + strings.Repeat("</a>", 17) + "<MsgType>text</MsgType></xml>", wecom.ErrMalformed},
		{"unclosed", "<xml><MsgType>text</MsgType>", wecom.ErrMalformed},
		{"json bad MsgId", `{"MsgType":"text","MsgId":1.5}`, wecom.ErrMalformed},
		{"json MsgId float exponent", `{"MsgType":"text","MsgId":4.56e18}`, wecom.ErrMalformed},
		{"json MsgType object is ignored so missing", `{"MsgType":{"a":1}}`, wecom.ErrMalformed},
		{"json syntax", `{"MsgType":"text",}`, wecom.ErrMalformed},
		{"too large", "<xml>" + strings.Repeat(" ", wecom.MaxMessageSize) + "</xml>", wecom.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := wecom.ParseMessage([]byte(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseMessage err = %v (msg %+v), want %v", err, m, tt.want)
			}
		})
	}
}

func TestParseMessageNestingLimitAllowsRealDepth(t *testing.T) {
	// batch_job_result and menu events nest three or four levels deep.
	in := `<xml><MsgType>event</MsgType><Event>pic_sysphoto</Event><SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum>x</PicMd5Sum></item></PicList></SendPicsInfo></xml>`
	if _, err := wecom.ParseMessage([]byte(in)); err != nil {
		t.Fatal(err)
	}
}
