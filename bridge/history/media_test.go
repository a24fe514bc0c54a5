package history

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// testPNG is a real w×h picture, encoded by the standard library.
func testPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{R: uint8(x * 255 / w), G: uint8(y * 255 / h), B: 200, A: 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// mediaHarness is a harness whose page serves attachments from a media
// directory next to the database, as the bridge configures it.
func mediaHarness(t *testing.T, edit func(*Config)) (*harness, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bridge.db.media")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) {
		c.MediaDir = dir
		if edit != nil {
			edit(c)
		}
	})
	return h, dir
}

func writeMedia(t testing.TB, dir, name string, body []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
		t.Fatal(err)
	}
}

// seedAttachments stores zhangsan's question with a picture, a PDF, a voice
// message and a picture that was not used, and writes the files.
func seedAttachments(t *testing.T, h *harness, dir string) (id uint64, pic, pdf []byte) {
	t.Helper()
	pic = testPNG(t, 24, 16)
	pdf = append([]byte("%PDF-1.4\n"), bytes.Repeat([]byte("x"), 1500)...)
	writeMedia(t, dir, "7-0.png", pic)
	writeMedia(t, dir, "7-1.pdf", pdf)
	writeMedia(t, dir, "7-2.amr", []byte("#!AMR\n....."))
	id = seedHistory(t, h.store, "zhangsan", "这个报错怎么处理？", "请重启客户端。", historySeed{newConv: true, atts: []kv.Attachment{
		{Kind: "image", Name: "截图.png", MIME: "image/png", Size: int64(len(pic)), File: "7-0.png"},
		{Kind: "file", Name: "合同 (最终版).pdf", MIME: "application/pdf", Size: int64(len(pdf)), File: "7-1.pdf"},
		{Kind: "voice", MIME: "audio/amr", Size: 11, File: "7-2.amr", Transcript: "电脑连不上打印机"},
		{Kind: "image", Name: "大图.jpg", MIME: "image/jpeg", Size: 30 << 20, Problem: "图片超过 10 MB，没有使用"},
	}})
	return id, pic, pdf
}

