package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Persistence is what a Redis server keeps across a restart, as CONFIG GET
// reports it.
type Persistence struct {
	AOF bool   // appendonly yes
	RDB string // the snapshot schedule ("save"), "" when snapshots are off
}

// Enabled reports whether the server keeps any data across a restart.
func (p Persistence) Enabled() bool { return p.AOF || p.RDB != "" }

// ErrConfigUnavailable is wrapped by CheckPersistence's errors when the
// server does not let the client read its configuration (an ACL without
// CONFIG, a managed Redis that renames or blocks it, a Redis-protocol server
// without it).
var ErrConfigUnavailable = errors.New("redisstore: the server's configuration cannot be read")

// ConfigReader is the part of a go-redis client CheckPersistence uses.
type ConfigReader interface {
	ConfigGet(ctx context.Context, parameter string) *redis.MapStringStringCmd
}

// CheckPersistence asks the server (with CONFIG GET appendonly and CONFIG GET
// save) whether it persists its data. Without persistence a restart loses
// every lock, fence counter, run record and watermark: the store notices it
// under live runs (see the package comment), but the watermarks are gone and
// the next since=auto syncs are full ones. On Redis Cluster it asks one node.
// Errors: ErrConfigUnavailable (wrapping the server's answer) when CONFIG is
// refused or unknown, or a wrapped connection error.
func CheckPersistence(ctx context.Context, c ConfigReader) (Persistence, error) {
	aof, err := configValue(ctx, c, "appendonly")
	if err != nil {
		return Persistence{}, err
	}
	save, err := configValue(ctx, c, "save")
	if err != nil {
		return Persistence{}, err
	}
	return Persistence{AOF: strings.EqualFold(aof, "yes"), RDB: strings.TrimSpace(save)}, nil
}

func configValue(ctx context.Context, c ConfigReader, name string) (string, error) {
	m, err := c.ConfigGet(ctx, name).Result()
	var rerr redis.Error
	switch {
	case errors.As(err, &rerr):
		// The server answered with an error: NOPERM, unknown command, ...
		return "", fmt.Errorf("%w: CONFIG GET %s: %v", ErrConfigUnavailable, name, err)
	case err != nil:
		return "", fmt.Errorf("redisstore: CONFIG GET %s: %w", name, err)
	}
	v, ok := m[name]
	if !ok {
		return "", fmt.Errorf("%w: CONFIG GET %s: no such parameter", ErrConfigUnavailable, name)
	}
	return v, nil
}
