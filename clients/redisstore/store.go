// Package redisstore keeps run records, per-target locks with fencing tokens,
// per-target request queues and watermarks in Redis (service contract §3, §5).
//
// Every write that must not come from a stale driver (run records,
// watermarks, lock renewal and release) is one Lua script that compares the
// lease's fencing token with the lock's, so a process that wakes after its lock
// expired cannot overwrite the work of the new holder (Kleppmann, 2016).
//
// Keys, all under the prefix (default "pathling-sync:") and the target's hash
// tag, so that every script touches a single Redis Cluster slot:
//
//	<prefix>{<target>}:lock            hash  request, token; PX = lease TTL
//	<prefix>{<target>}:fence           int   INCR counter of fencing tokens, never expires
//	<prefix>{<target>}:run:<request>   hash  token, run (the Run as JSON), done ("1": terminal),
//	                                         since (a new since "auto" run's, unix ms); PX = retention
//	<prefix>{<target>}:runs            zset  request ids with records, scored by expiry (unix ms)
//	<prefix>{<target>}:wm              hash  watermark key -> unix ms
//	<prefix>{<target>}:queue           zset  queued request ids, scored by Queue.Seq
//	<prefix>{<target>}:queue:deadline  hash  queued request id -> ticket deadline (unix ms, 0 = none)
//	<prefix>{<target>}:jobs            zset  Pathling status URLs -> earliest kick-off (unix ms); bounded
//	<prefix>{<target>}:jobs:undeleted  zset  status URLs whose DELETE failed -> when (unix ms); bounded
//
// Redis must run with maxmemory-policy noeviction and persistence: an evicted
// lock or fence counter breaks the guarantees above. CheckPersistence tells
// at start-up whether it does.
//
// # When Redis loses its data anyway
//
// A restart without persistence, a FLUSHALL or a failover to an empty node
// drops the locks, the fence counters and the run records while drivers are
// live. Two rules keep one import per target across that:
//
//   - Tokens never repeat. A missing fence counter is seeded from Redis'
//     clock (TIME, in microseconds) before its first INCR, so the tokens
//     granted after a data loss are greater than every token granted before
//     it (a counter gains one per grant; the clock gains a million a second).
//     No epoch travels beside the token: the token alone orders every lease
//     ever granted, which keeps every comparison a single number. It relies
//     on Redis' clock not going back by more than the grants since.
//   - A live driver notices. A renewal or fenced write that finds its lock
//     gone, or held by another request while its own run record is gone,
//     fails with handlers.ErrLockVanished rather than handlers.ErrLockLost.
//     The driver then takes the lock again (Reacquire), which refuses when
//     another driver of the request holds the lock or wrote the run record
//     under another token, and answers with the holder when another request
//     holds the target. A record written under a later token than the
//     writer's lease is never overwritten.
package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/clock"
)

// Defaults of the options.
const (
	DefaultPrefix    = "pathling-sync:"
	DefaultRetention = 7 * 24 * time.Hour
)

// ErrInvalidArgument is wrapped by errors about arguments the store cannot
// use (an empty target or request id, a TTL under a millisecond, a record
// that does not belong to the lease).
var ErrInvalidArgument = errors.New("redisstore: invalid argument")

// RedisClient is the part of a go-redis client the store uses. A
// redis.UniversalClient (single node, Sentinel or Cluster) satisfies it.
type RedisClient interface {
	redis.Scripter
	HGet(ctx context.Context, key, field string) *redis.StringCmd
	HMGet(ctx context.Context, key string, fields ...string) *redis.SliceCmd
	HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd
	ZRange(ctx context.Context, key string, start, stop int64) *redis.StringSliceCmd
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	TxPipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	Do(ctx context.Context, args ...any) *redis.Cmd // a script's command built whole (luaScript)
	Pipeline() redis.Pipeliner                      // script calls' batches (scriptBatcher)
}

var _ RedisClient = (redis.UniversalClient)(nil)