// The owner sees the attachments under the question and fetches the bytes
// with the right headers; another user gets the same 404 as for an entry
// that does not exist; an admin viewing the owner gets them; nobody signed
// out gets anything.
func TestHistoryMediaAccess(t *testing.T) {
	h, dir := mediaHarness(t, func(c *Config) { c.Admins = []string{"wangwu"} })
	id, pic, pdf := seedAttachments(t, h, dir)
	seedHistory(t, h.store, "lisi", "李四的问题", "李四的回答", historySeed{})
	media := fmt.Sprintf("/history/media/%d/", id)

	anon := newBrowser(h, uaDesktop)
	if p := anon.get(media + "0"); p.status != http.StatusFound || !strings.HasPrefix(p.location(), h.wc.URL()) {
		t.Errorf("signed out: %d to %q, want the sign-in", p.status, p.location())
	}

	b := newBrowser(h, uaDesktop)
	p := b.login("zhangsan", "/history")
	for _, want := range []string{
		`<img src="` + media + `0" loading="lazy"`,
		`<a class="thumb" href="` + media + `0" target="_blank"`,
		`alt="截图.png"`,
		`<a class="name" href="` + media + `1" download>合同 (最终版).pdf</a><span class="size">1.5 KB</span>`,
		`🎤 语音：电脑连不上打印机`,
		`<a class="dl" href="` + media + `2" download>`,
		`<span class="name">大图.jpg</span><span class="size">30.0 MB</span>`,
		`<p class="att-note">图片超过 10 MB，没有使用</p>`,
	} {
		if !strings.Contains(p.body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if strings.Count(p.body, "<img ") != 1 {
		t.Errorf("want exactly one thumbnail (the unused picture has no file):\n%s", p.body)
	}
	if csp := p.header.Get("Content-Security-Policy"); !strings.Contains(csp, "img-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("page CSP %q", csp)
	}

	checkMedia := func(what string, p webPage, ctype, disp string, body []byte) {
		t.Helper()
		if p.status != http.StatusOK {
			t.Fatalf("%s: status %d", what, p.status)
		}
		if p.body != string(body) {
			t.Errorf("%s: %d bytes, want the %d stored", what, len(p.body), len(body))
		}
		for k, want := range map[string]string{
			"Content-Type": ctype, "X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-cache",
			"Content-Security-Policy":      mediaCSP,
			"Cross-Origin-Resource-Policy": "same-origin", "Referrer-Policy": "no-referrer",
		} {
			if got := p.header.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", what, k, got, want)
			}
		}
		if !strings.HasPrefix(mediaCSP, "default-src 'none'") {
			t.Errorf("media CSP %q", mediaCSP)
		}
		if got := p.header.Get("Content-Disposition"); got != disp {
			t.Errorf("%s: Content-Disposition %q, want %q", what, got, disp)
		}
	}
	checkMedia("picture", b.get(media+"0"), "image/png", `inline; filename="__.png"; filename*=UTF-8''%E6%88%AA%E5%9B%BE.png`, pic)
	checkMedia("pdf", b.get(media+"1"), "application/pdf",
		`attachment; filename="________.pdf"; filename*=UTF-8''%E5%90%88%E5%90%8C%20%28%E6%9C%80%E7%BB%88%E7%89%88%29.pdf`, pdf)
	checkMedia("voice", b.get(media+"2"), "audio/amr", `attachment; filename="7-2.amr"; filename*=UTF-8''7-2.amr`, []byte("#!AMR\n....."))

	// Revalidation: the same ETag is a 304 without the bytes.
	first := b.get(media + "0")
	req, _ := http.NewRequest(http.MethodGet, h.base+media+"0", nil)
	for _, c := range b.jar {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	req.Header.Set("If-None-Match", first.header.Get("ETag"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != http.StatusNotModified || body != "" || first.header.Get("ETag") == "" {
		t.Errorf("revalidation: %d, %d bytes, ETag %q", resp.StatusCode, len(body), first.header.Get("ETag"))
	}
	// HEAD has the length and no body.
	if p := b.do(http.MethodHead, media+"0", nil); p.status != http.StatusOK || p.header.Get("Content-Length") != fmt.Sprint(len(pic)) || p.body != "" {
		t.Errorf("HEAD: %d %q %d bytes", p.status, p.header.Get("Content-Length"), len(p.body))
	}
	if p := b.do(http.MethodPost, media+"0", url.Values{}); p.status != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", p.status)
	}

	// Out of range, no file, malformed paths: the page's 404.
	notFound := b.get("/history/nothing")
	for _, path := range []string{media + "3", media + "4", media + "99999", media + "-1", media + "x", media + "0/x", media + "",
		fmt.Sprintf("/history/media/%d", id), "/history/media/", "/history/media/0/0", "/history/media/+" + fmt.Sprint(id) + "/0",
		fmt.Sprintf("/history/media/%d/0x0", id), "/history/media/99999999/0", "/history/media/18446744073709551616/0"} {
		p := b.get(path)
		if p.status != http.StatusNotFound || p.body != notFound.body || p.header.Get("Content-Disposition") != "" {
			t.Errorf("%s: %d, want the page's 404", path, p.status)
		}
	}

	// Another user: the same URL is a 404 like an entry that does not
	// exist — nothing says it does.
	other := newBrowser(h, uaDesktop)
	other.login("lisi", "/history")
	missing := other.get("/history/media/99999999/0")
	for _, n := range []string{"0", "1", "2"} {
		p := other.get(media + n)
		if p.status != http.StatusNotFound || p.body != missing.body || strings.Contains(p.body, "PDF") {
			t.Errorf("lisi gets %s%s: %d", media, n, p.status)
		}
	}
	if p := other.get(media + "0?user=zhangsan"); p.status != http.StatusForbidden || strings.Contains(p.body, "PNG") {
		t.Errorf("lisi naming zhangsan: %d", p.status)
	}
	if p := other.get("/history"); strings.Contains(p.body, "/history/media/") {
		t.Error("lisi's page links attachments of another user")
	}

	// The admin reaches them through ?user=, and the page links that way.
	admin := newBrowser(h, uaDesktop)
	admin.login("wangwu", "/history")
	if p := admin.get(media + "0"); p.status != http.StatusNotFound {
		t.Errorf("admin without ?user=: %d, want 404 (not the admin's own entry)", p.status)
	}
	checkMedia("admin picture", admin.get(media+"0?user=zhangsan"), "image/png", `inline; filename="__.png"; filename*=UTF-8''%E6%88%AA%E5%9B%BE.png`, pic)
	checkMedia("admin pdf, user in upper case", admin.get(media+"1?user=ZHANGSAN"), "application/pdf",
		`attachment; filename="________.pdf"; filename*=UTF-8''%E5%90%88%E5%90%8C%20%28%E6%9C%80%E7%BB%88%E7%89%88%29.pdf`, pdf)
	ap := admin.get("/history?user=zhangsan")
	if !strings.Contains(ap.body, `<img src="`+media+`0?user=zhangsan" loading="lazy"`) {
		t.Errorf("admin's view of zhangsan lacks the thumbnail with ?user=:\n%s", ap.body)
	}
	if !strings.Contains(h.logBuf.String(), "admin opens a user's attachment") {
		t.Error("the admin's download is not logged")
	}

	// Deleted with its history (or never written): the page's 404.
	if err := os.Remove(filepath.Join(dir, "7-1.pdf")); err != nil {
		t.Fatal(err)
	}
	if p := b.get(media + "1"); p.status != http.StatusNotFound || p.body != notFound.body {
		t.Errorf("deleted file: %d", p.status)
	}
	// Without a media directory, attachments are listed but not served.
	h.reload(func(c *Config) { c.MediaDir = "" })
	if p := b.get(media + "0"); p.status != http.StatusNotFound {
		t.Errorf("no media dir: %d", p.status)
	}
	p = b.get("/history")
	if strings.Contains(p.body, "/history/media/") || !strings.Contains(p.body, "合同 (最终版).pdf") || !strings.Contains(p.body, "电脑连不上打印机") {
		t.Errorf("without a media directory:\n%s", p.body)
	}
}

// A File that is not a plain name in the media directory is never opened,
// even when something is there to serve: a parent-directory path, a
// subdirectory path, an absolute path, dots, a symlink out of the
// directory, a directory.
func TestHistoryMediaTraversalRefused(t *testing.T) {
	h, dir := mediaHarness(t, nil)
	parent := filepath.Dir(dir)
	writeMedia(t, parent, "x", []byte("SECRET-outside"))
	writeMedia(t, parent, "x.png", []byte("SECRET-outside"))
	if err := os.Mkdir(filepath.Join(dir, "a"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeMedia(t, filepath.Join(dir, "a"), "b", []byte("SECRET-subdir"))
	if err := os.Symlink(filepath.Join(parent, "x.png"), filepath.Join(dir, "link.png")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../x.png", filepath.Join(dir, "rel.png")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.png"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeMedia(t, dir, "ok.png", testPNG(t, 4, 4))
	files := []string{"../x", "../x.png", "a/b", "a\\b", "", ".", "..", "...", "/etc/passwd", parent + "/x",
		"..%2fx", "x\x00.png", ".hidden", " ok.png", "ok.png/", "ok.png\n", "link.png", "rel.png", "sub.png", "ok.png"}
	var atts []kv.Attachment
	for _, f := range files {
		atts = append(atts, kv.Attachment{Kind: "image", Name: "p.png", MIME: "image/png", File: f})
	}
	id := seedHistory(t, h.store, "zhangsan", "图片", "好的", historySeed{atts: atts})

	b := newBrowser(h, uaDesktop)
	p := b.login("zhangsan", "/history")
	for i, f := range files {
		path := fmt.Sprintf("/history/media/%d/%d", id, i)
		r := b.get(path)
		if f == "ok.png" {
			if r.status != http.StatusOK {
				t.Errorf("the plain file next to them: %d", r.status)
			}
			continue
		}
		if r.status != http.StatusNotFound || strings.Contains(r.body, "SECRET") {
			t.Errorf("File %q: %d %q", f, r.status, r.body)
		}
		// Names that are not plain do not even get a link; the symlinks
		// and the directory are plain names, refused when opened.
		if !validMediaFile(f) && strings.Contains(p.body, `"`+path+`"`) {
			t.Errorf("File %q is linked on the page", f)
		}
	}
}

// Names come from users (a file's name as sent): they are text on the
// page, and percent-encoded in Content-Disposition, so they can neither add
// markup nor headers. Types a browser would run are sent as bytes.
func TestHistoryMediaHostileNames(t *testing.T) {
	h, dir := mediaHarness(t, nil)
	xssName := `"><img src=x onerror="window.__xss=1">.pdf`
	crlfName := "evil\r\nSet-Cookie: wb_session=x; a=\"b\".pdf"
	pathName := "../../etc/passwd"
	writeMedia(t, dir, "9-0.pdf", []byte("%PDF"))
	writeMedia(t, dir, "9-1.pdf", []byte("%PDF"))
	writeMedia(t, dir, "9-2.bin", []byte("x"))
	writeMedia(t, dir, "9-3.html", []byte("<script>window.__xss=1</script>"))
	writeMedia(t, dir, "9-4.svg", []byte(`<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>`))
	writeMedia(t, dir, "9-5.txt", []byte("你好"))
	id := seedHistory(t, h.store, "zhangsan", "文件", "收到", historySeed{atts: []kv.Attachment{
		{Kind: "file", Name: xssName, MIME: "application/pdf", Size: 4, File: "9-0.pdf"},
		{Kind: "file", Name: crlfName, MIME: "application/pdf", Size: 4, File: "9-1.pdf"},
		{Kind: "file", Name: pathName, MIME: "application/octet-stream; x=\"", Size: 1, File: "9-2.bin"},
		{Kind: "file", Name: "page.html", MIME: "text/html; charset=utf-8", File: "9-3.html"},
		{Kind: "image", Name: "pic.svg", MIME: "image/svg+xml", File: "9-4.svg", Transcript: "<b>x</b>", Problem: `<script>window.__xss=2</script>`},
		{Kind: "file", Name: "notes.txt", MIME: "text/plain; charset=utf-8; x=y", File: "9-5.txt"},
		{Kind: "voice", Transcript: `<img src=x onerror=window.__xss=3>`},
	}})

	b := newBrowser(h, uaDesktop)
	p := b.login("zhangsan", "/history")
	checkInert(t, p.body)
	for _, want := range []string{"&#34;&gt;&lt;img src=x onerror=&#34;window.__xss=1&#34;&gt;.pdf", "🎤 语音：&lt;img src=x onerror=window.__xss=3&gt;",
		"&lt;script&gt;window.__xss=2&lt;/script&gt;"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("page lacks the escaped %s", want)
		}
	}
	if strings.Count(p.body, "<img ") != 0 {
		t.Error("an SVG is shown as a picture")
	}

	attrChars := regexp.MustCompile("^attachment; filename=\"[A-Za-z0-9!#$&+.^_`|~-]*\"; filename\\*=UTF-8''([A-Za-z0-9!#$&+.^_`|~%-]+)$")
	for i, c := range []struct{ name, ctype string }{
		{xssName, "application/pdf"},
		{strings.NewReplacer("\r", "_", "\n", "_").Replace(crlfName), "application/pdf"},
		{"_.._etc_passwd", "application/octet-stream"}, // separators replaced, leading dots trimmed
		{"page.html", "application/octet-stream"},
		{"pic.svg", "application/octet-stream"},
		{"notes.txt", "text/plain; charset=utf-8"},
	} {
		r := b.get(fmt.Sprintf("/history/media/%d/%d", id, i))
		if r.status != http.StatusOK {
			t.Errorf("%d: %d", i, r.status)
			continue
		}
		cd := r.header.Get("Content-Disposition")
		m := attrChars.FindStringSubmatch(cd)
		if m == nil {
			t.Errorf("%d: Content-Disposition %q is not strictly encoded", i, cd)
			continue
		}
		if got, err := url.PathUnescape(m[1]); err != nil || got != c.name {
			t.Errorf("%d: filename* is %q, want %q", i, got, c.name)
		}
		if ct := r.header.Get("Content-Type"); ct != c.ctype {
			t.Errorf("%d: Content-Type %q, want %q", i, ct, c.ctype)
		}
		if len(r.header.Values("Set-Cookie")) != 0 {
			t.Errorf("%d: the name set a cookie", i)
		}
	}
}

func TestHistoryExportAttachments(t *testing.T) {
	h, dir := mediaHarness(t, func(c *Config) { c.Admins = []string{"wangwu"} })
	id, _, _ := seedAttachments(t, h, dir)
	b := newBrowser(h, uaDesktop)
	b.login("zhangsan", "/history")

	p := b.get("/history/export.json")
	var doc exportDoc
	if err := json.Unmarshal([]byte(p.body), &doc); err != nil || len(doc.Entries) != 1 {
		t.Fatalf("export: %v %s", err, p.body)
	}
	media := fmt.Sprintf("/history/media/%d/", id)
	want := []exportAttachment{
		{Kind: "image", Name: "截图.png", MIME: "image/png", Size: doc.Entries[0].Attachments[0].Size, URL: media + "0"},
		{Kind: "file", Name: "合同 (最终版).pdf", MIME: "application/pdf", Size: 1509, URL: media + "1"},
		{Kind: "voice", MIME: "audio/amr", Size: 11, Transcript: "电脑连不上打印机", URL: media + "2"},
		{Kind: "image", Name: "大图.jpg", MIME: "image/jpeg", Size: 30 << 20, Problem: "图片超过 10 MB，没有使用"},
	}
	got := doc.Entries[0].Attachments
	if len(got) != len(want) {
		t.Fatalf("attachments = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("attachment %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// References only: no bytes, no file names of the media directory.
	for _, bad := range []string{"iVBOR", "PNG", "%PDF", "7-0.png", "7-1.pdf", dir} {
		if strings.Contains(p.body, bad) {
			t.Errorf("the JSON export contains %q", bad)
		}
	}

	p = b.get("/history/export.md")
	for _, w := range []string{
		"> 这个报错怎么处理？\n\n- 图片 [截图\\.png](<https://bot.example.com" + media + "0>)（",
		"- 文件 [合同 \\(最终版\\)\\.pdf](<https://bot.example.com" + media + "1>)（1.5 KB）\n",
		"- 🎤 语音 [下载](<https://bot.example.com" + media + "2>)（11 B）：电脑连不上打印机\n",
		"- 图片 大图\\.jpg（30.0 MB） *（图片超过 10 MB，没有使用）*\n",
	} {
		if !strings.Contains(p.body, w) {
			t.Errorf("markdown export lacks %q:\n%s", w, p.body)
		}
	}
	if strings.Contains(p.body, "PNG") || strings.Contains(p.body, "7-0.png") {
		t.Error("the Markdown export contains bytes or stored names")
	}

	// An admin's export of someone else links with ?user=.
	admin := newBrowser(h, uaDesktop)
	admin.login("wangwu", "/history")
	p = admin.get("/history/export.json?user=zhangsan")
	doc = exportDoc{}
	if err := json.Unmarshal([]byte(p.body), &doc); err != nil || len(doc.Entries) != 1 || doc.Entries[0].Attachments[0].URL != media+"0?user=zhangsan" {
		t.Errorf("admin export: %v %+v", err, doc.Entries)
	}
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{0: "", 1: "1 B", 1023: "1023 B", 1024: "1.0 KB", 1536: "1.5 KB",
		1 << 20: "1.0 MB", 5<<20 + 1<<19: "5.5 MB", 3 << 30: "3.0 GB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}
