// Package devenv starts what `pathling-sync dev` runs in-process instead of
// real infrastructure: a NATS JetStream server and a Redis-protocol server,
// each on its usual port when free and on a random one otherwise, plus the
// small file in the data folder through which the other commands find them.
//
// Everything binds to 127.0.0.1 only.
package devenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
)

// DataDirEnv overrides DefaultDir.
const DataDirEnv = "PATHLING_SYNC_DATA_DIR"

// DefaultDir returns the dev data folder: $PATHLING_SYNC_DATA_DIR when set,
// else ".pathling-sync" (relative to the working directory).
func DefaultDir() string {
	if d := os.Getenv(DataDirEnv); d != "" {
		return d
	}
	return ".pathling-sync"
}

// ListenPreferred listens on TCP addr (host:port, numeric port), or, when
// that fails (typically: the port is taken), on the same host with a port
// chosen by the system. The listener's Addr tells which.
func ListenPreferred(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err == nil {
		return l, nil
	}
	host, port, splitErr := net.SplitHostPort(addr)
	if n, convErr := strconv.Atoi(port); splitErr != nil || convErr != nil || n == 0 {
		// Not a taken port: a random one would not help.
		return nil, fmt.Errorf("devenv: listen %s: %w", addr, err)
	}
	l, err2 := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err2 != nil {
		return nil, fmt.Errorf("devenv: listen %s: %w", addr, errors.Join(err, err2))
	}
	return l, nil
}

// portFree reports whether 127.0.0.1:port can be listened on now. The
// answer can be stale by the time the caller binds: callers fall back to a
// random port when binding fails.
func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}