var (
	//go:embed lua/acquire.lua
	acquireLua string
	//go:embed lua/renew.lua
	renewLua string
	//go:embed lua/release.lua
	releaseLua string
	//go:embed lua/release_finished.lua
	releaseFinishedLua string
	//go:embed lua/fence_run.lua
	fenceRunLua string
	//go:embed lua/write_run.lua
	writeRunLua string
	//go:embed lua/save_run.lua
	saveRunLua string
	//go:embed lua/record_outcome.lua
	recordOutcomeLua string
	//go:embed lua/commit_watermark.lua
	commitWatermarkLua string
	//go:embed lua/record_job.lua
	recordJobLua string
	//go:embed lua/reacquire.lua
	reacquireLua string
	//go:embed lua/begin.lua
	beginLua string
	//go:embed lua/kicked_off.lua
	kickedOffLua string
	//go:embed lua/finish.lua
	finishLua string
	//go:embed lua/release_run.lua
	releaseRunLua string

	scriptAcquire         = newLuaScript(acquireLua)
	scriptRenew           = newLuaScript(renewLua)
	scriptRelease         = newLuaScript(releaseLua)
	scriptReleaseFinished = newLuaScript(releaseFinishedLua)
	scriptSaveRun         = newLuaScript(runWriteFunctions + saveRunLua)
	scriptCommitWatermark = newLuaScript(commitWatermarkLua)
	scriptRecordOutcome   = redis.NewScript(recordOutcomeLua)
	scriptRecordJob       = newLuaScript(recordJobLua)
	scriptReacquire       = newLuaScript(reacquireLua)

	// The scripts of a run's life run the one-operation scripts above as
	// functions of their own KEYS and ARGV (asFunction), so that each
	// operation has one definition.
	scriptBegin     = newLuaScript(asFunction("acquire", acquireLua) + beginLua)
	scriptKickedOff = newLuaScript(asFunction("recordJob", recordJobLua) + runWriteFunctions +
		asFunction("saveRun", saveRunLua) + kickedOffLua)
	scriptFinish = newLuaScript(asFunction("recordJob", recordJobLua) + runWriteFunctions +
		asFunction("recordDuration", recordDurationLua) + finishLua)
	scriptReleaseRun = newLuaScript(releaseRunLua)
)

// runWriteFunctions are the fence and the write of a run record, for the
// scripts that write one (save_run.lua, finish.lua).
var runWriteFunctions = asFunction("fenceRun", fenceRunLua) + asFunction("writeRun", writeRunLua)

// asFunction wraps a script as a local Lua function of (KEYS, ARGV): the
// parameters shadow the globals, so the body runs unchanged on whatever keys
// and arguments the including script hands it, and its returns become the
// function's.
func asFunction(name, script string) string {
	return "local function " + name + "(KEYS, ARGV)\n" + script + "\nend\n"
}

// Store implements the store ports of handlers (Locker, LockRecovery, Runs,
// Watermarks; Jobs in jobs.go) on Redis. It is safe for concurrent use.
type Store struct {
	client      RedisClient
	scripts     *scriptBatcher // every luaScript call goes through it (script.go)
	prefix      string
	retention   time.Duration
	clock       clock.Clock
	outcomes    *outcomeBatcher // RecordOutcome's batches (outcomes.go)
	released    string          // the release channel (releasedChannel), built once
	retentionMs any             // the retention in ms (int64), made an interface once (savedRecord)
	bufs        sync.Pool       // *[]byte: run records' JSON (runs.go: record, recycle)
}

var (
	_ handlers.Locker       = (*Store)(nil)
	_ handlers.LockRecovery = (*Store)(nil)
	_ handlers.Runs         = (*Store)(nil)
	_ handlers.Watermarks   = (*Store)(nil)
)

// Option configures a Store.
type Option func(*Store)

