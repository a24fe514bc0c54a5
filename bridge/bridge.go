package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wecom-bridge/wecom-bridge/bridge/history"
	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
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
	// Backends, when set, replace the backends of the same name in
	// Config.Backends, whose entry then only sets how the bridge treats the
	// backend (its type). The demo mode uses it for its built-in model.
	Backends map[string]llm.Backend
}

// Bridge is the running daemon.
type Bridge struct {
	log     *slog.Logger
	store   *kv.Store
	hc      *http.Client // LLM backends
	fixed   map[string]llm.Backend
	wecomHC *http.Client // the WeCom API
	now     func() time.Time

	rt      atomic.Pointer[runtime]
	reload  sync.Mutex
	pool    *pool
	budget  *budget
	dupSeq  *dupSeqs
	metrics *metrics
	web     *history.Handler
	admin   *admin // the local admin socket (admin.go); nil if it could not open

	// clients keeps one WeCom API client per (corp, agent, secret, API
	// base) across reloads, with its token cache and department cache.
	clientsMu sync.Mutex
	clients   map[clientKey]*appClients
	bots      map[botKey]*botConn // the bots' long connections
	started   bool                // Start has run: new bot connections start at once

	// hookLive are the bubbles of webhook-mode bots that this process is
	// streaming, by job id; WeCom's refresh callbacks read them.
	hookMu   sync.Mutex
	hookLive map[uint64]*botLive
	// botWindowNS overrides how long a bot's bubble takes updates (tests).
	botWindowNS atomic.Int64

	// speech transcribes the apps' voice messages (nil: none configured).
	speech atomic.Pointer[speech]

	// Attachments being downloaded right after intake, by job id.
	fetchMu  sync.Mutex
	fetching map[uint64]chan struct{}
	fetchSem chan struct{}

	// writeFailing is when our store last failed a write while answering,
	// as Unix nanoseconds; 0 once a write has worked again. /healthz reads it.
	writeFailing atomic.Int64

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
	bots map[string]*bot
}

// wecomConfig is the WeCom API client config of one app.
func (c *Config) wecomConfig(ac AppConfig, hc *http.Client, log *slog.Logger) wecom.Config {
	return wecom.Config{
		CorpID: c.WeCom.CorpID, Secret: ac.Secret.Value(), AgentID: ac.AgentID,
		APIBase: c.WeCom.APIBase, OAuthBase: c.WeCom.OAuthBase, SSOBase: c.WeCom.SSOBase,
		HTTPClient: hc, Logger: log,
	}
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
		log: d.Log, store: d.Store, hc: d.HTTPClient, fixed: d.Backends, wecomHC: wecomClient(d.HTTPClient, cfg), now: d.Now,
		metrics:  newMetrics(),
		serveErr: make(chan error, 1),
		clients:  map[clientKey]*appClients{},
		bots:     map[botKey]*botConn{},
		hookLive: map[uint64]*botLive{},
		fetching: map[uint64]chan struct{}{},
		fetchSem: make(chan struct{}, fetchers),
	}
	b.root, b.cancel = context.WithCancel(context.Background())
	rt, err := b.build(cfg)
	if err != nil {
		return nil, err
	}
	b.rt.Store(rt)
	sp, err := newSpeech(b.root, cfg, b.hc, d.Log)
	if err != nil {
		return nil, err
	}
	b.speech.Store(sp)
	b.budget = newBudget(cfg.WeCom.PerMemberPerMinute, d.Now)
	b.dupSeq = newDupSeqs(d.Store)
	b.pool = newPool(cfg.Workers.Count, b.processRef, d.Log)
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
// The transport goes through [wecom] proxy (or HTTPS_PROXY) when set, so
// that WeCom sees a fixed egress IP for 企业可信IP.
func wecomClient(hc *http.Client, cfg *Config) *http.Client {
	t, ok := hc.Transport.(*http.Transport)
	if !ok {
		return hc
	}
	t = cfg.WeComTransport(t)
	t.MaxConnsPerHost = maxWeComConns
	c := *hc
	c.Transport = t
	return &c
}

