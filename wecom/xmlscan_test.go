package wecom

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// field is one (name, text) pair walkXML reported.
type field struct{ name, text string }

func walkAll(data []byte) ([]field, error) {
	var got []field
	err := walkXML(data, func(name, text []byte) error {
		got = append(got, field{string(name), string(text)})
		return nil
	})
	return got, err
}

// refWalkXML is the reference walkXML replaced: encoding/xml in strict
// mode, token by token. The differential fuzz test holds the scanner to
// it.
func refWalkXML(data []byte) ([]field, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	var (
		stack    [maxXMLDepth]string
		depth    int
		rootSeen bool
		text     []byte
		got      []field
	)
	for {
		tok, err := d.RawToken()
		if errors.Is(err, io.EOF) {
			if !rootSeen || depth != 0 {
				return nil, errors.New("ref: incomplete")
			}
			return got, nil
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == maxXMLDepth {
				return nil, errors.New("ref: too deep")
			}
			if depth == 0 {
				if rootSeen {
					return nil, errors.New("ref: two roots")
				}
				rootSeen = true
			}
			stack[depth] = t.Name.Local
			depth++
			if depth == 2 {
				text = text[:0]
			}
		case xml.EndElement:
			if depth == 0 || stack[depth-1] != t.Name.Local {
				return nil, errors.New("ref: mismatched")
			}
			if depth == 2 {
				got = append(got, field{stack[1], string(text)})
			}
			depth--
		case xml.CharData:
			switch depth {
			case 0:
				if len(bytes.TrimSpace(t)) != 0 {
					return nil, errors.New("ref: text outside")
				}
			case 2:
				text = append(text, t...)
			}
		case xml.Directive:
			return nil, errors.New("ref: directive")
		}
	}
}

// xmlCases are documents with what walkXML must make of them; a nil want
// with wantErr set means rejected.
var xmlCases = []struct {
	name, doc string
	want      []field
	wantErr   bool
}{
	{name: "wecom text message", doc: "<xml><ToUserName><![CDATA[ww1]]></ToUserName><CreateTime>1348831860</CreateTime><Content><![CDATA[你好]]></Content></xml>",
		want: []field{{"ToUserName", "ww1"}, {"CreateTime", "1348831860"}, {"Content", "你好"}}},
	{name: "wecom event with nested list", doc: "<xml><ToUserName><![CDATA[ww1]]></ToUserName>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[pic_sysphoto]]></Event>\n" +
		"<SendPicsInfo><Count>1</Count>\n<PicList><item><PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum>\n</item>\n</PicList>\n</SendPicsInfo>\n<AgentID>1</AgentID>\n</xml>",
		want: []field{{"ToUserName", "ww1"}, {"MsgType", "event"}, {"Event", "pic_sysphoto"}, {"SendPicsInfo", "\n\n"}, {"AgentID", "1"}}},
	{name: "declaration, comment, spaces", doc: "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c -->\n<xml>\n  <A>1</A>\n</xml>\n",
		want: []field{{"A", "1"}}},
	{name: "references", doc: "<xml><A>&lt;a&gt; &amp; &quot;&apos; &#20320;&#x597D;</A></xml>", want: []field{{"A", `<a> & "' 你好`}}},
	{name: "cdata split to carry ]]>", doc: "<xml><A><![CDATA[x]]]]><![CDATA[>y]]></A></xml>", want: []field{{"A", "x]]>y"}}},
	{name: "cr folded in text and cdata", doc: "<xml><A>a\r\nb\rc</A><B><![CDATA[d\r\ne]]></B></xml>", want: []field{{"A", "a\nb\nc"}, {"B", "d\ne"}}},
	{name: "text around nested children", doc: "<xml><A>x<B>y</B>z<!--c-->w</A></xml>", want: []field{{"A", "xzw"}}},
	{name: "empty elements and attributes", doc: `<xml a="1"><A/><B x = 'q&amp;' y="">t</B></xml>`, want: []field{{"A", ""}, {"B", "t"}}},
	{name: "empty root", doc: "<xml/>", want: nil},
	{name: "doctype", doc: `<!DOCTYPE xml [<!ENTITY a "b">]><xml><A>&a;</A></xml>`, wantErr: true},
	{name: "unknown entity", doc: "<xml><A>&a;</A></xml>", wantErr: true},
	{name: "reference without semicolon", doc: "<xml><A>&amp</A></xml>", wantErr: true},
	{name: "reference to NUL", doc: "<xml><A>&#0;</A></xml>", wantErr: true},
	{name: "control character", doc: "<xml><A>\x01</A></xml>", wantErr: true},
	{name: "invalid utf-8", doc: "<xml><A>\xff</A></xml>", wantErr: true},
	{name: "]]> in text", doc: "<xml><A>]]></A></xml>", wantErr: true},
	{name: "two roots", doc: "<xml/><xml/>", wantErr: true},
	{name: "text outside root", doc: "<xml/>x", wantErr: true},
	{name: "mismatched", doc: "<xml><A></B></xml>", wantErr: true},
	{name: "unclosed", doc: "<xml><A>", wantErr: true},
	{name: "unterminated cdata", doc: "<xml><A><![CDATA[x", wantErr: true},
	{name: "unquoted attribute", doc: "<xml a=1/>", wantErr: true},
	{name: "< in attribute", doc: `<xml a="<"/>`, wantErr: true},
	{name: "-- in comment", doc: "<!-- a -- b --><xml/>", wantErr: true},
	{name: "gbk declaration", doc: `<?xml version="1.0" encoding="GBK"?><xml/>`, wantErr: true},
	{name: "namespace prefix", doc: "<x:xml/>", wantErr: true},
	{name: "nothing", doc: "  ", wantErr: true},
	{name: "too deep", doc: strings.Repeat("<a>", maxXMLDepth+1) + strings.Repeat("</a>", maxXMLDepth+1), wantErr: true},
}