// WithPrefix sets the prefix of every key (default "pathling-sync:"). It must
// not contain '{' or '}': the target's hash tag follows it.
func WithPrefix(p string) Option { return func(s *Store) { s.prefix = p } }

// WithRetention sets how long run records live after their last write
// (default 7 days). Zero or less keeps them forever.
func WithRetention(d time.Duration) Option { return func(s *Store) { s.retention = d } }

// WithClock sets the clock used for queue-ticket deadlines and the expiry
// scores of the runs index (default: the wall clock). Lock TTLs run on
// Redis' clock.
func WithClock(c clock.Clock) Option { return func(s *Store) { s.clock = clock.Or(c) } }

// New returns a Store on c.
func New(c RedisClient, opts ...Option) *Store {
	s := &Store{client: c, prefix: DefaultPrefix, retention: DefaultRetention, clock: clock.System{}, outcomes: &outcomeBatcher{}}
	for _, o := range opts {
		o(s)
	}
	s.scripts = &scriptBatcher{c: c}
	s.released = ReleaseChannel(s.prefix)
	s.retentionMs = int64(0)
	if s.retention > 0 {
		s.retentionMs = max(s.retention.Milliseconds(), 1)
	}
	return s
}

// keys of one target; every one carries the {target} hash tag.
type targetKeys struct {
	base string // <prefix>{<target>}:
}

func (s *Store) keys(target string) targetKeys {
	return targetKeys{base: s.prefix + "{" + target + "}:"}
}

// Suffixes of the keys after <prefix>{<target>}:, for appendKeys.
const (
	keyLock           = "lock"
	keyFence          = "fence"
	keyRun            = "run:" // + request id
	keyRuns           = "runs"
	keyWatermarks     = "wm"
	keyQueue          = "queue"
	keyQueueDeadlines = "queue:deadline"
	keyJobs           = "jobs"
	keyUndeletedJobs  = "jobs:undeleted"
)

func (k targetKeys) lock() string              { return k.base + keyLock }
func (k targetKeys) run(request string) string { return k.base + keyRun + request }
func (k targetKeys) runs() string              { return k.base + keyRuns }
func (k targetKeys) watermarks() string        { return k.base + keyWatermarks }
func (k targetKeys) queue() string             { return k.base + keyQueue }
func (k targetKeys) queueDeadlines() string    { return k.base + keyQueueDeadlines }
func (k targetKeys) jobs() string              { return k.base + keyJobs }
func (k targetKeys) undeletedJobs() string     { return k.base + keyUndeletedJobs }

// checkTarget refuses targets that would break the hash tag. Configured
// target names match [A-Za-z0-9_-]{1,64}; this only guards the key layout.
func checkTarget(target string) error {
	if target == "" {
		return fmt.Errorf("%w: empty target", ErrInvalidArgument)
	}
	if strings.ContainsAny(target, "{}") {
		return fmt.Errorf("%w: target %q contains a brace", ErrInvalidArgument, target)
	}
	return nil
}

func checkLease(l handlers.Lease) error {
	if err := checkTarget(l.Target); err != nil {
		return err
	}
	if l.RequestID == "" {
		return fmt.Errorf("%w: lease without request id", ErrInvalidArgument)
	}
	return nil
}

// ttlMillis converts a lease TTL; Redis counts in whole milliseconds.
func ttlMillis(ttl time.Duration) (int64, error) {
	ms := ttl.Milliseconds()
	if ms < 1 {
		return 0, fmt.Errorf("%w: ttl %s under 1ms", ErrInvalidArgument, ttl)
	}
	return ms, nil
}

// scriptReply splits a script's {code, value} array reply.
func scriptReply(v any) (int64, any, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) != 2 {
		return 0, nil, fmt.Errorf("unexpected script reply %T %v", v, v)
	}
	code, ok := arr[0].(int64)
	if !ok {
		return 0, nil, fmt.Errorf("unexpected script reply code %T", arr[0])
	}
	return code, arr[1], nil
}
