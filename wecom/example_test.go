package wecom_test

import (
	"context"
	"fmt"
	"time"

	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/wecomtest"
)

// The client makes one attempt per call; the caller owns the retry loop and
// asks Classify what a failure means.
func ExampleClassify() {
	fake := wecomtest.NewServer(wecomtest.Options{})
	defer fake.Close()
	fake.AddApp("ww1", "secret", 1000002)
	fake.AddUser("lisi")
	fake.FailNext("/cgi-bin/message/send", -1, "system busy", 1)
	c, err := wecom.New(wecom.Config{CorpID: "ww1", Secret: "secret", AgentID: 1000002, APIBase: fake.URL()})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The duplicate check makes a resend after a lost answer harmless.
	m := wecom.OutMessage{ToUser: "lisi", Content: "你好", EnableDuplicateCheck: true}
	for attempt := 0; ; attempt++ {
		_, err := c.Send(ctx, m)
		if err == nil {
			fmt.Println("delivered on attempt", attempt+1)
			return
		}
		r := wecom.Classify(err)
		fmt.Println("failed:", r.Class)
		if !r.Heal {
			return
		}
		select {
		case <-time.After(r.Backoff(attempt)):
		case <-ctx.Done():
			return
		}
	}
	// Output:
	// failed: transient
	// delivered on attempt 2
}
