package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm/llmtest"
)

// fault is one misbehaviour of a fake upstream, applied to one request.
type fault struct {
	errcode int           // answer this WeCom errcode (with a WeCom-style errmsg)
	status  int           // answer this HTTP status (with body, if any)
	body    string        // answer 200 (or status) with this body instead of the real one
	sse     bool          // the body is an event stream
	delay   time.Duration // wait, then pass the request on even if the caller gave up
	hang    bool          // answer nothing until the caller gives up
}

// faultProxy stands in front of a fake upstream. Requests of the victim
// (match) go to victim if set, else to the fake, after the next queued
// fault is applied; everyone else's go to the fake untouched.
type faultProxy struct {
	srv    *httptest.Server
	tr     *http.Transport
	normal *httputil.ReverseProxy
	victim *httputil.ReverseProxy
	match  func(path string, body []byte) bool

	mu     sync.Mutex
	faults []fault
	hits   int // victim requests seen
	faulty int // faults applied
}

func newFaultProxy(target, victimTarget string, match func(string, []byte) bool) *faultProxy {
	p := &faultProxy{tr: &http.Transport{}, match: match}
	mk := func(raw string) *httputil.ReverseProxy {
		u, _ := url.Parse(raw)
		u.Path = ""
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.Transport = p.tr
		rp.FlushInterval = -1
		rp.ErrorLog = nil
		return rp
	}
	p.normal = mk(target)
	if victimTarget != "" {
		p.victim = mk(victimTarget)
	}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	return p
}

func (p *faultProxy) URL() string { return p.srv.URL }

func (p *faultProxy) push(f ...fault) {
	p.mu.Lock()
	p.faults = append(p.faults, f...)
	p.mu.Unlock()
}

func (p *faultProxy) counts() (hits, faulty int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits, p.faulty
}

func (p *faultProxy) close() {
	p.srv.CloseClientConnections()
	p.srv.Close()
	p.tr.CloseIdleConnections()
}

