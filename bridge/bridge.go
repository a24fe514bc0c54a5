package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/wecom"
)

// Deps are the collaborators a Bridge is built with.
type Deps struct {
	// Log is the daemon's logger (required).
	Log *slog.Logger
	// Store is the opened state (required).
	Store *kv.Store
	// HTTPClient is used for outbound calls to WeCom and the LLM backends;
	// nil uses a client with sane timeouts.
	HTTPClient *http.Client
	// Now is the clock; nil uses time.Now.
	Now func() time.Time
}

// Bridge is the running daemon.
type Bridge struct {
	log     *slog.Logger
	store   *kv.Store
	hc      *http.Client // LLM backends
	wecomHC *http.Client // the WeCom API
	now     func() time.Time

	rt      atomic.Pointer[runtime]
	reload  sync.Mutex
	pool    *pool
	budget  *budget
	metrics *metrics
	web     *web
	admin   *admin // the local admin socket (admin.go); nil if it could not open

	root   context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup

	srv      *fasthttp.Server
	ln       net.Listener
	served   chan struct{} // closed when Serve has returned
	serveErr chan error
}

// runtime is everything derived from one version of the config. A reload
// swaps it atomically; jobs already running keep the app they started with.
type runtime struct {
	cfg  *Config
	apps map[string]*app
}

// wecomConfig is the WeCom API client config of one app.
func (c *Config) wecomConfig(ac AppConfig, hc *http.Client, log *slog.Logger) wecom.Config {
	return wecom.Config{
		CorpID: c.WeCom.CorpID, Secret: ac.Secret.Value(), AgentID: ac.AgentID,
		APIBase: c.WeCom.APIBase, OAuthBase: c.WeCom.OAuthBase, SSOBase: c.WeCom.SSOBase,
		HTTPClient: hc, RateLimitWait: c.WeCom.RateLimitWait, Logger: log,
	}
}

// app is one configured WeCom app with its clients.
type app struct {
	cfg     AppConfig
	crypto  *wecom.Crypto
	client  *wecom.Client
	backend llm.Backend
	bcfg    llm.Config
	texts   Texts
	wc      WeComConfig
	depts   *deptCache
	allowU  map[string]bool
}

// New builds a Bridge from a validated config. It makes no network calls.
func New(cfg *Config, d Deps) (*Bridge, error) {
	if d.Log == nil || d.Store == nil {
		return nil, errors.New("bridge: Deps.Log and Deps.Store are required")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.HTTPClient == nil {
		d.HTTPClient = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 0, // streams: the llm package enforces idle timeouts
			// Each HTTP/1.1 connection keeps a read and a write buffer; with
			// one connection per answer streaming, the 4 KiB defaults cost
			// 8 MB per thousand answers. Requests are small JSON bodies and
			// the SSE reader has its own buffer.
			WriteBufferSize: 1 << 10,
			ReadBufferSize:  2 << 10,
		}}
	}
	b := &Bridge{
		log: d.Log, store: d.Store, hc: d.HTTPClient, wecomHC: wecomClient(d.HTTPClient), now: d.Now,
		metrics:  newMetrics(),
		serveErr: make(chan error, 1),
	}
	b.root, b.cancel = context.WithCancel(context.Background())
	rt, err := b.build(cfg)
	if err != nil {
		return nil, err
	}
	b.rt.Store(rt)
	b.budget = newBudget(cfg.WeCom.PerMemberPerMinute, d.Now)
	b.pool = newPool(cfg.Workers.Count, b.process, d.Log)
	if cfg.History.enabled() {
		w, err := newWeb(b, cfg)
		if err != nil {
			return nil, err
		}
		b.web = w
	}
	return b, nil
}

// maxWeComConns caps the connections to the WeCom API. A send takes
// milliseconds, so a few dozen connections carry hundreds of sends a
// second; without a cap, a thousand answers flushing a piece at the same
// moment would each open one (and its two goroutines and buffers).
const maxWeComConns = 64

// wecomClient returns hc with its own transport limited to maxWeComConns
// connections per host, when hc's transport is an *http.Transport.
func wecomClient(hc *http.Client) *http.Client {
	t, ok := hc.Transport.(*http.Transport)
	if !ok {
		return hc
	}
	t = t.Clone()
	t.MaxConnsPerHost = maxWeComConns
	c := *hc
	c.Transport = t
	return &c
}

