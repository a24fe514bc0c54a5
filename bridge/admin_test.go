package bridge

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/wecom-bridge/wecom-bridge/kv"
)

func adminStore(t *testing.T, dir string) *kv.Store {
	t.Helper()
	s, err := kv.Open(filepath.Join(dir, "bridge.db"), kv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, _, err := s.Accept(kv.Question{App: "helpdesk", User: "zhangsan", DedupKey: fmt.Sprintf("m:%d", i), Kind: kv.KindQuestion, Text: "问题"}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// The admin socket is owner-only, replaces a socket left by a crashed run,
// refuses to replace anything else, and serves a snapshot that Backup turns
// into a verified file; once the daemon is gone Backup copies the file
// itself.
func TestAdminSocketAndBackup(t *testing.T) {
	dir := t.TempDir()
	store := adminStore(t, dir)
	cfg := &Config{Storage: StorageConfig{Path: store.Path()}}
	sock := AdminSocketPath(cfg)

	// A socket left behind by a killed daemon.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	log := slog.New(slog.DiscardHandler)
	a, err := newAdmin(sock, store, log)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode %v, want a socket with 0600", fi.Mode())
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".admin-*")); len(leftovers) > 0 {
		t.Fatalf("temporary directory left: %v", leftovers)
	}

	out := filepath.Join(t.TempDir(), "backup.db")
	res, err := Backup(context.Background(), cfg, out)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Live || res.Stats.PendingJobs != 20 || res.Stats.HistoryEntries != 20 {
		t.Fatalf("live backup: %+v", res)
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() != res.Bytes || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v (result %d bytes)", fi, err, res.Bytes)
	}

	// Restoring onto the database of a running daemon is refused.
	if _, err := Backup(context.Background(), &Config{Storage: StorageConfig{Path: out}}, store.Path()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("restore onto the live database: %v", err)
	}
	a.close(context.Background())
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket still there after close: %v", err)
	}
	// Daemon still holding the file but no socket: Backup must not copy
	// the live file behind its back.
	if _, err := Backup(context.Background(), cfg, out); err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Fatalf("backup of a locked database without a socket: %v", err)
	}
	if _, _, err := store.Accept(kv.Question{App: "helpdesk", User: "lisi", DedupKey: "m:x", Kind: kv.KindQuestion, Text: "再问"}); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	res, err = Backup(context.Background(), cfg, out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Live || res.Stats.PendingJobs != 21 {
		t.Fatalf("stopped backup: %+v", res)
	}
	if tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".backup.db.tmp-*")); len(tmps) > 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}

	// Something that is not a socket at the socket's path is not removed.
	if err := os.WriteFile(sock, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newAdmin(sock, store, log); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("newAdmin over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(sock); string(b) != "keep me" {
		t.Fatal("the file in the way was replaced")
	}
}

// Another local user cannot connect to the admin socket. Only root can
// switch users, so as another user the test checks what it can: that the
// socket's mode leaves everyone else out.
func TestAdminSocketRefusesOtherUsers(t *testing.T) {
	dir := t.TempDir()
	// Open the directory to everyone, so that only the socket's own mode
	// stands in the way (the state directory is 0700 on top of it).
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	store := adminStore(t, dir)
	defer store.Close()
	sock := AdminSocketPath(&Config{Storage: StorageConfig{Path: store.Path()}})
	a, err := newAdmin(sock, store, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close(context.Background())
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("admin socket mode %v %v: group or others have access", fi.Mode(), err)
	}
	if os.Getuid() != 0 {
		t.Logf("not root: could not try the socket as another user; its mode is %v", fi.Mode().Perm())
		return
	}
	// A copy of the test binary, as nobody, tries to connect.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(dir, "helper.test")
	if err := os.WriteFile(helper, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(helper, "-test.run=^TestAdminSocketDialHelper$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "ADMIN_DIAL_HELPER="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "dial refused: ") || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
}

// TestAdminSocketDialHelper is TestAdminSocketRefusesOtherUsers's other
// user: run with ADMIN_DIAL_HELPER set, it dials that socket and reports.
func TestAdminSocketDialHelper(t *testing.T) {
	sock := os.Getenv("ADMIN_DIAL_HELPER")
	if sock == "" {
		return // only meaningful as the helper process
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Printf("dial refused: %v\n", err)
		return
	}
	c.Close()
	t.Fatalf("uid %d connected to the admin socket", os.Getuid())
}
