package history

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// chinaTime is how times are shown: WeCom users are in UTC+8 (no DST).
var chinaTime = time.FixedZone("CST", 8*3600)

// historyView is what a request asks to see, after access checks.
type historyView struct {
	sess   webSession
	target string // whose history
	admin  bool   // the signed-in user is an admin
	search string
	before uint64
}

// viewing reports an admin looking at someone else's history.
func (v *historyView) viewing() bool { return normUser(v.target) != normUser(v.sess.user) }

// resolve authenticates the request and checks what it asks for. It answers
// the request itself (sign-in redirect, 400 or 403) and returns false when
// nothing more is to be done.
func (w *Handler) resolve(ctx *fasthttp.RequestCtx, s *settings) (*historyView, bool) {
	sess, err := w.session(ctx, s)
	if err != nil {
		if len(ctx.Request.Header.Cookie(s.sessName)) > 0 {
			s.setCookie(ctx, s.sessName, "", 0) // forged, expired or revoked
		}
		w.startLogin(ctx, s, requestPath(ctx, s))
		return nil, false
	}
	args := ctx.QueryArgs()
	v := &historyView{sess: sess, target: sess.user, admin: s.admins[normUser(sess.user)]}
	// WeCom userids ignore case: ?user=BOB is bob, and naming oneself in
	// any case is one's own page.
	if u := normUser(strings.TrimSpace(string(args.Peek("user")))); u != "" && u != normUser(sess.user) {
		if !validUserID(u) {
			w.message(ctx, s, fasthttp.StatusBadRequest, msgBadRequest)
			return nil, false
		}
		if !v.admin {
			w.log.Warn("history page: user asked for another user's history", "user", sess.user, "asked", u)
			w.message(ctx, s, fasthttp.StatusForbidden, msgForbidden)
			return nil, false
		}
		v.target = u
	}
	v.search = strings.TrimSpace(string(args.Peek("q")))
	if !utf8.ValidString(v.search) {
		w.message(ctx, s, fasthttp.StatusBadRequest, msgBadRequest)
		return nil, false
	}
	if utf8.RuneCountInString(v.search) > maxSearch {
		v.search = string([]rune(v.search)[:maxSearch])
	}
	if b := args.Peek("before"); len(b) > 0 {
		n, err := strconv.ParseUint(string(b), 10, 64)
		if err != nil {
			w.message(ctx, s, fasthttp.StatusBadRequest, msgBadRequest)
			return nil, false
		}
		v.before = n
	}
	return v, true
}

// requestPath is the request's path and query as the browser sent it to
// the public URL, for returning after sign-in.
func requestPath(ctx *fasthttp.RequestCtx, s *settings) string {
	p := string(ctx.Path())
	if !strings.HasPrefix(p, s.base) {
		p = s.prefix + p
	}
	if q := ctx.URI().QueryString(); len(q) > 0 {
		p += "?" + string(q)
	}
	return p
}

// validUserID accepts what WeCom uses as userid: 1-64 letters, digits and
// _-@. (and "/" in the CorpId/userid of 互联企业), with some slack.
func validUserID(u string) bool {
	if len(u) > 128 {
		return false
	}
	for _, r := range u {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return false
		}
	}
	return utf8.ValidString(u)
}

// pageView is the data of history.html.
type pageView struct {
	Base, Title   string
	User, Target  string
	Admin, Others bool
	Search        string
	CSRF          string
	Groups        []groupView
	Older, Newest string // links; "" for none
	ExportMD      string
	ExportJSON    string
	Clear         string // the page without the search
	Mine          string // the admin's own page
	Keep          string // how long history is kept; "" for forever
}

type groupView struct {
	App       string
	Group     bool // asked in a group chat (AI bot)
	Span      string
	Started   bool // the oldest shown entry began a new conversation (/new)
	Continued bool // older entries of this conversation are on the next page
	Entries   []entryView
}

type entryView struct {
	Feedback  string // the user's 👍/👎 on the answer, if any
	ID        uint64
	Question  string
	Answer    template.HTML
	Time, ISO string
	State     string // CSS class: done, pending, answering, failed, refused
	Label     string // status shown to the user; "" for a normal answer
	Ref       string
	Truncated bool
	Interim   bool   // the answer shown is not final yet
	Plain     string // a fixed reply (a refusal), shown as text
	// Attachments are the question's pictures, files and voice messages.
	Attachments []attachmentView
}