func (p *faultProxy) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if !p.match(r.URL.Path, body) {
		p.normal.ServeHTTP(w, r)
		return
	}
	p.mu.Lock()
	p.hits++
	var f *fault
	if len(p.faults) > 0 {
		f = &p.faults[0]
		p.faults = p.faults[1:]
		p.faulty++
	}
	p.mu.Unlock()
	next := p.normal
	if p.victim != nil {
		next = p.victim
	}
	switch {
	case f == nil:
	case f.hang:
		<-r.Context().Done()
		return
	case f.delay > 0:
		time.Sleep(f.delay)
		// The caller may have given up; the upstream still gets it, as a
		// slow network delivers a request late.
		r = r.WithContext(context.Background())
	case f.errcode != 0:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"errcode":%d,"errmsg":"injected, hint: [1700000000_1], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=%d"}`, f.errcode, f.errcode)
		return
	default:
		if f.sse {
			w.Header().Set("Content-Type", "text/event-stream")
		}
		st := f.status
		if st == 0 {
			st = http.StatusOK
		}
		w.WriteHeader(st)
		_, _ = io.WriteString(w, f.body)
		return
	}
	next.ServeHTTP(w, r)
}

// faultCase is one row of the fault table.
type faultCase struct {
	name  string
	wecom string // extra [wecom] keys
	kb    string // extra [backends.kb] keys
	app   string // replaces helpdesk's thinking_after line
	// inject sets the fault up: scripts on the victim's own Dify, faults
	// on the LLM or WeCom proxies.
	inject func(e *faultEnv)
	// engaged reports that the victim's question has met the fault, so
	// the bystander asks while it lasts.
	engaged func(e *faultEnv) bool
	// check runs once the victim's job is finished.
	check func(t *testing.T, e *faultEnv, got []string)
}

type faultEnv struct {
	h         *harness
	vdify     *llmtest.Dify // the victim's Dify
	llmProxy  *faultProxy
	wcomProxy *faultProxy
}

const (
	victim    = "zhangsan"
	bystander = "lisi"
	victimQ   = "受害者的问题"
	bystandQ  = "旁观者的问题"
)

func llmEngaged(e *faultEnv) bool { h, _ := e.llmProxy.counts(); return h > 0 }
func wcomEngaged(e *faultEnv) bool {
	_, f := e.wcomProxy.counts()
	return f > 0
}

// wantApology requires the LLM failure apology with a reference id that
// the log also carries.
func wantApology(t *testing.T, e *faultEnv, got []string) {
	t.Helper()
	if len(got) != 1 || !strings.HasPrefix(got[0], "抱歉，回答时出了点问题") || !strings.Contains(got[0], "参考编号") {
		t.Fatalf("victim got %q, want the apology", got)
	}
	ref := got[0][strings.LastIndex(got[0], "：")+len("："):]
	ref = strings.TrimSuffix(ref, "）")
	if !strings.Contains(e.h.logBuf.String(), ref) {
		t.Fatalf("reference id %q not in the log", ref)
	}
	wantHistory(t, e, kv.StatusFailed)
}

func wantHistory(t *testing.T, e *faultEnv, st kv.Status) {
	t.Helper()
	es, _, err := e.h.store.History(kv.HistoryQuery{User: victim})
	if err != nil || len(es) != 1 || es[0].Status != st {
		t.Fatalf("victim's history %+v (%v), want status %s", es, err, st)
	}
}

func wantEcho(t *testing.T, e *faultEnv, got []string) {
	t.Helper()
	if len(got) != 1 || got[0] != echo(victimQ) {
		t.Fatalf("victim got %q, want the answer once", got)
	}
	wantHistory(t, e, kv.StatusDone)
}

func wantVictimLLMCalls(t *testing.T, e *faultEnv, n int) {
	t.Helper()
	if h, _ := e.llmProxy.counts(); h != n {
		t.Fatalf("the LLM was asked %d times for the victim, want %d", h, n)
	}
}

func wantInterrupted(t *testing.T, e *faultEnv, got []string, partial string) {
	t.Helper()
	all := strings.Join(got, "\n")
	if !strings.Contains(all, partial) || !strings.Contains(all, "回答中断了") || !strings.Contains(all, "参考编号") {
		t.Fatalf("victim got %q, want the partial answer and the interruption notice", got)
	}
	wantHistory(t, e, kv.StatusFailed)
}

// The fake LLM and the fake WeCom misbehave towards one user (the victim).
// Under each fault the daemon keeps answering another user, retries what
// is worth retrying, tells the victim when it gives up (when WeCom itself
// refuses, the history says failed and the log says why), and leaves no
// goroutine behind after shutdown.
func TestFaults(t *testing.T) {
	sse := func(lines ...string) string { return strings.Join(lines, "\n\n") + "\n\n" }
	cases := []faultCase{
		{
			name: "LLM hangs before answering", kb: `idle_timeout = "300ms"` + "\nmax_retries = 2",
			inject: func(e *faultEnv) {
				e.vdify.Push(llmtest.Script{Hang: true}, llmtest.Script{Hang: true}, llmtest.Script{Hang: true})
			},
			engaged: llmEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				wantVictimLLMCalls(t, e, 3) // the first try and two retries
				wantApology(t, e, got)
			},
		},
		{
			name: "LLM stalls mid-answer", kb: `idle_timeout = "300ms"`,
			inject: func(e *faultEnv) {
				e.vdify.Push(llmtest.Script{Answer: "第一段先到，而且足够长，可以先发出去。\n\n第二段永远不会来。", Deltas: 2, DeltaDelay: 10 * time.Second})
			},
			engaged: llmEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				wantVictimLLMCalls(t, e, 1) // text was delivered: not asked again
				wantInterrupted(t, e, got, "第一段先到")
			},
		},
		{
			name: "LLM stream cut before the first delta",
			inject: func(e *faultEnv) {
				e.vdify.Push(llmtest.Script{CutAfter: -1})
			},
			engaged: llmEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				wantVictimLLMCalls(t, e, 2)
				wantEcho(t, e, got)
			},
		},
		{
			name: "LLM stream cut mid-answer",
			inject: func(e *faultEnv) {
				e.vdify.Push(llmtest.Script{Answer: "前半段的回答已经到了，够长可以发送。\n\n后半段被切断了，用户看不到这一段。", Deltas: 6, CutAfter: 3, DeltaDelay: 20 * time.Millisecond})
			},
			engaged: llmEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				wantVictimLLMCalls(t, e, 1)
				wantInterrupted(t, e, got, "前半段")
			},
		},
		{
			name: "LLM 429 then success",
			inject: func(e *faultEnv) {
				e.vdify.Push(llmtest.Script{Status: 429, RetryAfter: "0"})
			},
			engaged: llmEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				wantVictimLLMCalls(t, e, 2)
				wantEcho(t, e, got)
			},
		},
		{
			name: "LLM gateway 502 (HTML) then success",
			inject: func(e *faultEnv) {
				e.vdify.Push(llmtest.Script{Status: 502}, llmtest.Script{Status: 503})
			},
			engaged: llmEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				wantVictimLLMCalls(t, e, 3)
				wantEcho(t, e, got)
			},
		},
		{
			name: "LLM 500 on every try", kb: "max_retries = 2",
			inject: func(e *faultEnv) {
				e.vdify.Push(llmtest.Script{Status: 500}, llmtest.Script{Status: 500}, llmtest.Script{Status: 500})
			},
			engaged: llmEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				wantVictimLLMCalls(t, e, 3)
				wantApology(t, e, got)
			},
		},
		{
			name: "LLM slow to answer", app: `thinking_after = "200ms"`,
			inject: func(e *faultEnv) {
				e.vdify.Push(llmtest.Script{FirstByteDelay: 1500 * time.Millisecond})
			},
			engaged: llmEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				wantVictimLLMCalls(t, e, 1)
				if len(got) != 2 || got[0] != DefaultTexts().Thinking || got[1] != echo(victimQ) {
					t.Fatalf("victim got %q, want the thinking notice, then the answer", got)
				}
			},
		},
		{
			name: "LLM sends garbage JSON in the stream", kb: "max_retries = 1",
			inject: func(e *faultEnv) {
				bad := fault{sse: true, body: sse(`data: {"event": "message", "answer": "半截`, `data: }}}{{{`, `data: [1,2,`)}
				e.llmProxy.push(bad, bad)
			},
			engaged: llmEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				wantVictimLLMCalls(t, e, 2)
				wantApology(t, e, got)
			},
		},
		{
			name: "LLM error with a non-JSON body, then success",
			inject: func(e *faultEnv) {
				e.llmProxy.push(fault{status: 500, body: "Internal Server Error <<<not json>>>"})
			},
			engaged: llmEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				wantVictimLLMCalls(t, e, 2)
				wantEcho(t, e, got)
			},
		},
		{
			name: "WeCom 42001 token expired",
			inject: func(e *faultEnv) {
				e.wcomProxy.push(fault{errcode: 42001})
			},
			engaged: wcomEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				wantEcho(t, e, got)
				if n := e.h.wc.TokenCalls(); n < 2 {
					t.Fatalf("gettoken called %d times: the token was not refreshed", n)
				}
			},
		},
		{
			name: "WeCom 45009 rate limited", wecom: `rate_limit_wait = "400ms"`,
			inject: func(e *faultEnv) {
				e.wcomProxy.push(fault{errcode: 45009})
			},
			engaged: wcomEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				wantEcho(t, e, got)
				if _, f := e.wcomProxy.counts(); f != 1 {
					t.Fatalf("%d faults applied", f)
				}
			},
		},
		{
			name: "WeCom 60020 untrusted IP: gives up within send_retry_for", wecom: `send_retry_for = "2s"`,
			inject: func(e *faultEnv) {
				for range 20 {
					e.wcomProxy.push(fault{errcode: 60020})
				}
			},
			engaged: wcomEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				if len(got) != 0 {
					t.Fatalf("victim got %q through a refusing WeCom", got)
				}
				wantHistory(t, e, kv.StatusFailed)
				log := e.h.logBuf.String()
				if !strings.Contains(log, "203.0.113.7") || !strings.Contains(log, "giving up") {
					t.Fatalf("the log does not say why, or that it gave up:\n%s", log)
				}
			},
		},
		{
			name: "WeCom HTTP 502 twice",
			inject: func(e *faultEnv) {
				e.wcomProxy.push(fault{status: 502}, fault{status: 502})
			},
			engaged: wcomEngaged,
			check:   wantEcho,
		},
		{
			name: "WeCom answers garbage JSON",
			inject: func(e *faultEnv) {
				e.wcomProxy.push(fault{body: "<html><body>upstream busy</body></html>"})
			},
			engaged: wcomEngaged,
			check:   wantEcho,
		},
		{
			name: "WeCom slow: the send times out but arrives late", wecom: `request_timeout = "300ms"`,
			inject: func(e *faultEnv) {
				e.wcomProxy.push(fault{delay: 600 * time.Millisecond})
			},
			engaged: wcomEngaged,
			check: func(t *testing.T, e *faultEnv, got []string) {
				// The late copy and the retry are the same request with
				// enable_duplicate_check: WeCom delivers one.
				time.Sleep(700 * time.Millisecond)
				wantEcho(t, e, e.h.contentsTo(victim))
			},
		},
		{
			name: "WeCom hangs", wecom: `request_timeout = "300ms"`,
			inject: func(e *faultEnv) {
				e.wcomProxy.push(fault{hang: true})
			},
			engaged: wcomEngaged,
			check:   wantEcho,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runFault(t, c) })
	}
}

