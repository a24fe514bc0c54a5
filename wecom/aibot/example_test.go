package aibot_test

import (
	"context"
	"log/slog"
	"os"

	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
)

// A bot that answers every text in one streamed bubble. A real handler
// records the callback durably and answers from a worker; answering inline
// is fine here because the Handler runs on its own goroutine.
func ExampleClient() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var c *aibot.Client
	c, err := aibot.New(aibot.Config{Name: "kbbot", BotID: "aibXXXXXXXX", Secret: os.Getenv("KBBOT_SECRET")}, aibot.Deps{
		Log: log,
		Handler: func(ctx context.Context, cb *aibot.Callback) {
			if cb.Message.MsgType != aibot.MsgText {
				return
			}
			s := c.NewStream(ctx, cb.ReqID, "stream-"+cb.Message.MsgID, "")
			_ = s.Update("正在思考…")
			if err := s.Finish(ctx, "你问的是："+cb.Message.Question()); err != nil {
				// 846605/846608: continue where the user stopped seeing.
				_ = c.SendMarkdown(ctx, cb.Message.ChatKey(), "（续）")
			}
		},
	})
	if err != nil {
		log.Error("bad bot config", "err", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a daemon cancels on SIGTERM instead
	_ = c.Run(ctx)
}