func (w *Handler) page(ctx *fasthttp.RequestCtx, s *settings) {
	v, ok := w.resolve(ctx, s)
	if !ok {
		return
	}
	if v.viewing() {
		w.log.Info("history page: admin views a user's history", "admin", v.sess.user, "user", v.target)
	}
	// One entry more than shown: it tells whether there is a next page,
	// and whether the last conversation shown goes on there.
	entries, _, err := w.store.History(kv.HistoryQuery{User: v.target, Before: v.before, Limit: pageSize + 1, Search: v.search})
	if err != nil {
		w.log.Error("history page: cannot read history", "err", err)
		w.message(ctx, s, fasthttp.StatusServiceUnavailable, msgUnavailable)
		return
	}
	pv := w.buildPage(s, v, entries)
	ctx.SetContentType("text/html; charset=utf-8")
	if err := w.ui.tpl.ExecuteTemplate(ctx, "history.html", pv); err != nil {
		w.log.Error("history page: render", "err", err)
	}
}

// buildPage makes the view of up to pageSize entries; a further entry, if
// given, is only looked at.
func (w *Handler) buildPage(s *settings, v *historyView, entries []kv.Entry) *pageView {
	now := w.now()
	var next uint64
	var peek *kv.Entry
	if len(entries) > pageSize {
		peek = &entries[pageSize]
		entries = entries[:pageSize]
		next = entries[pageSize-1].ID // the cursor is exclusive
	}
	link := func(path string, extra url.Values) string {
		q := url.Values{}
		if v.viewing() {
			q.Set("user", v.target)
		}
		for k, vs := range extra {
			q[k] = vs
		}
		if len(q) == 0 {
			return s.base + path
		}
		return s.base + path + "?" + q.Encode()
	}
	search := url.Values{}
	if v.search != "" {
		search.Set("q", v.search)
	}
	pv := &pageView{
		Base: s.base, User: v.sess.user, Target: v.target, Admin: v.admin, Others: v.viewing(),
		Search: v.search, CSRF: s.csrfToken(v.sess),
		ExportMD: link("/export.md", search), ExportJSON: link("/export.json", search),
		Clear: link("", nil), Mine: s.base, Keep: s.keep,
	}
	pv.Title = "问答记录"
	if pv.Others {
		pv.Title = v.target + " 的问答记录"
	}
	if next != 0 {
		q := url.Values{"before": {strconv.FormatUint(next, 10)}}
		if v.search != "" {
			q.Set("q", v.search)
		}
		pv.Older = link("", q)
	}
	if v.before != 0 {
		pv.Newest = link("", search)
	}
	var media func(id uint64, n int) string
	if s.mediaDir != "" {
		media = func(id uint64, n int) string { return s.mediaURL(v, id, n) }
	}
	pv.Groups = groupEntries(entries, now, w.ui.md, media)
	if peek != nil && len(splitConversations(append(entries[:len(entries):len(entries)], *peek))) == len(pv.Groups) {
		pv.Groups[len(pv.Groups)-1].Continued = true
	}
	return pv
}

// inConversation reports whether the entry went through the LLM, so that
// its ConvSeq means something: refused and unanswered ones carry 0.
func inConversation(e *kv.Entry) bool {
	switch e.Status {
	case kv.StatusDone, kv.StatusFailed, kv.StatusAnswering:
		return e.Answer != "" || e.NewConv
	}
	return false
}

// splitConversations cuts a newest-first page into conversations: runs of
// one app's entries with the same conversation number. An entry that
// started a conversation (/new, or the very first) closes its run, since
// everything older belongs to an earlier one. Entries outside any
// conversation (refused, pending) join the run they sit in. It returns the
// index where each run starts.
func splitConversations(entries []kv.Entry) []int {
	var starts []int
	var app, chat string
	var seq int
	var hasSeq, started bool
	for i := range entries {
		e := &entries[i]
		conv := inConversation(e)
		if i == 0 || e.App != app || e.Chat != chat || started || (conv && hasSeq && seq != e.ConvSeq) {
			starts = append(starts, i)
			app, chat, hasSeq, started = e.App, e.Chat, false, false
		}
		if conv && !hasSeq {
			seq, hasSeq = e.ConvSeq, true
		}
		if e.NewConv {
			started = true
		}
	}
	return starts
}

