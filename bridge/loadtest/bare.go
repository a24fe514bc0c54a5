package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// serveBare is the ceiling: a fasthttp server, set up like the daemon's
// (same limits and timeouts), whose handler only answers 200 with an empty
// body. It runs in its own process, like the daemon, until SIGTERM.
func serveBare(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &fasthttp.Server{
		Handler:               func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusOK) },
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		IdleTimeout:           120 * time.Second,
		MaxRequestBodySize:    64 << 10,
		ReadBufferSize:        8 << 10,
		Concurrency:           16 << 10,
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-sigs:
		return srv.Shutdown()
	case err := <-errc:
		return fmt.Errorf("bare server: %w", err)
	}
}
