package redisstore

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Refusals' records (RecordOutcome) are written in batches: a storm of
// requests for one busy target has hundreds of handlers each waiting to write
// one small record, and one pipeline carries all that are waiting instead of
// one round trip (and one pooled connection) each. A batch is sent as soon as
// the previous one is answered, so a lone refusal waits for nothing.
const (
	// maxOutcomeBatch bounds one pipeline.
	maxOutcomeBatch = 256
	// outcomeBatchTimeout bounds one pipeline's round trip: the callers each
	// stop waiting at their own context's end, the batch goes on for the others.
	outcomeBatchTimeout = 10 * time.Second
)

type outcomeBatcher struct {
	mu       sync.Mutex
	pending  []*outcomeCall
	flushing bool
}

// outcomeCall is one record_outcome.lua call; n and err are set before done
// is closed.
type outcomeCall struct {
	keys []string
	args []any
	n    int64
	err  error
	done chan struct{}
}

// record runs the call in the next batch and waits for its answer, or for
// ctx's end (the call may still be written: the script writes only a request
// without a record, so the caller's retry finds it).
func (b *outcomeBatcher) record(ctx context.Context, c RedisClient, call *outcomeCall) (int64, error) {
	call.done = make(chan struct{})
	b.mu.Lock()
	b.pending = append(b.pending, call)
	start := !b.flushing
	b.flushing = true
	b.mu.Unlock()
	if start {
		go b.flush(context.WithoutCancel(ctx), c)
	}
	select {
	case <-call.done:
		return call.n, call.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// flush sends what is pending, batch after batch, until nothing is.
func (b *outcomeBatcher) flush(ctx context.Context, c RedisClient) {
	for {
		b.mu.Lock()
		n := min(len(b.pending), maxOutcomeBatch)
		if n == 0 {
			b.flushing = false
			b.mu.Unlock()
			return
		}
		batch := b.pending[:n:n]
		b.pending = b.pending[n:]
		if len(b.pending) == 0 {
			b.pending = nil
		}
		b.mu.Unlock()
		b.send(ctx, c, batch)
	}
}

func (b *outcomeBatcher) send(ctx context.Context, c RedisClient, batch []*outcomeCall) {
	ctx, cancel := context.WithTimeout(ctx, outcomeBatchTimeout)
	defer cancel()
	defer func() {
		for _, call := range batch {
			close(call.done)
		}
	}()
	if len(batch) == 1 {
		call := batch[0]
		call.n, call.err = scriptRecordOutcome.Run(ctx, c, call.keys, call.args...).Int64()
		return
	}
	cmds := make([]*redis.Cmd, len(batch))
	_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, call := range batch {
			cmds[i] = scriptRecordOutcome.EvalSha(ctx, p, call.keys, call.args...)
		}
		return nil
	})
	var missing []*outcomeCall // Redis lost its script cache (a restart, SCRIPT FLUSH)
	for i, call := range batch {
		call.n, call.err = cmds[i].Int64()
		if call.err != nil && strings.HasPrefix(call.err.Error(), "NOSCRIPT") {
			missing = append(missing, call)
		}
	}
	if len(missing) == 0 {
		return
	}
	// Load the script once and send those calls again in one pipeline, rather
	// than one EVAL each.
	if err := scriptRecordOutcome.Load(ctx, c).Err(); err != nil {
		for _, call := range missing {
			call.err = err
		}
		return
	}
	cmds = cmds[:len(missing)]
	_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, call := range missing {
			cmds[i] = scriptRecordOutcome.EvalSha(ctx, p, call.keys, call.args...)
		}
		return nil
	})
	for i, call := range missing {
		call.n, call.err = cmds[i].Int64()
	}
}
