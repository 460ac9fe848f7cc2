package redisstore

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// luaScript is a Lua script run as redis.Script.Run runs one (EVALSHA, then
// EVAL after a NOSCRIPT): the caller builds the whole command in one slice
// (call), where Script.Run takes the keys and arguments in two and go-redis
// copies them into a third, boxing the command's name, the hash and every
// key once more. Every script but record_outcome.lua (sent in pipelines, as
// a redis.Script) runs so.
type luaScript struct {
	sha, src any // boxed once, shared by every call
}

func newLuaScript(src string) *luaScript {
	h := sha1.Sum([]byte(src))
	return &luaScript{sha: hex.EncodeToString(h[:]), src: src}
}

// call returns the head of a command of nkeys keys and nargs arguments:
// append the keys, then the arguments, and hand it to run.
func (s *luaScript) call(nkeys, nargs int) []any {
	cmd := make([]any, 3, 3+nkeys+nargs)
	cmd[0], cmd[1], cmd[2] = "evalsha", s.sha, nkeys
	return cmd
}

// run sends cmd (from call) in b's next batch, and the script's source
// instead of its hash when Redis does not know it (a restart, SCRIPT FLUSH).
// go-redis routes EVALSHA by its first key in a cluster, as it does
// Script.Run's. When ctx ends first, run returns ctx's error and the command
// may still be sent (see scriptBatcher.do).
func (s *luaScript) run(ctx context.Context, b *scriptBatcher, cmd []any) *redis.Cmd {
	r := b.do(ctx, cmd)
	if err := r.Err(); err != nil && (redis.HasErrorPrefix(err, "NOSCRIPT") || errors.Is(err, redis.ErrNoScript)) {
		// This entry alone goes again, on its own: a cache loss is rare, and
		// the other entries of its batch did not need the source.
		cmd[0], cmd[1] = "eval", s.src
		r = b.c.Do(ctx, cmd...)
	}
	return r
}

// Concurrent script calls share writes: a call joins a pending list, and the
// first caller to find no flush running sends it, alone as one command as
// before, or with whatever else is pending as one pipeline. Under a flood of
// syncs that is one write and one read syscall per batch instead of per
// call, in the service and in Redis; an idle call waits for nothing.
const (
	// maxScriptFlushes bounds the batches in flight at once (each holds a
	// connection). One did better than two or four under a flood of syncs
	// (BenchmarkFastSyncConcurrent): bigger batches, fewer syscalls, and
	// Redis runs the scripts one at a time anyway.
	maxScriptFlushes = 1
	// maxScriptBatch bounds one pipeline.
	maxScriptBatch = 256
	// scriptFlushTimeout bounds one batch's round trip, which serves many
	// callers and so does not end with any one's context: go-redis' default
	// read and write timeouts (3 s), which bound each I/O of the batch anyway.
	scriptFlushTimeout = 3 * time.Second
)

// scriptBatcher sends the script calls of one Store (luaScript.run).
type scriptBatcher struct {
	c       RedisClient
	mu      sync.Mutex
	pending []*scriptCall
	flushes int       // batches in flight, at most maxScriptFlushes
	calls   sync.Pool // *scriptCall, reused once answered
}

// scriptCall is one command of a batch; res is set before done receives.
type scriptCall struct {
	cmd  []any
	res  *redis.Cmd
	done chan struct{} // buffered: the flush never waits for the caller
}

// do sends cmd and returns its result, or ctx's error when ctx ends before
// the answer: the command may still run, the same unknown outcome as a
// timeout on a lone command (the fenced scripts and the handlers' retries
// cover both). cmd and what it refers to (a pooled record buffer) stay in use
// until the batch is written, so a caller given ctx's error must not reuse
// them (Store.recycle).
func (b *scriptBatcher) do(ctx context.Context, cmd []any) *redis.Cmd {
	call, _ := b.calls.Get().(*scriptCall)
	if call == nil {
		call = &scriptCall{done: make(chan struct{}, 1)}
	}
	call.cmd = cmd
	b.mu.Lock()
	b.pending = append(b.pending, call)
	var batch []*scriptCall
	if b.flushes < maxScriptFlushes {
		b.flushes++
		batch = b.take()
	}
	b.mu.Unlock()
	if len(batch) == 1 && batch[0] == call {
		// Alone: sent at once under the caller's own context, as before.
		res := b.c.Do(ctx, cmd...)
		b.mu.Lock()
		if len(b.pending) > 0 {
			go b.flush(context.WithoutCancel(ctx), b.take())
		} else {
			b.flushes--
			if b.pending == nil {
				// The next lone call appends to batch's array, no longer
				// used: idle calls allocate no list.
				b.pending = batch[:0]
			}
		}
		b.mu.Unlock()
		b.release(call)
		return res
	}
	if batch != nil {
		// The batch serves others too: it runs in its own goroutine, so
		// that this caller can still stop waiting at its context's end.
		go b.flush(context.WithoutCancel(ctx), batch)
	}
	select {
	case <-call.done:
		res := call.res
		b.release(call)
		return res
	case <-ctx.Done():
		// call is left to its batch (and the garbage collector).
		res := redis.NewCmd(ctx, cmd...)
		res.SetErr(ctx.Err())
		return res
	}
}

func (b *scriptBatcher) release(call *scriptCall) {
	call.cmd, call.res = nil, nil
	b.calls.Put(call)
}

// take removes up to maxScriptBatch pending calls; b.mu is held.
func (b *scriptBatcher) take() []*scriptCall {
	n := min(len(b.pending), maxScriptBatch)
	if n == 0 {
		return nil
	}
	batch := b.pending[:n:n]
	b.pending = b.pending[n:]
	if len(b.pending) == 0 {
		b.pending = nil
	}
	return batch
}

// flush sends batch, then what became pending meanwhile, until nothing is;
// it holds one of b.flushes.
func (b *scriptBatcher) flush(ctx context.Context, batch []*scriptCall) {
	for len(batch) > 0 {
		b.send(ctx, batch)
		b.mu.Lock()
		batch = b.take()
		if batch == nil {
			b.flushes--
		}
		b.mu.Unlock()
	}
}

// send runs batch as one command or one pipeline and answers every caller.
func (b *scriptBatcher) send(ctx context.Context, batch []*scriptCall) {
	ctx, cancel := context.WithTimeout(ctx, scriptFlushTimeout)
	defer cancel()
	if len(batch) == 1 {
		batch[0].res = b.c.Do(ctx, batch[0].cmd...)
	} else {
		pipe := b.c.Pipeline()
		for _, call := range batch {
			call.res = pipe.Do(ctx, call.cmd...)
		}
		_, _ = pipe.Exec(ctx) // every command carries its own error
	}
	for _, call := range batch {
		call.done <- struct{}{}
	}
}

// appendKeys appends the keys base+suffix, built in one allocation.
func appendKeys(cmd []any, base string, suffixes ...string) []any {
	n := 0
	for _, s := range suffixes {
		n += len(base) + len(s)
	}
	var sb strings.Builder
	sb.Grow(n)
	for _, s := range suffixes {
		sb.WriteString(base)
		sb.WriteString(s)
	}
	all, at := sb.String(), 0
	for _, s := range suffixes {
		end := at + len(base) + len(s)
		cmd = append(cmd, all[at:end])
		at = end
	}
	return cmd
}
