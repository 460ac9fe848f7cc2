package devenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// natsReadyTimeout bounds the wait for the server to accept connections
// when ctx has no earlier deadline.
const natsReadyTimeout = 10 * time.Second

// StartNATS starts an in-process NATS server with JetStream on 127.0.0.1,
// storing under dir/nats and syncing every write to disk (sync_interval:
// always; a dev machine's data is small). It listens on preferredPort when
// that port is free and on a random port otherwise (preferredPort <= 0:
// always random), and returns the server and its client URL.
//
// ctx bounds the start only: the server runs until the caller calls
// Shutdown (and WaitForShutdown), so that it can outlive a cancelled
// context while the service drains.
func StartNATS(ctx context.Context, dir string, preferredPort int) (*server.Server, string, error) {
	storeDir := filepath.Join(dir, "nats")
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("devenv: nats: %w", err)
	}
	port := server.RANDOM_PORT
	if preferredPort > 0 && portFree(preferredPort) {
		port = preferredPort
	}
	s, err := startNATS(ctx, storeDir, port)
	if err != nil && port != server.RANDOM_PORT && ctx.Err() == nil {
		// Somebody took the port between the check and the bind.
		s, err = startNATS(ctx, storeDir, server.RANDOM_PORT)
	}
	if err != nil {
		return nil, "", err
	}
	return s, s.ClientURL(), nil
}

func startNATS(ctx context.Context, storeDir string, port int) (*server.Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("devenv: nats: %w", err)
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "pathling-sync-dev",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		SyncAlways: true,
		NoLog:      true, // a logger's Fatalf would exit the process on a bind error
		NoSigs:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("devenv: nats: %w", err)
	}
	go s.Start()
	wait := natsReadyTimeout
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl))
	}
	if !s.ReadyForConnections(wait) {
		s.Shutdown()
		s.WaitForShutdown()
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("devenv: nats: %w", err)
		}
		return nil, fmt.Errorf("devenv: nats: %w", errNotReady(port, wait))
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, errors.New("devenv: nats: JetStream did not start (is the data folder writable?)")
	}
	return s, nil
}

func errNotReady(port int, wait time.Duration) error {
	if port == server.RANDOM_PORT {
		return fmt.Errorf("not accepting connections after %s", wait)
	}
	return fmt.Errorf("not accepting connections on 127.0.0.1:%d after %s", port, wait)
}
