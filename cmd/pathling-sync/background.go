package main

import (
	"context"
	"sync"
)

// startBackground starts the service's background workers besides the
// consumer (schedules, chains); they stop when ctx ends, and Run waits for
// them through wg.
func (s *Service) startBackground(ctx context.Context, wg *sync.WaitGroup) {}
