package bridge

import (
	"github.com/wecom-bridge/wecom-bridge/bridge/history"
)

// The employee history page is package history; this file is all the
// bridge knows of it: which config it gets, and where its WeCom client
// comes from.

// historyConfig is the page's part of the config.
func historyConfig(c *Config) history.Config {
	return history.Config{
		PublicURL:  c.Server.PublicURL,
		LoginApp:   c.History.LoginApp,
		SessionKey: []byte(c.History.SessionKey.Value()),
		SessionTTL: c.History.SessionTTL,
		Admins:     c.History.Admins,
		Retention:  c.Storage.Retention,
		MediaDir:   mediaDir(c),
	}
}

// newWeb builds the history page on the bridge's store, clock and clients.
func newWeb(b *Bridge, cfg *Config) (*history.Handler, error) {
	return history.New(historyConfig(cfg), history.Deps{
		Log: b.log, Store: b.store, LoginClient: b.loginClient, Context: b.root, Now: b.now,
	})
}

// loginClient is the current WeCom client of an app, for the page's
// sign-in; a reload swaps the clients, so the page asks each time.
func (b *Bridge) loginClient(name string) history.LoginClient {
	if a := b.app(name); a != nil {
		return a.client
	}
	return nil // not a typed nil: the page tests for nil
}
