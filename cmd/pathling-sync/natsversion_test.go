package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// oldNATS speaks just enough of the NATS client protocol (INFO, then PONG to
// each PING) for a client to connect to a server announcing version: no
// nats-server older than the minimum is installed to test against.
func oldNATS(t *testing.T, version string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				fmt.Fprintf(conn, "INFO {\"server_id\":\"old\",\"version\":%q,\"proto\":1,\"headers\":true,\"max_payload\":1048576,\"jetstream\":true}\r\n", version)
				lines := bufio.NewScanner(conn)
				for lines.Scan() {
					if strings.HasPrefix(lines.Text(), "PING") {
						fmt.Fprint(conn, "PONG\r\n")
					}
				}
			}()
		}
	}()
	return "nats://" + ln.Addr().String()
}

// A nats-server below 2.9 is refused at start-up by the service and by the
// client commands, with a message naming the minimum, as a deployment error
// (exit 2) rather than "unreachable" (exit 3).
func TestCommandsRefuseNATSServerBelowMinimum(t *testing.T) {
	env := envFrom(map[string]string{
		"NATS_URL":                 oldNATS(t, "2.8.4"),
		"REDIS_URL":                "redis://127.0.0.1:1/0",
		"PATHLING_URL":             "http://127.0.0.1:1/fhir",
		"SOURCE_EXPORT_URL":        "http://source.test/fhir",
		"PATHLING_SYNC_ADMIN_ADDR": "127.0.0.1:0",
	})
	for _, args := range [][]string{
		{"serve"},
		{"request", "--target", "default", "--wait"},
		{"events"},
		{"replay", "--from-seq", "1", "--dry-run"},
		{"status"},
	} {
		var out testenv.Buffer
		code := run(context.Background(), args, &out, &out, env)
		if code != 2 || !strings.Contains(out.String(), "2.8.4") || !strings.Contains(out.String(), "nats-server 2.9.0 or later") {
			t.Errorf("%s: exit %d, want 2 naming the server's version and the minimum:\n%s", args[0], code, out.String())
		}
	}
}