func TestWalkXML(t *testing.T) {
	for _, c := range xmlCases {
		t.Run(c.name, func(t *testing.T) {
			got, err := walkAll([]byte(c.doc))
			if c.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("walkXML(%q) = %v, %v; want ErrMalformed", c.doc, got, err)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("walkXML(%q) = %q, %v; want %q", c.doc, got, err, c.want)
			}
			// The reference agrees on every case the scanner accepts.
			ref, err := refWalkXML([]byte(c.doc))
			if err != nil || fmt.Sprint(ref) != fmt.Sprint(c.want) {
				t.Fatalf("encoding/xml: %q, %v", ref, err)
			}
		})
	}
}

// TestWalkXMLErrorLine: a syntax error names its line, and never echoes
// the document (it may hold decrypted content).
func TestWalkXMLErrorLine(t *testing.T) {
	_, err := walkAll([]byte("<xml>\n<A>secret\x01</A>\n</xml>"))
	if err == nil || !strings.Contains(err.Error(), "line 2") || strings.Contains(err.Error(), "secret") {
		t.Fatalf("err = %v", err)
	}
}

// TestWalkXMLRoundTrip: text written with writeCDATA comes back with
// line ends folded, as XML requires; text written with writeEscaped comes
// back exactly (it escapes CR as a reference, which is not folded).
func TestWalkXMLRoundTrip(t *testing.T) {
	texts := []string{"", "plain", "你好，世界 😀", "a]]>b", "<&>\"'", "line1\r\nline2\rline3\n", " \t spaced \t ", "]]]]>"}
	folded := strings.NewReplacer("\r\n", "\n", "\r", "\n")
	for _, s := range texts {
		for _, c := range []struct {
			enc  func(*bytes.Buffer, string)
			want string
		}{{writeCDATA, folded.Replace(s)}, {writeEscaped, s}} {
			var b bytes.Buffer
			b.WriteString("<xml><V>")
			c.enc(&b, s)
			b.WriteString("</V></xml>")
			got, err := walkAll(b.Bytes())
			if err != nil || len(got) != 1 || got[0].text != c.want {
				t.Errorf("%q as %q: %q, %v; want %q", s, b.String(), got, err, c.want)
			}
		}
	}
}

// FuzzWalkXML holds the scanner to encoding/xml: never a panic, every
// error ErrMalformed, and whatever it accepts encoding/xml accepts with the
// same names and text. (The scanner may reject more: it is the stricter.)
func FuzzWalkXML(f *testing.F) {
	for _, c := range xmlCases {
		f.Add([]byte(c.doc))
	}
	f.Add([]byte("<xml><A>&#x10FFFF;&#65;&#x41;</A><B>\r\n</B></xml>"))
	f.Add([]byte("<?xml version='1.0' standalone='yes'?><xml><A><B/><![CDATA[\r]]>\n</A></xml>"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := walkAll(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		ref, rerr := refWalkXML(data)
		if rerr != nil {
			t.Fatalf("scanner accepted %q (%q), encoding/xml rejects it: %v", data, got, rerr)
		}
		if fmt.Sprint(got) != fmt.Sprint(ref) {
			t.Fatalf("%q: scanner %q, encoding/xml %q", data, got, ref)
		}
	})
}

func BenchmarkWalkXML(b *testing.B) {
	doc := []byte("<xml><ToUserName><![CDATA[ww1234567890abcdef]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName>" +
		"<CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[请帮我把这段话翻译成英文：明天下午三点开会。]]></Content>" +
		"<MsgId>1234567890123456</MsgId><AgentID>1000002</AgentID></xml>")
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			if err := walkXML(doc, func(name, text []byte) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-xml", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			if _, err := refWalkXML(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
