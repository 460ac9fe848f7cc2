package devenv

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
)

// StartRedis starts an embedded Redis-protocol server (miniredis) on
// 127.0.0.1: on preferredPort when free, else on a random port
// (preferredPort <= 0: always random). It returns the server's host:port
// and a stop func that closes it.
//
// Keys expire in real time, as in Redis: TTLs run on the wall clock
// (miniredis' ClockTTL), where plain miniredis only expires keys on
// FastForward. Lua scripts (EVAL, EVALSHA) work. Data lives in memory only
// and is gone after stop.
//
// ctx bounds the start only; the server runs until stop.
func StartRedis(ctx context.Context, preferredPort int) (addr string, stop func(), err error) {
	if err := ctx.Err(); err != nil {
		return "", nil, fmt.Errorf("devenv: redis: %w", err)
	}
	m := miniredis.NewMiniRedis()
	m.ClockTTL(true)
	err = fmt.Errorf("no preferred port")
	if preferredPort > 0 {
		err = m.StartAddr(fmt.Sprintf("127.0.0.1:%d", preferredPort))
	}
	if err != nil {
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return "", nil, fmt.Errorf("devenv: redis: %w", err)
		}
	}
	return m.Addr(), m.Close, nil
}
