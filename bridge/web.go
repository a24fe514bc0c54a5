package bridge

import "github.com/valyala/fasthttp"

// web serves the employee history page. (Filled in by the history issue.)
type web struct{}

func newWeb(b *Bridge, cfg *Config) (*web, error) { return &web{}, nil }

func (w *web) reload(cfg *Config) {}

func (w *web) handles(path []byte) bool { return false }

func (w *web) serve(ctx *fasthttp.RequestCtx) {}
