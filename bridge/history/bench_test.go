package history

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// benchAnswer is a typical LLM answer: paragraphs, a list, a code block.
const benchAnswer = `报销流程分为三步：

1. 在 **OA 系统** 提交报销单，附上发票照片；
2. 部门负责人审批；
3. 财务复核后打款，一般 3 个工作日内到账。

注意事项：
- 发票抬头必须是公司全称；
- 超过 5000 元需要总监审批。

如需批量导出，可以用：

` + "```sh\noa export --month 2026-01 --format csv\n```" + `

详见 https://oa.example.com/help/expense 。`

// BenchmarkHistoryPage renders the history page, end to end through the
// handler (session check, history read, Markdown, template), for a user
// with 10,000 stored questions and answers.
func BenchmarkHistoryPage(b *testing.B) {
	br, cookie := benchHandler(b, 10000)
	for _, c := range []struct{ name, uri string }{
		{"newest", "/history"},
		{"older", "/history?before=5000"},
		{"search", "/history?q=" + "%E9%97%AE%E9%A2%98%E7%BC%96%E5%8F%B7%209999"}, // 问题编号 9999: one match, scans all
	} {
		b.Run(c.name, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			b.ReportAllocs()
			for b.Loop() {
				ctx.Request.Reset()
				ctx.Response.Reset()
				ctx.Request.SetRequestURI(c.uri)
				ctx.Request.Header.SetCookie("wb_session", cookie)
				if !br.Handles(ctx.Path()) {
					b.Fatal("not the page's path")
				}
				br.Serve(&ctx)
				if ctx.Response.StatusCode() != fasthttp.StatusOK || len(ctx.Response.Body()) < 1000 {
					b.Fatalf("status %d, %d bytes", ctx.Response.StatusCode(), len(ctx.Response.Body()))
				}
			}
		})
	}
}

// benchHandler builds the page (not listening) with one user's history of
// n entries and returns it with a session cookie for that user.
func benchHandler(tb testing.TB, n int) (*Handler, string) {
	tb.Helper()
	st, err := kv.Open(filepath.Join(tb.TempDir(), "b.db"), kv.Options{NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	br, err := New(Config{PublicURL: "http://bot.example.com", LoginApp: "helpdesk"}, Deps{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Store: st,
		LoginClient: func(string) LoginClient { return nil }, // every request has a session
	})
	if err != nil {
		tb.Fatal(err)
	}
	t0 := time.Now().Add(-time.Duration(n) * time.Minute)
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				seedHistory(tb, st, "heavy", fmt.Sprintf("问题编号 %d：报销流程是什么？需要准备哪些材料？", i), benchAnswer,
					historySeed{conv: i / 8, newConv: i%8 == 0, at: t0.Add(time.Duration(i) * time.Minute)})
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	// Some other users, so the heavy one's keys are not alone in the tree.
	for i := 0; i < 200; i++ {
		seedHistory(tb, st, fmt.Sprintf("user%03d", i), "别人的问题", "别人的回答", historySeed{})
	}
	token := b64url.EncodeToString(randomBytes(32))
	if err := st.PutSession(kv.Session{ID: sessionRecordID(token), User: "heavy", Expires: time.Now().Add(time.Hour)}); err != nil {
		tb.Fatal(err)
	}
	s := br.set.Load()
	if !strings.HasPrefix(s.sessName, "wb_") {
		tb.Fatalf("cookie name %s", s.sessName)
	}
	return br, s.sessionCookie(token)
}
