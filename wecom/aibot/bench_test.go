package aibot_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
	"github.com/wecom-bridge/wecom-bridge/wecom/emulator"
)

func benchRig(b *testing.B) (*emulator.BotServer, *aibot.Client, chan *aibot.Callback, func()) {
	b.Helper()
	srv, err := emulator.NewBotServer(emulator.BotConfig{Bots: map[string]string{testBot: testSecret}, MaxInFlight: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	url, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cbs := make(chan *aibot.Callback, 1024)
	c, err := aibot.New(aibot.Config{BotID: testBot, Secret: testSecret, URL: url}, aibot.Deps{
		Handler: func(_ context.Context, cb *aibot.Callback) { cbs <- cb },
		Sleep:   func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	if err := c.WaitOnline(ctx); err != nil {
		b.Fatal(err)
	}
	return srv, c, cbs, func() { cancel(); <-done; _ = srv.Close() }
}

// BenchmarkStreamFramesOneReqID measures stream frames per second on one
// req_id, where each frame waits for the previous ack (loopback, no ack
// delay): the client's and the fake's per-frame round trip.
func BenchmarkStreamFramesOneReqID(b *testing.B) {
	srv, c, cbs, stop := benchRig(b)
	defer stop()
	if _, err := srv.PushText(testBot, testUser, "bench"); err != nil {
		b.Fatal(err)
	}
	cb := <-cbs
	ctx := context.Background()
	text := "正在生成回答，内容逐步变长。"
	b.ResetTimer()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		if err := c.RespondStream(ctx, cb.ReqID, "bench-s", text, false, ""); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "frames/s")
}

// BenchmarkStreamFramesParallel measures frames per second with 16 streams
// at once on one connection (16 req_ids, each strictly ack-ordered).
func BenchmarkStreamFramesParallel(b *testing.B) {
	srv, c, cbs, stop := benchRig(b)
	defer stop()
	const streams = 16
	reqs := make([]string, streams)
	for i := range reqs {
		if _, err := srv.PushText(testBot, fmt.Sprint("user", i), "bench"); err != nil {
			b.Fatal(err)
		}
		reqs[i] = (<-cbs).ReqID
	}
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := b.N/streams + 1
	for i := range reqs {
		wg.Go(func() {
			for range per {
				if err := c.RespondStream(ctx, reqs[i], fmt.Sprint("bench-p", i), "内容", false, ""); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(per*streams)/time.Since(start).Seconds(), "frames/s")
}

// BenchmarkReconnectAfterDrop measures the time from a dropped connection
// to a new subscribed one with the back-off wait skipped: dial, subscribe
// and ack on loopback. Add the back-off (1 s ±20 % after the first drop).
func BenchmarkReconnectAfterDrop(b *testing.B) {
	srv, c, _, stop := benchRig(b)
	defer stop()
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		want := srv.Subscribes(testBot) + 1
		srv.Drop(testBot)
		if err := srv.Wait(ctx, func() bool { return srv.Subscribes(testBot) >= want && srv.Connected(testBot) }); err != nil {
			b.Fatal(err)
		}
		if err := c.WaitOnline(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
