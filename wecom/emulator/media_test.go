package emulator_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

func (f *fixture) getMedia(agentID int64, id, rng string) (*http.Response, []byte) {
	f.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.s.URL()+"/cgi-bin/media/get?access_token="+
		url.QueryEscape(f.toks[agentID])+"&media_id="+url.QueryEscape(id), nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, b
}

func errcode(t *testing.T, b []byte) int {
	t.Helper()
	var a answer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("not a JSON error: %q", b)
	}
	return a.ErrCode
}

func TestMediaGet(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	data := []byte("0123456789abcdef")
	id := f.s.AddMedia(corpID, data, "image/png", "图 1.png")

	resp, b := f.getMedia(agent, id, "")
	if resp.StatusCode != 200 || !bytes.Equal(b, data) || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("status %d, %q, %v", resp.StatusCode, b, resp.Header)
	}
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition"))
	if err != nil || params["filename"] != "图 1.png" {
		t.Errorf("Content-Disposition %q: %v %v", resp.Header.Get("Content-Disposition"), params, err)
	}
	// media_id is shared by every app of the corp.
	if resp, _ := f.getMedia(agent2, id, ""); resp.StatusCode != 200 {
		t.Errorf("other app of the corp: %d", resp.StatusCode)
	}
	// Range downloads in parts.
	resp, b = f.getMedia(agent, id, "bytes=4-7")
	if resp.StatusCode != http.StatusPartialContent || string(b) != "4567" {
		t.Errorf("range: %d %q", resp.StatusCode, b)
	}
	if _, b := f.getMedia(agent, "nope", ""); errcode(t, b) != 40007 {
		t.Errorf("unknown media_id: %s", b)
	}
	f.clk.Add(emulator.DefaultMediaTTL)
	f.toks[agent] = f.token(secret) // the old token expired too
	if _, b := f.getMedia(agent, id, ""); errcode(t, b) != 40007 {
		t.Errorf("after three days: %s", b)
	}
}

func TestMediaGetLargeNeedsRange(t *testing.T) {
	f := newFixture(t, emulator.Options{MediaTTL: time.Hour})
	big := make([]byte, emulator.MaxMediaWithoutRange+1)
	id := f.s.AddMedia(corpID, big, "video/mp4", "")
	if _, b := f.getMedia(agent, id, ""); errcode(t, b) != 830002 {
		t.Errorf("large file without Range: %.100s", b)
	}
	resp, b := f.getMedia(agent, id, "bytes=0-1023")
	if resp.StatusCode != http.StatusPartialContent || len(b) != 1024 {
		t.Errorf("large file with Range: %d, %d bytes", resp.StatusCode, len(b))
	}
	_, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Disposition"))
	if params["filename"] != id {
		t.Errorf("unnamed media served as %q, want the media_id", params["filename"])
	}
}
