package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/pathling-sync/pathling-sync/config"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// The admin listener serves Go's profiles only when admin.pprof is set: by
// default /debug/pprof/ is a 404 like any unknown path.
func TestAdminPProf(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pprof bool
		want  int
	}{
		{"off by default", false, http.StatusNotFound},
		{"on with admin.pprof", true, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mr := miniredis.RunT(t)
			cfg := config.Default()
			cfg.NATS.URL = config.SecretURL(testenv.NATS(t).ClientURL())
			cfg.Redis.URL = config.SecretURL("redis://" + mr.Addr() + "/0")
			cfg.Admin.Addr = "127.0.0.1:0"
			cfg.Admin.PProf = tc.pprof
			cfg.Service.InstanceID = "pprof-test"
			cfg.Service.ShutdownGrace = time.Second
			svc, err := NewService(context.Background(), cfg, newLogger(&testenv.Buffer{}, config.LogConfig{Level: "error"}), WithEnv(envFrom(nil)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- svc.Run(ctx) }()
			t.Cleanup(func() {
				cancel()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Error("service did not stop")
				}
			})
			base := "http://" + svc.AdminAddr()
			// The listener exists since NewService: a request made before Run
			// serves waits in its backlog.
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1"} {
				if code, _ := get(t, base+path); code != tc.want {
					t.Errorf("GET %s: %d, want %d", path, code, tc.want)
				}
			}
		})
	}
}
