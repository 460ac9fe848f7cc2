package redisstore

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"strings"

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

// run sends cmd (from call), and the script's source instead of its hash
// when Redis does not know it (a restart, SCRIPT FLUSH). go-redis routes
// EVALSHA by its first key in a cluster, as it does Script.Run's.
func (s *luaScript) run(ctx context.Context, c RedisClient, cmd []any) *redis.Cmd {
	r := c.Do(ctx, cmd...)
	if err := r.Err(); err != nil && (redis.HasErrorPrefix(err, "NOSCRIPT") || errors.Is(err, redis.ErrNoScript)) {
		cmd[0], cmd[1] = "eval", s.src
		r = c.Do(ctx, cmd...)
	}
	return r
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