func (h *harness) contentsTo(user string) []string { return contents(h.sentTo(user)) }

func runFault(t *testing.T, c faultCase) {
	before := goleak.IgnoreCurrent()
	h := newHarness(t, "")
	h.stop()
	e := &faultEnv{h: h, vdify: llmtest.NewDify()}
	e.llmProxy = newFaultProxy(h.dify.URL(), e.vdify.URL(), func(path string, body []byte) bool {
		// Questions only: the stop call after a cancelled stream goes to
		// the main fake, which answers it as Dify does for any task.
		return path == "/v1/chat-messages" && bytes.Contains(body, []byte(`"helpdesk:`+victim+`"`))
	})
	e.wcomProxy = newFaultProxy(h.wc.URL(), "", func(path string, body []byte) bool {
		return path == "/cgi-bin/message/send" && bytes.Contains(body, []byte(`"touser":"`+victim+`"`))
	})
	difyURL, wcURL := h.dify.URL(), h.wc.URL()
	h.edit = func(s string) string {
		s = strings.ReplaceAll(s, difyURL, e.llmProxy.URL()+"/v1")
		s = strings.ReplaceAll(s, wcURL, e.wcomProxy.URL())
		if c.wecom != "" {
			s = strings.Replace(s, "sso_base", c.wecom+"\nsso_base", 1)
		}
		if c.kb != "" {
			s = strings.Replace(s, `api_key = "app-llmtest"`, `api_key = "app-llmtest"`+"\n"+c.kb, 1)
		}
		if c.app != "" {
			s = strings.Replace(s, `backend = "kb"`+"\nthinking_after = \"-1s\"", `backend = "kb"`+"\n"+c.app, 1)
		}
		return s
	}
	h.start()

	c.inject(e)
	h.ask("helpdesk", victim, victimQ)
	waitFor(t, func() bool { return c.engaged(e) })
	// Another user is served while the fault lasts.
	asked := time.Now()
	h.ask("helpdesk", bystander, bystandQ)
	got := h.waitSent(bystander, 1)
	if got[0].Content != echo(bystandQ) {
		t.Fatalf("bystander got %q", got[0].Content)
	}
	if d := time.Since(asked); d > 2*time.Second {
		t.Errorf("bystander waited %v", d)
	}
	h.waitIdle()
	c.check(t, e, h.contentsTo(victim))
	if got := h.sentTo(bystander); len(got) != 1 {
		t.Errorf("bystander got %d messages", len(got))
	}

	// Shut everything down; no goroutine may be left behind.
	h.stop()
	e.llmProxy.close()
	e.wcomProxy.close()
	e.vdify.Close()
	h.dify.Close()
	h.oai.Close()
	h.wc.Close()
	http.DefaultClient.CloseIdleConnections()
	// fasthttp's worker-pool cleaner notices the stop only when its sleep
	// (MaxIdleWorkerDuration, 10 s) ends; it exits then on its own.
	goleak.VerifyNone(t, before, goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"))
}

// A daemon stopped right after Start stops serving and leaves no goroutine
// (fasthttp ignored a shutdown that came before Serve registered its
// listener, so the server kept accepting).
func TestShutdownRightAfterStart(t *testing.T) {
	before := goleak.IgnoreCurrent()
	h := newHarness(t, "")
	for range 5 {
		h.restart()
	}
	base := h.base
	h.stop()
	if resp, err := http.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("the stopped daemon still answers")
	}
	h.dify.Close()
	h.oai.Close()
	h.wc.Close()
	http.DefaultClient.CloseIdleConnections()
	goleak.VerifyNone(t, before, goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"))
}
