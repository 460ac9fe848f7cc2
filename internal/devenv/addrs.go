package devenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// AddrsFile is the name of the addresses file in the data folder.
const AddrsFile = "addrs.json"

// Addrs are the addresses a running `pathling-sync dev` chose, written to
// its data folder so that the other commands (request, status, events,
// replay) find it when NATS_URL and REDIS_URL are unset.
type Addrs struct {
	NATSURL     string `json:"natsUrl"`
	RedisURL    string `json:"redisUrl"`
	PathlingURL string `json:"pathlingUrl"`
	SourceURL   string `json:"sourceUrl"`
	AdminAddr   string `json:"adminAddr"`
	// PID is the dev process, so that a reader can tell a stale file.
	PID int `json:"pid"`
}

// WriteAddrs writes a to <dir>/addrs.json atomically (a temporary file
// renamed over it), creating dir if needed. A reader sees the old file or
// the new one, never a part.
func WriteAddrs(dir string, a Addrs) error {
	data, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return fmt.Errorf("devenv: addrs: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("devenv: addrs: %w", err)
	}
	f, err := os.CreateTemp(dir, AddrsFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("devenv: addrs: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, AddrsFile))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("devenv: addrs: %w", err)
	}
	return nil
}

// ReadAddrs reads <dir>/addrs.json. When there is none (no dev running
// there) the error matches fs.ErrNotExist.
func ReadAddrs(dir string) (Addrs, error) {
	var a Addrs
	data, err := os.ReadFile(filepath.Join(dir, AddrsFile))
	if err != nil {
		return a, fmt.Errorf("devenv: addrs: %w", err)
	}
	if err := json.Unmarshal(data, &a); err != nil {
		return Addrs{}, fmt.Errorf("devenv: addrs: %s: %w", filepath.Join(dir, AddrsFile), err)
	}
	return a, nil
}

// RemoveAddrs removes <dir>/addrs.json; a missing file is not an error.
func RemoveAddrs(dir string) error {
	err := os.Remove(filepath.Join(dir, AddrsFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("devenv: addrs: %w", err)
	}
	return nil
}
