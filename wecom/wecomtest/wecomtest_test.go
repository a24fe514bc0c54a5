package wecomtest_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

// TestServerWorksLikeHTTPTest: NewServer needs no error check and the
// server answers a real client, which sees the emulator's drops.
func TestServerWorksLikeHTTPTest(t *testing.T) {
	s := wecomtest.NewServer(wecomtest.Options{})
	t.Cleanup(s.Close)
	s.AddApp("ww1", "sec", 1000002)
	s.AddUser("lisi")
	c, err := wecom.New(wecom.Config{CorpID: "ww1", Secret: "sec", AgentID: 1000002, APIBase: s.URL()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := wecom.OutMessage{ToUser: "lisi", Content: "hi", EnableDuplicateCheck: true, DuplicateCheckInterval: time.Minute}
	for range 2 {
		if _, err := c.Send(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sent, err := s.WaitSent(ctx, 1)
	if err != nil || len(sent) != 1 || sent[0].Content != "hi" {
		t.Fatalf("sent %+v, %v", sent, err)
	}
	if d := s.Dropped(); len(d) != 1 || d[0].Drop != wecomtest.DropDuplicate {
		t.Fatalf("dropped %+v", d)
	}
}

// TestNoTestingImport: the fake itself stays free of package testing.
func TestNoTestingImport(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "testing" || strings.HasSuffix(dep, "/httptest") {
			t.Fatalf("wecomtest depends on %s", dep)
		}
	}
}
