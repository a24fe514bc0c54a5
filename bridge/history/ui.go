package history

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"mime"
	"path"
	"strings"

	"github.com/valyala/fasthttp"
)

// The page's templates, CSS and JS are embedded in the binary. Static files
// are linked as /history/static/<hash>/<name>: the URL changes whenever the
// content does, so browsers may keep them for a year.

//go:embed assets/*.html assets/static/*
var assetFS embed.FS

// webUI holds the parsed templates and the static files.
type webUI struct {
	md     *markdown
	tpl    *template.Template
	files  map[string]staticFile // by name
	urlFor map[string]string     // name → "static/<hash>/<name>" (without base)
}

type staticFile struct {
	body  []byte
	ctype string
	hash  string
	etag  string
}

func newUI() (*webUI, error) {
	u := &webUI{md: newMarkdown(), files: map[string]staticFile{}, urlFor: map[string]string{}}
	entries, err := fs.ReadDir(assetFS, "assets/static")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		body, err := assetFS.ReadFile("assets/static/" + e.Name())
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(body)
		h := hex.EncodeToString(sum[:6])
		ct := mime.TypeByExtension(path.Ext(e.Name()))
		switch path.Ext(e.Name()) { // don't depend on the host's mime.types
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".js":
			ct = "text/javascript; charset=utf-8"
		}
		u.files[e.Name()] = staticFile{body: body, ctype: ct, hash: h, etag: `"` + h + `"`}
		u.urlFor[e.Name()] = "/static/" + h + "/" + e.Name()
	}
	u.tpl, err = template.New("").Funcs(template.FuncMap{
		"static": func(base, name string) string { return base + u.urlFor[name] },
	}).ParseFS(assetFS, "assets/*.html")
	if err != nil {
		return nil, err
	}
	return u, nil
}

// static serves an embedded file. The hashed URL is immutable; any other
// version of it (an old hash) gets the current file, revalidated by ETag.
// It reports false, having written nothing, when there is no such file.
func (u *webUI) static(ctx *fasthttp.RequestCtx, rest string) bool {
	hash, name, ok := strings.Cut(rest, "/")
	f, found := u.files[name]
	if !ok || !found {
		return false
	}
	h := &ctx.Response.Header
	h.Set("ETag", f.etag)
	if hash == f.hash {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	if string(ctx.Request.Header.Peek("If-None-Match")) == f.etag {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return true
	}
	h.SetContentType(f.ctype)
	ctx.SetBody(f.body)
	return true
}

// webMessage is the text of a small page: a sign-in problem, a refusal, the
// signed-out note.
type webMessage struct {
	Title  string
	Text   string
	Action string // link label; "" for none
	Href   string // relative to base: "/login"
}

var (
	msgSignedOut   = webMessage{"已退出登录", "你已退出问答记录页面。在这台设备上再次查看需要重新登录。", "重新登录", "/login"}
	msgBadState    = webMessage{"登录已失效", "这次登录已过期、已经使用过，或不是在这个浏览器里发起的。请重新登录。", "重新登录", "/login"}
	msgBadCode     = webMessage{"登录未完成", "企业微信的登录凭证无效或已过期（凭证只能使用一次，5 分钟内有效）。请重新登录。", "重新登录", "/login"}
	msgNoCode      = webMessage{"登录未完成", "没有收到企业微信的登录授权，可能是登录被取消了。", "重新登录", "/login"}
	msgNotMember   = webMessage{"仅限本企业成员", "这个页面只对本企业的成员开放。你登录的企业微信账号不是本企业的成员（或不在应用的可见范围内），因此无法查看问答记录。如有疑问，请联系管理员。", "", ""}
	msgWeComDown   = webMessage{"暂时无法登录", "暂时无法连接企业微信完成登录，请稍后再试。", "重试", "/login"}
	msgUnavailable = webMessage{"服务暂时不可用", "服务暂时不可用，请稍后再试。", "重试", ""}
	msgForbidden   = webMessage{"无权查看", "你只能查看自己的问答记录。", "返回我的记录", ""}
	msgBadRequest  = webMessage{"请求无效", "链接中的参数无效。", "返回我的记录", ""}
	msgBadCSRF     = webMessage{"操作未完成", "页面已过期，请刷新后再试。", "返回我的记录", ""}
	msgMethod      = webMessage{"不支持的请求", "这个地址不支持这种请求方式。", "返回我的记录", ""}
	msgNotFound    = webMessage{"页面不存在", "没有找到这个页面。", "返回我的记录", ""}
)

// messageView is the data of message.html.
type messageView struct {
	webMessage
	Base string
	Href string // absolute path of the action link
}

func (w *Handler) message(ctx *fasthttp.RequestCtx, s *settings, status int, m webMessage) {
	v := messageView{webMessage: m, Base: s.base, Href: s.base + m.Href}
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/html; charset=utf-8")
	if err := w.ui.tpl.ExecuteTemplate(ctx, "message.html", v); err != nil {
		w.log.Error("history page: render message", "err", err)
	}
}
