package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// ClientTLS returns the TLS client configuration, or nil when no TLS
// setting is given. It reads the CA and certificate files.
func (t TLSConfig) ClientTLS() (*tls.Config, error) {
	if !t.Enabled() {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // opt-in, for tests
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("config: tls: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("config: tls: %s holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("config: tls: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Options returns the nats.go options for authentication and TLS; connect
// with nats.Connect(c.URL.Reveal(), opts...). It reads the NKey seed and the
// TLS files.
func (n NATSConfig) Options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case n.CredsFile != "":
		opts = append(opts, nats.UserCredentials(n.CredsFile))
	case n.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(n.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("config: nats: nkey seed: %w", err)
		}
		opts = append(opts, o)
	case n.User != "":
		opts = append(opts, nats.UserInfo(n.User, n.Password.Reveal()))
	case n.Token != "":
		opts = append(opts, nats.Token(n.Token.Reveal()))
	}
	tc, err := n.TLS.ClientTLS()
	if err != nil {
		return nil, fmt.Errorf("config: nats: %w", err)
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// UniversalOptions returns go-redis options for redis.NewUniversalClient:
// a single node from the URL, Redis Cluster when Addrs is set, a
// Sentinel-managed master when Sentinel.MasterName is. The URL always gives
// the user, password (unless Password is set), database and TLS (rediss://).
// Every command honours its context's deadline (ContextTimeoutEnabled), so a
// stalled Redis cannot hold a caller past its own budget (/readyz's 2 s, a
// lock renewal's slice of the TTL).
func (r RedisConfig) UniversalOptions() (*redis.UniversalOptions, error) {
	o, err := redis.ParseURL(r.URL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("config: redis: url %s: %w", r.URL, err)
	}
	uo := &redis.UniversalOptions{
		Addrs:           []string{o.Addr},
		ClientName:      o.ClientName,
		DB:              o.DB,
		Protocol:        o.Protocol,
		Username:        o.Username,
		Password:        o.Password,
		MaxRetries:      o.MaxRetries,
		MinRetryBackoff: o.MinRetryBackoff,
		MaxRetryBackoff: o.MaxRetryBackoff,
		DialTimeout:     o.DialTimeout,
		ReadTimeout:     o.ReadTimeout,
		WriteTimeout:    o.WriteTimeout,
		PoolFIFO:        o.PoolFIFO,
		PoolSize:        o.PoolSize,
		PoolTimeout:     o.PoolTimeout,
		MinIdleConns:    o.MinIdleConns,
		MaxIdleConns:    o.MaxIdleConns,
		MaxActiveConns:  o.MaxActiveConns,
		ConnMaxIdleTime: o.ConnMaxIdleTime,
		ConnMaxLifetime: o.ConnMaxLifetime,
		TLSConfig:       o.TLSConfig,
		// Without it go-redis ignores context deadlines and waits for its
		// own read timeout (3 s by default, per retry).
		ContextTimeoutEnabled: true,
	}
	if r.Password != "" {
		uo.Password = r.Password.Reveal()
	}
	single := true
	switch {
	case r.Sentinel.MasterName != "":
		uo.MasterName = r.Sentinel.MasterName
		uo.Addrs = slices.Clone(r.Sentinel.Addrs)
		uo.SentinelPassword = r.Sentinel.Password.Reveal()
		single = false
	case len(r.Addrs) > 0:
		uo.Addrs = slices.Clone(r.Addrs)
		uo.IsClusterMode = true
		single = false
	}
	tc, err := r.TLS.ClientTLS()
	if err != nil {
		return nil, fmt.Errorf("config: redis: %w", err)
	}
	if tc != nil {
		if single && uo.TLSConfig != nil {
			tc.ServerName = uo.TLSConfig.ServerName
		}
		uo.TLSConfig = tc
	}
	if !single && uo.TLSConfig != nil {
		// Each node has its own name: let the dialer take it from the address.
		uo.TLSConfig.ServerName = ""
	}
	return uo, nil
}
