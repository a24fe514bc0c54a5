package main

import (
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// gate sits between the daemon and the fake Dify, at the TCP level, and
// decides how the LLM behaves for the runs that need it to change mid-run:
// it holds every request (the LLM hangs) until released, delays each by a
// fixed time (a slow LLM), or passes it straight on (the fake echoes at
// once). It copies bytes and nothing else, so it cannot change what the
// daemon and the fake say to each other: what the daemon sends waits at
// the gate, what the fake answers always flows.
type gate struct {
	ln    net.Listener
	up    string // host:port of the fake
	url   string
	mu    sync.Mutex
	open  chan struct{} // closed when requests may pass
	delay time.Duration
	held  atomic.Int64 // requests waiting at the gate now
	conns sync.WaitGroup
}

func newGate(upstream string) (*gate, error) {
	u, err := url.Parse(upstream) // "http://127.0.0.1:port/v1"
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g := &gate{ln: ln, up: u.Host, open: make(chan struct{})}
	close(g.open)
	g.url = "http://" + ln.Addr().String() + u.Path
	go g.serve()
	return g, nil
}

func (g *gate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.conns.Add(1)
		go func() {
			defer g.conns.Done()
			g.pipe(c)
		}()
	}
}

// pipe joins one daemon connection to a fresh one to the fake. Each chunk
// the daemon writes (in practice a whole request: the client flushes it
// in one write) waits while the gate is shut, then for the delay.
func (g *gate) pipe(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", g.up)
	if err != nil {
		return
	}
	defer up.Close()
	go func() {
		_, _ = io.Copy(c, up)
		c.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			g.mu.Lock()
			open, delay := g.open, g.delay
			g.mu.Unlock()
			g.held.Add(1)
			<-open
			g.held.Add(-1)
			if delay > 0 {
				time.Sleep(delay)
			}
			if _, werr := up.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// hang holds every request from now until pass or slow is called.
func (g *gate) hang() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

// slow lets requests through after d each (0: at once), releasing any
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

// close stops accepting; open connections end with their daemon.
func (g *gate) close() {
	g.pass()
	_ = g.ln.Close()
}