// groupEntries makes the views of a page's conversations; media links
// attachments (nil: they are listed without links).
func groupEntries(entries []kv.Entry, now time.Time, md *markdown, media func(id uint64, n int) string) []groupView {
	starts := splitConversations(entries)
	groups := make([]groupView, len(starts))
	for g, from := range starts {
		to := len(entries)
		if g+1 < len(starts) {
			to = starts[g+1]
		}
		run := entries[from:to]
		gv := groupView{App: run[0].App, Group: run[0].Chat != "", Entries: make([]entryView, len(run))}
		for i := range run {
			gv.Entries[i] = entryOf(&run[i], now, md, media)
			gv.Started = gv.Started || run[i].NewConv
		}
		if len(run) > 1 { // one entry shows its own time
			gv.Span = timeSpan(run[len(run)-1].Created, run[0].Created, now)
		}
		groups[g] = gv
	}
	return groups
}

// feedbackLabel shows a user's rating of an answer.
func feedbackLabel(rating string) string {
	switch rating {
	case "like":
		return "👍 有用"
	case "dislike":
		return "👎 没帮上忙"
	}
	return ""
}

func entryOf(e *kv.Entry, now time.Time, md *markdown, media func(id uint64, n int) string) entryView {
	ev := entryView{
		ID: e.ID, Question: e.Question, State: string(e.Status),
		Time: shortTime(e.Created, now), ISO: e.Created.In(chinaTime).Format(time.RFC3339),
		Ref: e.RefID, Truncated: e.Truncated, Feedback: feedbackLabel(e.Feedback),
	}
	switch e.Status {
	case kv.StatusPending:
		ev.Label = "排队中，等待回答…"
	case kv.StatusAnswering:
		ev.Label = "正在回答…"
		ev.Interim = true
	case kv.StatusFailed:
		ev.Label = "回答失败"
	case kv.StatusRefused:
		ev.Label = "未回答"
		ev.Plain = e.Answer
	case kv.StatusDone:
	default:
		ev.Label = string(e.Status)
	}
	if e.Answer != "" && ev.Plain == "" {
		ev.Answer = md.render(e.Answer)
	}
	var link func(n int) string
	if media != nil {
		link = func(n int) string { return media(e.ID, n) }
	}
	ev.Attachments = attachmentViews(e, link)
	return ev
}

// shortTime shows a time the way chat apps do: 今天 15:04, 昨天 15:04,
// 3月5日 15:04, or with the year when it is not this year's.
func shortTime(t, now time.Time) string {
	t, now = t.In(chinaTime), now.In(chinaTime)
	y1, m1, d1 := t.Date()
	y2, m2, d2 := now.Date()
	hm := t.Format("15:04")
	switch {
	case y1 == y2 && m1 == m2 && d1 == d2:
		return "今天 " + hm
	case isYesterday(t, now):
		return "昨天 " + hm
	case y1 == y2:
		return fmt.Sprintf("%d月%d日 %s", m1, d1, hm)
	default:
		return fmt.Sprintf("%d年%d月%d日 %s", y1, m1, d1, hm)
	}
}

func isYesterday(t, now time.Time) bool {
	y := now.AddDate(0, 0, -1)
	y1, m1, d1 := t.Date()
	y2, m2, d2 := y.Date()
	return y1 == y2 && m1 == m2 && d1 == d2
}

// timeSpan is a conversation's time range for its header.
func timeSpan(oldest, newest, now time.Time) string {
	a, b := shortTime(oldest, now), shortTime(newest, now)
	if a == b {
		return a
	}
	ao, bo := oldest.In(chinaTime), newest.In(chinaTime)
	if ao.YearDay() == bo.YearDay() && ao.Year() == bo.Year() {
		return a + " – " + bo.Format("15:04")
	}
	return a + " – " + b
}

// exportEntry is one question in an export. The field names are part of
// the export format: keep them stable.
type exportEntry struct {
	ID           uint64    `json:"id"`
	App          string    `json:"app"`
	Question     string    `json:"question"`
	Answer       string    `json:"answer"`
	Status       kv.Status `json:"status"`
	Conversation int       `json:"conversation"`
	NewConv      bool      `json:"new_conversation"`
	Ref          string    `json:"ref,omitempty"`
	Truncated    bool      `json:"truncated,omitempty"`
	// Attachments are references (kind, name, size, the media route's
	// path), never the bytes.
	Attachments []exportAttachment `json:"attachments,omitempty"`
	Created     time.Time          `json:"created"`
	Updated     time.Time          `json:"updated"`
}

type exportDoc struct {
	User       string        `json:"user"`
	ExportedAt time.Time     `json:"exported_at"`
	Search     string        `json:"search,omitempty"`
	Order      string        `json:"order"`
	Count      int           `json:"count"`
	Entries    []exportEntry `json:"entries"`
}

