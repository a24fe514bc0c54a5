package main

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// gate sits between the daemon and the fake Dify and decides how the LLM
// behaves for the runs that need it to change mid-run: it holds every
// question (the LLM hangs) until released, delays each by a fixed time (a
// slow LLM), or passes it straight through (the fake echoes at once).
// Other requests (/info, /parameters, stop) always pass.
type gate struct {
	srv   *http.Server
	url   string
	mu    sync.Mutex
	open  chan struct{} // closed when questions may pass
	delay time.Duration
	held  atomic.Int64 // questions waiting at the gate now
}

func newGate(upstream string) (*gate, error) {
	u, err := url.Parse(upstream) // ".../v1"
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g := &gate{open: make(chan struct{})}
	close(g.open)
	rp := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(&url.URL{Scheme: u.Scheme, Host: u.Host}) },
		FlushInterval: -1, // the answer streams
		Transport:     &http.Transport{MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute},
		// The daemon hangs up once it has the answer's last event, before
		// the fake's stream ends; that is not worth a log line.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	g.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && isQuestion(r.URL.Path) {
			g.mu.Lock()
			open, delay := g.open, g.delay
			g.mu.Unlock()
			g.held.Add(1)
			select {
			case <-open:
			case <-r.Context().Done():
				g.held.Add(-1)
				return
			}
			g.held.Add(-1)
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-r.Context().Done():
					return
				}
			}
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = g.srv.Serve(ln) }()
	g.url = "http://" + ln.Addr().String() + u.Path
	return g, nil
}

func isQuestion(path string) bool {
	for _, p := range []string{"/chat-messages", "/workflows/run", "/completion-messages"} {
		if len(path) >= len(p) && path[len(path)-len(p):] == p {
			return true
		}
	}
	return false
}

// hang holds every new question until pass or slow is called.
func (g *gate) hang() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

// slow lets questions through after d each (0: at once), releasing any
// held ones.
func (g *gate) slow(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.delay = d
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *gate) pass() { g.slow(0) }

func (g *gate) close() { _ = g.srv.Close() }
