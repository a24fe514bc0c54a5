package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

// The admin socket is the daemon's local admin endpoint: a unix socket next
// to the database file ("<storage.path>.sock"), mode 0600, in a directory
// that only the daemon's user can enter under systemd (StateDirectoryMode
// 0700) and in the container. No remote client can reach it, and on the
// machine only the daemon's user and root can connect. It serves plain HTTP:
//
//	GET /snapshot   a consistent copy of the database (kv.Store.WriteSnapshot)
//
// It sits next to the database rather than in $RUNTIME_DIRECTORY because
// `wecom-bridge backup` finds it from the same config the daemon reads, from
// a timer unit, a shell or `docker exec`, none of which see the daemon's
// environment; and the database's own lock tells whether a leftover socket
// belongs to a live daemon.

// AdminSocketPath is where the daemon with this config listens for admin
// requests.
func AdminSocketPath(cfg *Config) string { return cfg.Storage.Path + ".sock" }

// admin serves the admin socket.
type admin struct {
	path string
	ln   net.Listener
	srv  *http.Server
	log  *slog.Logger
}

// newAdmin listens on the unix socket at path and serves store's admin
// requests. Whatever is at path must be a socket left by an earlier run (the
// caller holds the database's lock, so no live daemon uses it); it is
// replaced. The socket is created in a private temporary directory, made
// 0600 and only then moved into place, so there is no moment when another
// user could connect.
func newAdmin(path string, store *kv.Store, log *slog.Logger) (*admin, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("bridge: admin socket %s: a file that is not a socket is in the way (storage.path + \".sock\")", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("bridge: admin socket: remove the one left by an earlier run: %w", err)
		}
	}
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".admin-")
	if err != nil {
		return nil, fmt.Errorf("bridge: admin socket: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("bridge: admin socket: %w", err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // it is renamed; close removes it by its final path
	if err := os.Chmod(tmp, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("bridge: admin socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("bridge: admin socket: %w", err)
	}
	a := &admin{path: path, ln: ln, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /snapshot", func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w.Header().Set("Content-Type", "application/octet-stream")
		n, err := store.WriteSnapshot(r.Context(), w)
		if err != nil {
			log.Error("admin: snapshot failed", "bytes", n, "err", err)
			// Break the stream, so the client cannot take a short copy
			// for a whole one.
			panic(http.ErrAbortHandler)
		}
		log.Info("admin: snapshot sent", "bytes", n, "took", time.Since(start).Round(time.Millisecond))
	})
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin socket stopped", "err", err)
		}
	}()
	return a, nil
}

// close stops the admin server, letting a snapshot in progress finish until
// ctx is done, and removes the socket.
func (a *admin) close(ctx context.Context) {
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close()
	}
	if err := os.Remove(a.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn("admin socket: remove", "err", err)
	}
}

// startAdmin opens the admin socket of a starting daemon. A failure only
// costs live backups, so it is logged and the daemon goes on.
func (b *Bridge) startAdmin() {
	path := AdminSocketPath(b.config())
	a, err := newAdmin(path, b.store, b.log.With("component", "admin"))
	if err != nil {
		b.log.Error("admin socket not available: `wecom-bridge backup` cannot copy the database while the daemon runs", "err", err)
		return
	}
	b.admin = a
}

// stopAdmin closes the admin socket, if it is open.
func (b *Bridge) stopAdmin(ctx context.Context) {
	if b.admin != nil {
		b.admin.close(ctx)
	}
}

// BackupResult describes a finished backup.
type BackupResult struct {
	Path  string        // the backup file
	Bytes int64         // its size
	Took  time.Duration // from the request to the verified, renamed file
	Live  bool          // true: copied by the running daemon; false: from the stopped database
	Stats kv.Stats      // what the copy holds
}

// Backup writes a consistent copy of cfg's database to out. When the daemon
// runs, it asks the daemon through the admin socket (bbolt's lock keeps any
// other process out of a live database); when it does not, it copies the
// file itself. The copy is written to a temporary file next to out, synced,
// checked with kv.VerifySnapshot and only then renamed to out, so out is
// always either the old file or a whole new copy.
func Backup(ctx context.Context, cfg *Config, out string) (BackupResult, error) {
	start := time.Now()
	res := BackupResult{Path: out}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return res, fmt.Errorf("bridge: backup: %w", err)
	}
	tmp := f.Name()
	defer func() {
		_ = f.Close()
		_ = os.Remove(tmp) // gone already after the rename
	}()
	res.Live, err = snapshotLive(ctx, AdminSocketPath(cfg), f)
	if err == nil && !res.Live {
		_, err = kv.SnapshotFile(ctx, cfg.Storage.Path, f, 2*time.Second)
		if errors.Is(err, kv.ErrLocked) {
			err = fmt.Errorf("%w; its admin socket %s does not answer (see the daemon's log)", err, AdminSocketPath(cfg))
		}
	}
	if err != nil {
		return res, fmt.Errorf("bridge: backup of storage.path %s: %w", cfg.Storage.Path, err)
	}
	if err := f.Sync(); err != nil {
		return res, fmt.Errorf("bridge: backup: %w", err)
	}
	if err := f.Close(); err != nil {
		return res, fmt.Errorf("bridge: backup: %w", err)
	}
	if res.Stats, err = kv.VerifySnapshot(tmp); err != nil {
		return res, fmt.Errorf("bridge: backup: the copy does not verify: %w", err)
	}
	// Restoring is a backup of the backup file onto storage.path; never
	// replace a database a daemon has open.
	if kv.InUse(out) {
		return res, fmt.Errorf("bridge: backup: %s is a database in use by a running daemon; stop it first (恢复前先停止服务)", out)
	}
	if err := os.Rename(tmp, out); err != nil {
		return res, fmt.Errorf("bridge: backup: %w", err)
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		_ = d.Sync() // make the rename durable
		_ = d.Close()
	}
	res.Bytes, res.Took = res.Stats.FileBytes, time.Since(start)
	return res, nil
}

// snapshotLive asks the daemon listening on the admin socket at path for a
// snapshot and writes it to w. It returns false, and no error, when no
// daemon listens there.
func snapshotLive(ctx context.Context, path string, w io.Writer) (bool, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("admin socket %s: %w (run backup as root or as the daemon's user)", path, err)
	}
	used := false
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			if used {
				return nil, errors.New("admin socket: one request per connection")
			}
			used = true
			return conn, nil
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://wecom-bridge/snapshot", nil)
	if err != nil {
		return true, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return true, fmt.Errorf("admin socket %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return true, fmt.Errorf("admin socket %s: %s: %s", path, resp.Status, msg)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return true, fmt.Errorf("admin socket %s: the copy broke off: %w", path, err)
	}
	return true, nil
}