// build creates the apps of a config. WeCom clients are reused from the
// previous config when the app's credentials did not change, so that a
// reload costs no gettoken and keeps the department cache.
func (b *Bridge) build(cfg *Config) (*runtime, error) {
	rt := &runtime{cfg: cfg, apps: map[string]*app{}, bots: map[string]*bot{}}
	backends := map[string]llm.Backend{}
	for name, bc := range cfg.Backends {
		if be, ok := b.fixed[name]; ok {
			backends[name] = be
			continue
		}
		if name == cfg.Media.SpeechBackend && bc.Model == "" && bc.TranscriptionModel != "" {
			continue // a speech-only backend: used by speech, not asked questions
		}
		be, err := llm.New(bc, b.hc, b.log.With("backend", name))
		if err != nil {
			return nil, fmt.Errorf("bridge: backends.%s: %w", name, err)
		}
		backends[name] = be
	}
	used := map[clientKey]bool{}
	for i, ac := range cfg.Apps {
		cr, err := wecom.NewCrypto(ac.Token.Value(), ac.EncodingAESKey.Value(), cfg.WeCom.CorpID,
			wecom.WithMaxBodySize(cfg.Server.MaxBodyBytes))
		if err != nil {
			return nil, fmt.Errorf("bridge: apps[%d].encoding_aes_key: %w", i, err)
		}
		cc, err := b.appClient(cfg, ac)
		if err != nil {
			return nil, fmt.Errorf("bridge: apps[%d]: %w", i, err)
		}
		used[cc.key] = true
		a := &app{
			cfg: ac, crypto: cr, client: cc.client, backend: backends[ac.Backend], bcfg: cfg.Backends[ac.Backend],
			texts: cfg.Texts, wc: cfg.WeCom, depts: cc.depts,
		}
		a.set = answerSettings{
			name: ac.Name, backend: a.backend, bcfg: a.bcfg, texts: cfg.Texts, inputs: ac.Inputs,
			idleRollover: ac.IdleRollover, perMinute: ac.PerMinute, perDay: ac.PerDay, welcome: ac.Welcome,
		}
		a.access = newAccess(ac.AllowUsers, ac.AllowDepartments, cc.depts, cc.client.UserDepartments)
		rt.apps[ac.Name] = a
	}
	usedBots := map[botKey]bool{}
	for i, bc := range cfg.Bots {
		bt := &bot{cfg: bc}
		bt.set = answerSettings{
			name: bc.Name, backend: backends[bc.Backend], bcfg: cfg.Backends[bc.Backend], texts: cfg.Texts,
			inputs: bc.Inputs, idleRollover: bc.IdleRollover, perMinute: bc.PerMinute, perDay: bc.PerDay,
			welcome: bc.Welcome,
		}
		// A bot cannot read the contacts: departments are looked up with
		// the first app's client, if there is one.
		bt.access = newAccess(bc.AllowUsers, bc.AllowDepartments, nil, nil)
		if len(cfg.Apps) > 0 {
			if first := rt.apps[cfg.Apps[0].Name]; first != nil {
				bt.access = newAccess(bc.AllowUsers, bc.AllowDepartments, first.depts, first.client.UserDepartments)
			}
		}
		switch bc.Mode {
		case BotModeWebhook:
			hook, err := aibot.NewWebhook(bc.Token.Value(), bc.EncodingAESKey.Value(), wecom.WithMaxBodySize(cfg.Server.MaxBodyBytes))
			if err != nil {
				return nil, fmt.Errorf("bridge: bots[%d]: %w", i, err)
			}
			bt.hook = hook
		default:
			c, err := b.botConnFor(bc)
			if err != nil {
				return nil, fmt.Errorf("bridge: %w", err)
			}
			usedBots[c.key] = true
			bt.conn = c
		}
		rt.bots[bc.Name] = bt
	}
	b.clientsMu.Lock()
	for k := range b.clients {
		if !used[k] {
			delete(b.clients, k)
		}
	}
	b.clientsMu.Unlock()
	return rt, nil
}

// clientKey identifies the WeCom API client of an app: a client (its token)
// is valid for exactly one corp, agent and secret.
type clientKey struct {
	corp, secret, apiBase, oauthBase, ssoBase string
	agent                                     int64
	timeout                                   time.Duration
}

// appClients is an app's WeCom client with the caches that belong to it.
type appClients struct {
	key    clientKey
	client *wecom.Client
	depts  *deptCache
}

// appClient returns the WeCom client for an app, reusing the one built for
// the same credentials by an earlier config.
func (b *Bridge) appClient(cfg *Config, ac AppConfig) (*appClients, error) {
	k := clientKey{
		corp: cfg.WeCom.CorpID, secret: ac.Secret.Value(), agent: ac.AgentID,
		apiBase: cfg.WeCom.APIBase, oauthBase: cfg.WeCom.OAuthBase, ssoBase: cfg.WeCom.SSOBase,
		timeout: cfg.WeCom.RequestTimeout,
	}
	b.clientsMu.Lock()
	defer b.clientsMu.Unlock()
	if cc := b.clients[k]; cc != nil {
		if cc.depts.ttl != cfg.WeCom.DepartmentCacheTTL {
			cc.depts.setTTL(cfg.WeCom.DepartmentCacheTTL)
		}
		return cc, nil
	}
	hc := *b.wecomHC
	hc.Timeout = cfg.WeCom.RequestTimeout
	wcfg := cfg.wecomConfig(ac, &hc, b.log.With("app", ac.Name))
	wcfg.Now = b.now
	cl, err := wecom.New(wcfg)
	if err != nil {
		return nil, err
	}
	cc := &appClients{key: k, client: cl, depts: newDeptCache(cfg.WeCom.DepartmentCacheTTL, b.now)}
	b.clients[k] = cc
	return cc, nil
}

