package wecom_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom"
)

func TestMedia(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	img := bytes.Repeat([]byte{0xff, 0xd8, 0x00, 0x01}, 5000)
	id := f.srv.AddMedia(testCorp, img, "image/jpeg", "截图 1.jpg")
	m, err := f.c.Media(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Data, img) || m.ContentType != "image/jpeg" || m.Filename != "截图 1.jpg" {
		t.Fatalf("got %d bytes, %q, %q", len(m.Data), m.ContentType, m.Filename)
	}

	// A refused token is refetched once, as for every other call.
	f.srv.FailNext("/cgi-bin/media/get", 42001, "access_token expired", 1)
	if _, err := f.c.Media(ctx, id); err != nil {
		t.Fatalf("after one token error: %v", err)
	}

	// Unknown, another corp's, and expired media ids: 40007, never heals.
	other := f.srv.AddMedia("ww-other-corp", img, "image/jpeg", "x.jpg")
	for _, bad := range []string{"no-such-media", other} {
		_, err := f.c.Media(ctx, bad)
		ae := apiErr(t, err, 40007)
		if wecom.Classify(err).Heal || ae.Hint() == "" {
			t.Errorf("%s: %+v, hint %q", bad, wecom.Classify(err), ae.Hint())
		}
	}
	f.clk.Add(72*time.Hour - time.Second)
	if _, err := f.c.Media(ctx, id); err != nil {
		t.Fatalf("just before three days: %v", err)
	}
	f.clk.Add(time.Second)
	_, err = f.c.Media(ctx, id)
	apiErr(t, err, 40007)

	if _, err := f.c.Media(ctx, ""); !errors.Is(err, wecom.ErrInvalidConfig) {
		t.Errorf("empty media_id: %v", err)
	}
	f.srv.FailHTTP("/cgi-bin/media/get", http.StatusBadGateway, 1)
	if _, err := f.c.Media(ctx, "x"); wecom.Classify(err).Class != wecom.ClassTransient {
		t.Errorf("502: %v", err)
	}
}

// TestMediaHeaders checks what the client makes of headers the emulator
// never sends.
func TestMediaHeaders(t *testing.T) {
	var header http.Header
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cgi-bin/gettoken" {
			fmt.Fprint(w, `{"errcode":0,"errmsg":"ok","access_token":"tok","expires_in":7200}`)
			return
		}
		for k, v := range header {
			w.Header()[k] = v
		}
		w.Write(body)
	}))
	defer srv.Close()
	c, err := wecom.New(wecom.Config{CorpID: testCorp, Secret: testSecret, AgentID: testAgent, APIBase: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ct, disp, file string
		body                 string
		code                 int // expected errcode, or 0
		tooLarge             bool
	}{
		{"path stripped", "application/pdf", `attachment; filename="../../etc/passwd"`, "passwd", "%PDF", 0, false},
		{"windows path", "application/pdf", `attachment; filename="C:\\x\\y.pdf"`, "y.pdf", "%PDF", 0, false},
		{"RFC 2231", "image/png", `attachment; filename*=UTF-8''%E5%9B%BE.png`, "图.png", "png", 0, false},
		{"control chars", "text/plain", "attachment; filename=\"a\tb.txt\"", "ab.txt", "hi", 0, false},
		{"dot dot", "text/plain", `attachment; filename=".."`, "", "hi", 0, false},
		{"no disposition, json error", "application/json; charset=UTF-8", "", "", `{"errcode":40007,"errmsg":"invalid media_id"}`, 40007, false},
		{"no disposition, text error", "text/plain", "", "", `{"errcode":40014,"errmsg":"invalid access_token"}`, 40014, false},
		{"a JSON file", "application/json", `attachment; filename="data.json"`, "data.json", `{"errcode":1}`, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header = http.Header{"Content-Type": {tt.ct}}
			if tt.disp != "" {
				header.Set("Content-Disposition", tt.disp)
			}
			body = []byte(tt.body)
			m, err := c.Media(context.Background(), "id")
			if tt.code != 0 {
				apiErr(t, err, tt.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Filename != tt.file || string(m.Data) != tt.body || m.ContentType != tt.ct {
				t.Errorf("got %+v", m)
			}
		})
	}
	t.Run("too large", func(t *testing.T) {
		header = http.Header{"Content-Type": {"video/mp4"}, "Content-Disposition": {`attachment; filename="v.mp4"`}}
		body = make([]byte, wecom.MaxMediaBytes+1)
		_, err := c.Media(context.Background(), "id")
		if !errors.Is(err, wecom.ErrTooLarge) || wecom.Classify(err).Heal {
			t.Fatalf("err = %v", err)
		}
	})
}
