// Command wecom-bridge connects WeCom (企业微信) self-built apps to an LLM
// backend (Dify or any OpenAI-compatible API).
//
//	wecom-bridge [-config PATH]                      run the daemon
//	wecom-bridge check -config PATH                  validate the config and test every app
//	wecom-bridge check-config -config PATH           only validate the config
//	wecom-bridge simulate -config PATH [-app NAME] [-user ID]
//	                                                 chat in the terminal through the real pipeline
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
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wecom-bridge/wecom-bridge/bridge"
	"github.com/wecom-bridge/wecom-bridge/kv"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

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
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage:
  wecom-bridge [-config PATH]              run the daemon (default config `+bridge.DefaultConfigPath+`)
  wecom-bridge check -config PATH          validate the config and test each app against WeCom and its backend
  wecom-bridge check-config -config PATH   only validate the config (no network; for ExecStartPre)
  wecom-bridge simulate -config PATH [-app NAME | -bot NAME | -backend NAME] [-user ID]
                                           chat in the terminal through the real pipeline, with an emulated WeCom
                                           (WeCom secrets are generated; only the backend must be real)
  wecom-bridge demo                        试用：真实的守护进程 + 内置企业微信模拟器 + 演示模型，无需配置 / try it, no config needed
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
		fmt.Fprintf(stdout, "wecom-bridge %s\n", version)
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
func serve(configPath string, cfg *bridge.Config, log *slog.Logger) error {
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
	log.Info("wecom-bridge started", "version", version, "listen", ln.Addr().String(), "public_url", cfg.Server.PublicURL, "apps", len(cfg.Apps))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for {
		select {
		case err := <-b.Err():
			return fmt.Errorf("server: %w", err)
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
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownGrace)
			err := b.Shutdown(ctx)
			cancel()
			return err
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