// endpoint returns the configured app or bot that job-owner name refers to,
// or nil.
func (b *Bridge) endpoint(name string) endpoint {
	rt := b.rt.Load()
	if a := rt.apps[name]; a != nil {
		return a
	}
	if bt := rt.bots[name]; bt != nil {
		return bt
	}
	return nil
}

// startBots runs the long connections of rt's bots (once Start has run)
// and ends those no bot uses any more.
func (b *Bridge) startBots(rt *runtime) {
	b.clientsMu.Lock()
	defer b.clientsMu.Unlock()
	used := map[botKey]bool{}
	for _, bt := range rt.bots {
		if bt.conn != nil {
			used[bt.conn.key] = true
			if b.started {
				b.runBot(bt.conn)
			}
		}
	}
	b.pruneBots(used)
}

// storageFailed records that a write of ours failed; /healthz reports it
// until a write works again.
func (b *Bridge) storageFailed(err error) {
	if b.writeFailing.Load() == 0 {
		b.log.Error("storage writes are failing; answers wait until they work again (disk full or read-only?)", "err", err)
	}
	b.writeFailing.Store(b.now().UnixNano())
	b.noteErr("storage", err)
}

// storageOK records a successful write after failures.
func (b *Bridge) storageOK() {
	if b.writeFailing.Swap(0) != 0 {
		b.log.Info("storage writes work again")
	}
}

// noteSent records that a message to a member left at t, so that the send
// budget survives a restart: WeCom still counts the messages of the last
// minute (and hour) when we come back. A failed record only weakens that,
// so it is logged, not fatal.
func (b *Bridge) noteSent(app, user string, t time.Time) {
	if err := b.store.RecordSend(app, user, t); err != nil {
		b.log.Warn("cannot record a send for the per-member budget", "err", err)
	}
}

// restoreBudget loads the send stamps of the last hour into the budget.
func (b *Bridge) restoreBudget() error {
	since := b.now().Add(-time.Hour - budgetMargin)
	stamps, err := b.store.AllRecentSends(since)
	if err != nil {
		return err
	}
	byKey := map[string][]time.Time{}
	for _, st := range stamps {
		k := laneKey(st.App, strings.ToLower(st.Member))
		byKey[k] = append(byKey[k], st.At)
	}
	for k, ts := range byKey {
		b.budget.restore(k, ts)
	}
	return nil
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
	if keys := RestartKeys(old, cfg); len(keys) > 0 {
		b.log.Warn("config reload: these keys only change on restart / 以下配置项需要重启才生效", "keys", keys)
	}
	rt, err := b.build(cfg)
	if err != nil {
		return err
	}
	sp, err := newSpeech(b.root, cfg, b.hc, b.log)
	if err != nil {
		return err
	}
	b.rt.Store(rt)
	b.speech.Store(sp)
	b.budget.setLimit(cfg.WeCom.PerMemberPerMinute)
	b.startBots(rt)
	if b.web != nil {
		_ = b.web.Reload(historyConfig(cfg)) // logged; the page keeps its old settings
	}
	b.log.Info("config reloaded", "apps", len(cfg.Apps), "backends", len(cfg.Backends))
	return nil
}

// Start resumes the pending jobs found in storage, starts the background
// maintenance and begins serving on ln. It returns once serving has begun.
func (b *Bridge) Start(ln net.Listener) error {
	if err := b.restoreBudget(); err != nil {
		return fmt.Errorf("bridge: load the send budget: %w", err)
	}
	// Pending jobs are queued in id order before the listener opens, so a
	// user's old questions stay ahead of new ones. They are read a page at
	// a time: the pool keeps only their ids.
	var after uint64
	resumed := 0
	for {
		page, err := b.store.PendingPage(after, 2000)
		if err != nil {
			return fmt.Errorf("bridge: resume pending jobs: %w", err)
		}
		for _, j := range page {
			b.pool.submit(b.root, j)
			after = j.ID
		}
		resumed += len(page)
		if len(page) < 2000 {
			break
		}
	}
	if resumed > 0 {
		b.log.Info("resuming pending jobs", "count", resumed)
	}
	b.startAdmin()
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		b.maintain()
	}()
	b.clientsMu.Lock()
	b.started = true
	b.clientsMu.Unlock()
	b.startBots(b.rt.Load())
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
		b.pruneMedia(cfg.Storage.Retention)
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
		b.budget.forget()
		b.clientsMu.Lock()
		conns := make([]*botConn, 0, len(b.bots))
		for _, c := range b.bots {
			conns = append(conns, c)
		}
		b.clientsMu.Unlock()
		for _, c := range conns {
			c.sweep(now, b.botWindow())
		}
		select {
		case <-b.root.Done():
			return
		case <-t.C:
		}
	}
}
