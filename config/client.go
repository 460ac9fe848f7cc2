package config

import (
	"reflect"
)

// Client is the configuration of the client commands (request, status,
// events, replay): how to reach NATS and the stream, and Redis. It is read
// from the same file and variables as Config, but only these parts are
// validated: a crontab line that sets the seed script's variables, or a
// service's file with a target the client cannot check (its token file
// mounted only in the service, say), never stops a client.
type Client struct {
	NATS  NATSConfig
	Redis RedisConfig
	// RedisSet reports whether Redis was configured (the file's redis
	// section, or a REDIS_URL / PATHLING_SYNC_REDIS_* variable), rather
	// than left at its default.
	RedisSet bool
	// Targets maps the targets of the file and the environment to their
	// Pathling URL ("" when that is not set), for display only.
	Targets map[string]string
}

// LoadClient reads what the client commands use from the YAML file at path
// (none when path is "") and the environment (nil: none), as Load does, and
// validates only that: the NATS connection, the stream's name and subject
// prefix, and the Redis connection. Targets, chains and the service's
// settings are read for display and never rejected: validating them is the
// service's job.
//
// Every error matches ErrInvalid and names the key or variable at fault;
// none contains a secret.
func LoadClient(path string, env func(string) string) (*Client, error) {
	if env == nil {
		env = func(string) string { return "" }
	}
	cfg, err := readFile(path)
	if err != nil {
		return nil, err
	}
	redisInFile := !reflect.DeepEqual(cfg.Redis, Default().Redis)
	// The targets' names and Pathling URLs, for status. Their problems are
	// the service's to report (a seed variable alone creates a target
	// "default" without a Pathling URL).
	_ = applyEnv(cfg, env)
	// What a client uses, again, for its errors: the same values.
	var errs Errors
	applyStruct(reflect.ValueOf(&cfg.NATS).Elem(), EnvPrefix+"NATS_", env, &errs)
	redisInEnv := applyStruct(reflect.ValueOf(&cfg.Redis).Elem(), EnvPrefix+"REDIS_", env, &errs)
	if len(errs) > 0 {
		return nil, errs
	}
	if errs := cfg.readConnectionFiles(); len(errs) > 0 {
		return nil, errs
	}
	cfg.NATS.validateAddress(&errs)
	cfg.Redis.validateConnection(&errs)
	if len(errs) > 0 {
		return nil, errs
	}
	c := &Client{NATS: cfg.NATS, Redis: cfg.Redis, RedisSet: redisInFile || redisInEnv, Targets: map[string]string{}}
	for name, t := range cfg.Targets {
		c.Targets[name] = t.Pathling.URL
	}
	return c, nil
}
