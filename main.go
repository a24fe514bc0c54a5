// Command wecom-bridge connects WeCom (企业微信) self-built apps to an LLM
// backend (Dify or any OpenAI-compatible API).
//
//	wecom-bridge [-config PATH]                      run the daemon
//	wecom-bridge check -config PATH                  validate the config and test every app
//	wecom-bridge check-config -config PATH           only validate the config
//	wecom-bridge simulate -config PATH [-app NAME] [-user ID]
//	                                                 chat in the terminal through the real pipeline
//	wecom-bridge backup [-config PATH | -db FILE] -out FILE
//	                                                 consistent copy of the database
//	wecom-bridge healthcheck [-config PATH | -url URL] exit 0 if /healthz answers ok
//	wecom-bridge version
//
// main.go is the composition root: it parses flags, loads the config, builds
// the logger, opens the store and hands them to the bridge.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/wecom-bridge/wecom-bridge/bridge"
	"github.com/wecom-bridge/wecom-bridge/kv"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("wecom-bridge "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", bridge.DefaultConfigPath, "path of the TOML config file")
	showVersion := fs.Bool("version", false, "print the version and exit")
	appName := fs.String("app", "", "simulate: the app to talk to (default: the first)")
	botName := fs.String("bot", "", "simulate: the bot to talk to")
	backendName := fs.String("backend", "", "simulate: talk to this backend through a generated app")
	userID := fs.String("user", "simulator", "simulate: the WeCom userid to write as")
	outPath := fs.String("out", "", "backup: the file to write the copy to")
	dbPath := fs.String("db", "", "backup: the database file (storage.path), instead of reading -config")
	healthURL := fs.String("url", "", "healthcheck: the /healthz URL (default: from server.listen in -config)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage:
  wecom-bridge [-config PATH]              run the daemon (default config `+bridge.DefaultConfigPath+`)
  wecom-bridge check -config PATH          validate the config and test each app against WeCom and its backend
  wecom-bridge check-config -config PATH   only validate the config (no network; for ExecStartPre)
  wecom-bridge simulate -config PATH [-app NAME | -bot NAME | -backend NAME] [-user ID]
                                           chat in the terminal through the real pipeline, with an emulated WeCom
                                           (WeCom secrets are generated; only the backend must be real)
  wecom-bridge demo                        试用：真实的守护进程 + 内置企业微信模拟器 + 演示模型，无需配置 / try it, no config needed
  wecom-bridge backup [-config PATH | -db FILE] -out FILE
                                           consistent copy of the database (asks the running daemon, or copies the stopped one)
  wecom-bridge healthcheck [-config PATH | -url URL]
                                           exit 0 if the daemon's /healthz answers ok (for Docker HEALTHCHECK)
  wecom-bridge version
`)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion || cmd == "version" {
		fmt.Fprint(stdout, versionText())
		return 0
	}
	switch cmd {
	case "serve", "check", "check-config":
	case "demo":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		if err := bridge.Demo(ctx, bridge.DemoOptions{In: stdin, Out: stdout, Log: log, Env: os.Getenv}); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	case "simulate":
		cfg, choice, err := bridge.LoadForSimulate(*configPath, bridge.SimulateChoice{App: *appName, Bot: *botName, Backend: *backendName})
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		switch {
		case choice.Bot != "":
			fmt.Fprintf(stderr, "simulate: 使用智能机器人 %q（后端 %q）/ using bot %q\n", choice.Bot, choice.Backend, choice.Bot)
		case len(cfg.Apps) > 0:
			fmt.Fprintf(stderr, "simulate: 使用应用 %q（后端 %q）/ using app %q\n", cfg.Apps[0].Name, choice.Backend, cfg.Apps[0].Name)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		log := newLogger(cfg.Log, stderr)
		if err := bridge.Simulate(ctx, cfg, bridge.SimulateOptions{Choice: choice, User: *userID, In: stdin, Out: stdout, Log: log}); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	case "backup":
		if *dbPath != "" {
			// Only storage.path is needed: no secrets, so a backup timer
			// needs no access to them.
			return backup(&bridge.Config{Storage: bridge.StorageConfig{Path: *dbPath}}, *outPath, stdout, stderr)
		}
	case "healthcheck":
		if *healthURL != "" {
			return healthcheck(*healthURL, stdout, stderr)
		}
	default:
		fmt.Fprintf(stderr, "unknown command %q\n", cmd)
		fs.Usage()
		return 2
	}
	cfg, err := bridge.Load(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	switch cmd {
	case "healthcheck":
		return healthcheck(healthzURL(cfg.Server.Listen), stdout, stderr)
	case "backup":
		return backup(cfg, *outPath, stdout, stderr)
	case "check-config":
		fmt.Fprintf(stdout, "%s: config OK (%d app(s), %d backend(s))\n", *configPath, len(cfg.Apps), len(cfg.Backends))
		return 0
	case "check":
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if !bridge.Check(ctx, cfg, stdout, log) {
			return 1
		}
		return 0
	}
	if err := serve(*configPath, cfg, log); err != nil {
		log.Error("wecom-bridge stopped", "err", err)
		return 1
	}
	return 0
}

// serve runs the daemon until SIGTERM or SIGINT; SIGHUP reloads the config.
// If the server stops on its own, the answers in flight still drain before
// it returns the server's error.
func serve(configPath string, cfg *bridge.Config, log *slog.Logger) error {
	// Before anything starts: a SIGTERM that arrives while the daemon is
	// starting must shut it down cleanly, not kill it mid-write.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt, syscall.SIGHUP)
	defer signal.Stop(sigs)

	store, err := kv.Open(cfg.Storage.Path, kv.Options{Logger: log.With("component", "kv")})
	if err != nil {
		return err
	}
	defer store.Close()
	b, err := bridge.New(cfg, bridge.Deps{Log: log, Store: store})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("listen on server.listen %s: %w", cfg.Server.Listen, err)
	}
	if err := b.Start(ln); err != nil {
		return err
	}
	log.Info("wecom-bridge started", "version", moduleVersion(), "listen", ln.Addr().String(), "public_url", cfg.Server.PublicURL, "apps", len(cfg.Apps))

	drain := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownGrace)
		defer cancel()
		return b.Shutdown(ctx)
	}
	for {
		select {
		case err := <-b.Err():
			if err == nil {
				err = errors.New("stopped accepting connections")
			}
			log.Error("server stopped on its own; draining answers in flight", "err", err, "grace", cfg.Server.ShutdownGrace)
			return errors.Join(fmt.Errorf("server: %w", err), drain())
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				next, err := bridge.Load(configPath)
				if err != nil {
					log.Error("config reload failed; keeping the running config", "err", err)
					continue
				}
				if err := b.Reload(next); err != nil {
					log.Error("config reload failed; keeping the running config", "err", err)
				}
				continue
			}
			log.Info("shutting down", "signal", sig.String(), "grace", cfg.Server.ShutdownGrace)
			return drain()
		}
	}
}

// newLogger builds the daemon's logger from [log]. Under systemd (journald
// adds its own timestamps) the time is left out unless asked for.
func newLogger(c bridge.LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	stamps := c.Timestamps == "on" || (c.Timestamps == "auto" && os.Getenv("JOURNAL_STREAM") == "")
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if !stamps && len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// backup writes a verified copy of cfg's database to out.
func backup(cfg *bridge.Config, out string, stdout, stderr io.Writer) int {
	if out == "" {
		fmt.Fprintln(stderr, "backup: -out FILE is required (备份需要用 -out 指定输出文件)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bridge.Backup(ctx, cfg, out)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	from := "copied from the stopped database file (守护进程未运行，直接复制)"
	if res.Live {
		from = "snapshot from the running daemon (由运行中的守护进程生成快照)"
	}
	fmt.Fprintf(stdout, "%s: %d bytes in %v, %s; verified: %d history entries, %d pending jobs\n",
		res.Path, res.Bytes, res.Took.Round(time.Millisecond), from, res.Stats.HistoryEntries, res.Stats.PendingJobs)
	return 0
}

// versionText is what `version` prints, from the build info the Go
// toolchain embeds (no -ldflags needed): the module version, the VCS
// revision and commit time with a "modified" mark for a dirty tree, the Go
// version and platform. The build time itself is not recorded by Go.
func versionText() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "wecom-bridge %s\n", moduleVersion())
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return sb.String()
	}
	set := map[string]string{}
	for _, s := range bi.Settings {
		set[s.Key] = s.Value
	}
	if rev := set["vcs.revision"]; rev != "" {
		fmt.Fprintf(&sb, "revision %s", rev)
		if t := set["vcs.time"]; t != "" {
			fmt.Fprintf(&sb, " (committed %s)", t)
		}
		if set["vcs.modified"] == "true" {
			sb.WriteString(" modified")
		}
		sb.WriteString("\n")
	} else {
		sb.WriteString("revision unknown (built without VCS information)\n")
	}
	fmt.Fprintf(&sb, "built with %s %s/%s", bi.GoVersion, set["GOOS"], set["GOARCH"])
	if c, ok := set["CGO_ENABLED"]; ok {
		fmt.Fprintf(&sb, " CGO_ENABLED=%s", c)
	}
	sb.WriteString("\n")
	return sb.String()
}

// moduleVersion is the main module's version: a tag or pseudo-version
// derived from VCS, or "(devel)".
func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// healthzURL is the daemon's /healthz on server.listen, with a wildcard
// host replaced by loopback.
func healthzURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen + "/healthz"
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::", "[::]":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz"
}

// healthcheck GETs url and returns 0 on 200, 1 otherwise; it needs no
// shell or curl, so a FROM-scratch image can use it as its HEALTHCHECK.
func healthcheck(url string, stdout, stderr io.Writer) int {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck %s: %v\n", url, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck %s: %s: %s", url, resp.Status, body)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s", url, body)
	return 0
}
