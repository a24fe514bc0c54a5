package wecom

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Class groups failed calls by what the caller should do about them.
type Class int

// Failure classes, as Classify reports them.
const (
	// ClassTransient: WeCom was busy (-1), the network failed, WeCom
	// answered HTTP 5xx or 429 or an unreadable body, or an access token
	// was still refused after the client fetched a new one. Back off
	// briefly and try again.
	ClassTransient Class = iota + 1
	// ClassRateLimited: 45009 (接口调用超过限制, WeCom blocks for about a
	// minute), 45033 (接口并发调用超过限制) and other 45xxx except 45002.
	// Wait at least DefaultRateLimitWait.
	ClassRateLimited
	// ClassConfig: something only an admin can fix, e.g. 60020 (trusted IP),
	// 40001 from gettoken (secret), 48002 (API permission), an HTTP 4xx
	// (api_base or a proxy), and every errcode this package does not know. It may heal while the admin
	// works, so retry slowly.
	ClassConfig
	// ClassPermanent: the same request will never succeed: 81013 (no valid
	// recipient), 40003 (invalid userid), 45002 (content too long), 40008
	// (invalid message type), 82001 (recipient outside the app), 301002
	// (token of another app), an invalid argument caught before sending,
	// a partial delivery, and the like.
	ClassPermanent
	// ClassCanceled: the caller's context ended. Nothing to retry with it.
	ClassCanceled
)

// String returns the class name used in logs.
func (c Class) String() string {
	switch c {
	case ClassTransient:
		return "transient"
	case ClassRateLimited:
		return "rate-limited"
	case ClassConfig:
		return "config"
	case ClassPermanent:
		return "permanent"
	case ClassCanceled:
		return "canceled"
	}
	return "none"
}

// Minimum waits suggested by Classify.
const (
	// DefaultRateLimitWait is how long WeCom blocks after 45009: "按分钟
	// 拦截则被屏蔽60秒".
	DefaultRateLimitWait = 60 * time.Second
	// TransientWait is the first back-off step after a transient failure.
	TransientWait = 500 * time.Millisecond
	// ConfigWait is the shortest wait before retrying a configuration
	// problem; WeCom applies a trusted-IP change after about a minute.
	ConfigWait = 15 * time.Second

	maxBackoff = 64 * time.Second
)

// Retry is Classify's advice about a failed call.
type Retry struct {
	// Class is the kind of failure.
	Class Class
	// Heal reports whether the same call may succeed later without a
	// change to the request.
	Heal bool
	// Wait is the minimum time to wait before the next attempt; zero when
	// Heal is false.
	Wait time.Duration
}

// Classify tells whether a failed call of this package may succeed if
// repeated, and how long to wait first. The Client itself never repeats a
// call except once after fetching a new access token, so a caller that
// retries owns the whole policy: it loops, and Classify is the one place
// that knows what an errcode means. A nil err gives the zero Retry.
func Classify(err error) Retry {
	if err == nil {
		return Retry{}
	}
	never := Retry{Class: ClassPermanent}
	var ae *APIError
	var te *temporaryError
	var pe *PartialError
	var se *statusError
	switch {
	case errors.As(err, &ae):
		return classifyCode(ae)
	case errors.As(err, &te), errors.Is(err, ErrMalformed):
		// Below the API: network, HTTP 5xx, an unreadable answer.
		return Retry{Class: ClassTransient, Heal: true, Wait: TransientWait}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return Retry{Class: ClassCanceled}
	case errors.As(err, &pe), errors.Is(err, ErrInvalidConfig), errors.Is(err, ErrTooLarge):
		return never
	case errors.As(err, &se):
		// WeCom answers 200 even for errors: something else answered.
		return Retry{Class: ClassConfig, Heal: true, Wait: ConfigWait}
	}
	// Other failures to reach WeCom (a refused redirect, a bad status
	// line): treat as network trouble.
	return Retry{Class: ClassTransient, Heal: true, Wait: TransientWait}
}

func classifyCode(ae *APIError) Retry {
	switch ae.Code {
	case -1:
		return Retry{Class: ClassTransient, Heal: true, Wait: TransientWait}
	case 45009, 45033:
		return Retry{Class: ClassRateLimited, Heal: true, Wait: DefaultRateLimitWait}
	case 81013, 40003, 45002, 40008, 82001, 301002,
		44004,        // empty content
		47001,        // malformed request
		40029,        // spent or expired OAuth code
		40058, 42052, // recall: bad or expired msgid
		41008, 41009, // missing code, missing userid
		60111,  // unknown userid
		40007,  // media_id unknown or older than three days
		830002: // media too large to fetch without Range
		return Retry{Class: ClassPermanent}
	}
	if IsTokenError(ae) {
		// The client has already fetched a new token and tried again.
		return Retry{Class: ClassTransient, Heal: true, Wait: TransientWait}
	}
	if ae.Code >= 45000 && ae.Code < 46000 {
		return Retry{Class: ClassRateLimited, Heal: true, Wait: DefaultRateLimitWait}
	}
	return Retry{Class: ClassConfig, Heal: true, Wait: ConfigWait}
}

// Backoff returns how long to wait before retry number attempt (0 for the
// first retry): an exponential step from 1 s doubling to 64 s, never less
// than Wait, with jitter that only lengthens it by up to half a step. It
// returns 0 when the failure does not heal.
func (r Retry) Backoff(attempt int) time.Duration {
	if !r.Heal {
		return 0
	}
	step := min(time.Second<<min(max(attempt, 0), 6), maxBackoff)
	var d time.Duration
	switch r.Class {
	case ClassTransient:
		d = max(step/2, r.Wait)
	default:
		d = max(step, r.Wait)
	}
	return d + rand.N(step/2+1)
}
