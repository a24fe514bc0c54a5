package demo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/wecom-bridge/wecom-bridge/llm"
)

// Defaults for Config.
const (
	// DefaultDelay is the pause after each delta: the whole answer takes
	// about three seconds, slow enough to see it arrive in pieces.
	DefaultDelay = 25 * time.Millisecond
	// DefaultDeltaRunes is how many characters one delta carries.
	DefaultDeltaRunes = 6
)

// Label starts every demo answer, so nobody takes it for a model's.
const Label = "【演示回答 · Demo answer】"

// Config tunes a Backend. Zero values take the defaults.
type Config struct {
	// Delay is the pause after each delta; 0 means DefaultDelay, negative
	// means no pause.
	Delay time.Duration
	// DeltaRunes is how many characters (runes) one delta carries; 0 means
	// DefaultDeltaRunes.
	DeltaRunes int
}

// Backend is the demo model. It is safe for concurrent use.
type Backend struct {
	delay time.Duration
	runes int
	count atomic.Int64 // answers started, for Answer's serial number
}

var _ llm.Backend = (*Backend)(nil)

// New returns the demo model.
func New(cfg Config) (*Backend, error) {
	if cfg.DeltaRunes < 0 {
		return nil, errors.New("demo: DeltaRunes must not be negative")
	}
	if cfg.Delay == 0 {
		cfg.Delay = DefaultDelay
	}
	if cfg.DeltaRunes == 0 {
		cfg.DeltaRunes = DefaultDeltaRunes
	}
	return &Backend{delay: max(cfg.Delay, 0), runes: cfg.DeltaRunes}, nil
}

// Answer returns the n-th answer of a Backend, to req.
//
// Every paragraph group that can become one WeCom message carries n, the
// answer's serial number: WeCom's duplicate check (which the bridge enables
// for answer pieces) silently drops a message equal to one sent in the last
// minutes, so two answers of a fixed text would lose their pieces.
func Answer(req llm.Request, n int64) string {
	q := strings.Join(strings.Fields(req.Query), " ")
	return strings.NewReplacer("{label}", Label, "{q}", q, "{turn}", fmt.Sprint(len(req.History)+1),
		"{n}", fmt.Sprint(n)).Replace(answerTemplate)
}

// answerTemplate: {label}, the question {q}, its place in the conversation
// {turn} and the answer's serial number {n}.
const answerTemplate = `{label}（#{n}）这是 wecom-bridge 内置的**演示模型**，不是真实的大模型；它不理解问题，只复述问题并给出一段固定的示例内容。This is the built-in demo model, not a real LLM.

你的问题是：「{q}」（演示回答 #{n}，本次对话的第 {turn} 个问题；发送 /new 开始新对话后会从 1 重新计数。）

这条回答走的是真实的处理链路：企业微信把你的消息加密后回调到本服务，服务验签、解密，把问题写入 bbolt 数据库后立即应答，再由后台工作线程调用模型，边生成边按段落切分，通过企业微信的发送消息接口一条条发给你。

## 你会看到什么（#{n}）

- 回答是**流式**生成的：模型每隔几十毫秒输出几个字；
- 服务按段落把回答切成几条消息，第一条尽早发出，后面的更长；
- 每条消息都不超过企业微信 2048 字节的上限；
- 所有问答都保存在本地数据库里，可以在历史记录页查看和搜索。

## 演示模型与真实模型（#{n}）

| 项目 | 演示模型 | 真实模型 |
| --- | --- | --- |
| 需要密钥 | 否 | 是（API Key） |
| 回答内容 | 固定示例 | 由模型生成 |
| 怎样启用 | 默认 | 设置 OPENAI_* 或 DIFY_* 环境变量 |

## 下一步（#{n}）

1. 发送 /new 开始新对话，发送 /help 查看帮助；
2. 在浏览器里打开终端上显示的历史记录页地址，用模拟的企业微信登录；
3. 设置 OPENAI_BASE_URL、OPENAI_API_KEY 和 OPENAI_MODEL（或 DIFY_BASE_URL 和 DIFY_API_KEY）后重新运行，就会换成真实模型。

（演示回答 #{n} 结束。End of demo answer #{n}.）`

// Stream streams Answer(req, n), n counting this Backend's answers from 1, in deltas of Config.DeltaRunes characters,
// pausing Config.Delay after each. It follows llm.Backend's contract on
// errors: before the first delta a nil Result, after it the partial answer.
func (b *Backend) Stream(ctx context.Context, req llm.Request, emit func(llm.Delta) error) (*llm.Result, error) {
	if req.User == "" || strings.TrimSpace(req.Query) == "" {
		return nil, errors.New("demo: Request.User and Request.Query are required")
	}
	answer := Answer(req, b.count.Add(1))
	var t *time.Timer
	if b.delay > 0 {
		t = time.NewTimer(b.delay)
		t.Stop()
		defer t.Stop()
	}
	sent := 0
	partial := func(err error) (*llm.Result, error) {
		if sent == 0 {
			return nil, err
		}
		return &llm.Result{Answer: answer[:sent]}, err
	}
	for sent < len(answer) {
		if err := ctx.Err(); err != nil {
			return partial(fmt.Errorf("demo: %w", err))
		}
		end := sent
		for n := 0; n < b.runes && end < len(answer); n++ {
			_, size := utf8.DecodeRuneInString(answer[end:])
			end += size
		}
		if err := emit(llm.Delta{Text: answer[sent:end]}); err != nil {
			return partial(fmt.Errorf("demo: %w", err))
		}
		sent = end
		if t != nil && sent < len(answer) {
			t.Reset(b.delay)
			select {
			case <-ctx.Done():
				return partial(fmt.Errorf("demo: %w", ctx.Err()))
			case <-t.C:
			}
		}
	}
	return &llm.Result{Answer: answer}, nil
}