// maxExport bounds one export; retention normally keeps histories far
// smaller.
const maxExport = 100000

// export sends the whole history (or the search's matches), oldest first.
func (w *Handler) export(ctx *fasthttp.RequestCtx, s *settings, format string) {
	v, ok := w.resolve(ctx, s)
	if !ok {
		return
	}
	var all []kv.Entry
	before := uint64(0)
	for len(all) < maxExport {
		page, next, err := w.store.History(kv.HistoryQuery{User: v.target, Before: before, Limit: 500, Search: v.search})
		if err != nil {
			w.log.Error("history page: cannot read history for export", "err", err)
			w.message(ctx, s, fasthttp.StatusServiceUnavailable, msgUnavailable)
			return
		}
		all = append(all, page...)
		if next == 0 {
			break
		}
		before = next
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	now := w.now()
	name := fmt.Sprintf("wecom-history-%s-%s.%s", fileSafe(v.target), now.In(chinaTime).Format("20060102"), format)
	ctx.Response.Header.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	if v.viewing() {
		w.log.Info("history page: admin exports a user's history", "admin", v.sess.user, "user", v.target, "format", format)
	}
	if format == "json" {
		doc := exportDoc{User: v.target, ExportedAt: now.UTC(), Search: v.search, Order: "oldest_first", Count: len(all), Entries: make([]exportEntry, len(all))}
		for i, e := range all {
			doc.Entries[i] = exportEntry{
				ID: e.ID, App: e.App, Question: e.Question, Answer: e.Answer, Status: e.Status,
				Conversation: e.ConvSeq, NewConv: e.NewConv, Ref: e.RefID, Truncated: e.Truncated,
				Attachments: s.exportAttachments(v, &all[i]),
				Created:     e.Created.UTC(), Updated: e.Updated.UTC(),
			}
		}
		ctx.SetContentType("application/json; charset=utf-8")
		enc := json.NewEncoder(ctx)
		enc.SetIndent("", "  ")
		if err := enc.Encode(doc); err != nil {
			w.log.Error("history page: export", "err", err)
		}
		return
	}
	ctx.SetContentType("text/markdown; charset=utf-8")
	ctx.SetBody(exportMarkdown(s, v, all, now))
}

func exportMarkdown(s *settings, v *historyView, all []kv.Entry, now time.Time) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# 问答记录：%s\n\n", v.target)
	fmt.Fprintf(&b, "导出时间：%s（UTC+8）· 共 %d 条 · 按时间从早到晚", now.In(chinaTime).Format("2006-01-02 15:04"), len(all))
	if v.search != "" {
		fmt.Fprintf(&b, " · 搜索：%s", v.search)
	}
	b.WriteString("\n")
	for i := range all {
		e := &all[i]
		b.WriteString("\n---\n\n")
		fmt.Fprintf(&b, "## %s · %s", e.Created.In(chinaTime).Format("2006-01-02 15:04"), e.App)
		if e.NewConv {
			b.WriteString(" · 新对话")
		}
		b.WriteString("\n\n**问：**\n\n")
		for _, line := range strings.Split(e.Question, "\n") {
			b.WriteString("> " + line + "\n")
		}
		writeMarkdownAttachments(&b, s.origin, s.exportAttachments(v, e))
		b.WriteString("\n**答：**\n\n")
		switch {
		case e.Answer != "":
			b.WriteString(strings.TrimRight(e.Answer, "\n") + "\n")
		case e.Status == kv.StatusPending || e.Status == kv.StatusAnswering:
			b.WriteString("*（尚未回答）*\n")
		default:
			b.WriteString("*（无回答）*\n")
		}
		var notes []string
		switch e.Status {
		case kv.StatusFailed:
			notes = append(notes, "回答失败")
		case kv.StatusRefused:
			notes = append(notes, "未回答")
		case kv.StatusPending:
			notes = append(notes, "排队中")
		case kv.StatusAnswering:
			notes = append(notes, "正在回答")
		}
		if e.RefID != "" {
			notes = append(notes, "参考编号 "+e.RefID)
		}
		if e.Truncated {
			notes = append(notes, "回答不完整")
		}
		if len(notes) > 0 {
			fmt.Fprintf(&b, "\n*%s*\n", strings.Join(notes, " · "))
		}
	}
	return b.Bytes()
}

// fileSafe keeps a user id usable in a file name.
func fileSafe(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == '@') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
