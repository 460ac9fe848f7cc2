package redisstore

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// RoundTrips counts the client's round trips to Redis: each command sent on
// its own (a script's EVALSHA, and the EVAL after a NOSCRIPT, are one each)
// and each pipeline or MULTI/EXEC batch is one. The store's script calls
// share pipelines when concurrent (scriptBatcher), so under load a round trip
// carries many calls, of many syncs: it counts writes to Redis, not calls.
// (A Cluster client's pipeline is one here however many nodes it reaches.) Commands run inside scripts
// are not round trips and are not counted: that is what tells a cheap
// one-script step from a chatty one, which Redis' own command counters do
// not. Add it to a client with AddHook; one atomic add per round trip.
type RoundTrips struct {
	n atomic.Int64
}

var _ redis.Hook = (*RoundTrips)(nil)

// Load returns the round trips counted so far.
func (r *RoundTrips) Load() int64 { return r.n.Load() }

// DialHook implements redis.Hook: a dial is not counted.
func (r *RoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook: one command, one round trip.
func (r *RoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook: one batch, one round trip.
func (r *RoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}