// build creates the apps of a config.
func (b *Bridge) build(cfg *Config) (*runtime, error) {
	rt := &runtime{cfg: cfg, apps: map[string]*app{}}
	backends := map[string]llm.Backend{}
	for name, bc := range cfg.Backends {
		be, err := llm.New(bc, b.hc, b.log.With("backend", name))
		if err != nil {
			return nil, fmt.Errorf("bridge: backends.%s: %w", name, err)
		}
		backends[name] = be
	}
	for i, ac := range cfg.Apps {
		cr, err := wecom.NewCrypto(ac.Token.Value(), ac.EncodingAESKey.Value(), cfg.WeCom.CorpID,
			wecom.WithMaxBodySize(cfg.Server.MaxBodyBytes))
		if err != nil {
			return nil, fmt.Errorf("bridge: apps[%d].encoding_aes_key: %w", i, err)
		}
		hc := *b.wecomHC
		hc.Timeout = cfg.WeCom.RequestTimeout
		wcfg := cfg.wecomConfig(ac, &hc, b.log.With("app", ac.Name))
		wcfg.Now = b.now
		cl, err := wecom.New(wcfg)
		if err != nil {
			return nil, fmt.Errorf("bridge: apps[%d]: %w", i, err)
		}
		a := &app{
			cfg: ac, crypto: cr, client: cl, backend: backends[ac.Backend], bcfg: cfg.Backends[ac.Backend],
			texts: cfg.Texts, wc: cfg.WeCom,
			depts: newDeptCache(cfg.WeCom.DepartmentCacheTTL, b.now),
		}
		if len(ac.AllowUsers) > 0 {
			a.allowU = map[string]bool{}
			for _, u := range ac.AllowUsers {
				a.allowU[u] = true
			}
		}
		rt.apps[ac.Name] = a
	}
	return rt, nil
}

func (b *Bridge) app(name string) *app {
	return b.rt.Load().apps[name]
}

func (b *Bridge) config() *Config { return b.rt.Load().cfg }

// Reload swaps in a new config: apps, backends and texts. Jobs in flight
// finish with the apps they started with. Listen address, storage and worker
// count need a restart; a change to them is logged and ignored.
func (b *Bridge) Reload(cfg *Config) error {
	b.reload.Lock()
	defer b.reload.Unlock()
	old := b.config()
	if cfg.Server.Listen != old.Server.Listen || cfg.Storage.Path != old.Storage.Path || cfg.Workers.Count != old.Workers.Count {
		b.log.Warn("config reload: server.listen, storage.path and workers.count only change on restart")
	}
	rt, err := b.build(cfg)
	if err != nil {
		return err
	}
	b.rt.Store(rt)
	if b.web != nil {
		b.web.reload(cfg)
	}
	b.log.Info("config reloaded", "apps", len(cfg.Apps), "backends", len(cfg.Backends))
	return nil
}

// Start resumes the pending jobs found in storage, starts the background
// maintenance and begins serving on ln. It returns once serving has begun.
func (b *Bridge) Start(ln net.Listener) error {
	pending, err := b.store.Pending()
	if err != nil {
		return fmt.Errorf("bridge: resume pending jobs: %w", err)
	}
	if len(pending) > 0 {
		b.log.Info("resuming pending jobs", "count", len(pending))
	}
	// Submitted in id order before the listener opens, so a user's old
	// questions stay ahead of new ones.
	for _, j := range pending {
		b.pool.submit(b.root, j)
	}
	b.startAdmin()
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		b.maintain()
	}()
	b.srv, b.ln, b.served = b.newServer(), ln, make(chan struct{})
	go func() {
		defer close(b.served)
		b.serveErr <- b.srv.Serve(ln)
	}()
	return nil
}

// Err returns a channel that receives the server's error if it stops on its
// own (not through Shutdown).
func (b *Bridge) Err() <-chan error { return b.serveErr }

// Shutdown stops taking callbacks, lets answers in flight finish until ctx
// is done, then cancels the rest. What is left stays pending in storage and
// is resumed at the next start.
func (b *Bridge) Shutdown(ctx context.Context) error {
	var errs []error
	if b.srv != nil {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := b.srv.ShutdownWithContext(sctx); err != nil {
			errs = append(errs, fmt.Errorf("bridge: stop server: %w", err))
		}
		cancel()
		// fasthttp only closes listeners that Serve has registered: a
		// shutdown right after Start, before the Serve goroutine ran,
		// left the server accepting forever. Closing the listener here
		// makes Serve return in every case.
		_ = b.ln.Close()
		<-b.served
	}
	b.closeIdle()
	b.pool.stop()
	if !b.pool.wait(ctx) {
		b.log.Warn("shutdown deadline reached; unfinished answers stay pending and resume at next start")
	}
	b.cancel()
	b.pool.wait(context.Background())
	b.bg.Wait()
	b.stopAdmin(ctx)
	return errors.Join(errs...)
}

// closeIdle closes the idle outbound connections (to WeCom and the LLM
// backends), so that a stopped Bridge leaves no connection or goroutine.
func (b *Bridge) closeIdle() {
	for _, hc := range []*http.Client{b.hc, b.wecomHC} {
		if t, ok := hc.Transport.(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
	}
}

// maintain prunes old dedup marks, history and sessions periodically.
func (b *Bridge) maintain() {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		cfg := b.config()
		now := b.now()
		for {
			n, err := b.store.PruneSeen(now.Add(-cfg.Storage.DedupWindow), 5000)
			if err != nil {
				b.log.Warn("prune dedup marks", "err", err)
			}
			if n < 5000 {
				break
			}
		}
		if cfg.Storage.Retention > 0 {
			for {
				n, err := b.store.PruneHistory(now.Add(-cfg.Storage.Retention), 2000)
				if err != nil {
					b.log.Warn("prune history", "err", err)
				}
				if n < 2000 {
					break
				}
			}
		}
		if err := b.store.PruneExpired(); err != nil {
			b.log.Warn("prune sessions", "err", err)
		}
		select {
		case <-b.root.Done():
			return
		case <-t.C:
		}
	}
}
