package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pathling-sync/pathling-sync/config"
)

func TestRedisUniversalOptions(t *testing.T) {
	base := config.Default().Redis

	r := base
	r.URL = "redis://app:urlpw@r1:6380/3"
	o, err := r.UniversalOptions()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Addrs, []string{"r1:6380"}) || o.DB != 3 || o.Username != "app" || o.Password != "urlpw" ||
		o.IsClusterMode || o.MasterName != "" || o.TLSConfig != nil {
		t.Errorf("single node: %+v", o)
	}

	r.Password = "override"
	if o, _ = r.UniversalOptions(); o.Password != "override" {
		t.Errorf("password = %q, want redis.password over the URL's", o.Password)
	}

	c := base
	c.URL = "rediss://:pw@ignored:6379/0"
	c.Addrs = []string{"n1:7000", "n2:7000"}
	o, err = c.UniversalOptions()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Addrs, c.Addrs) || !o.IsClusterMode || o.Password != "pw" || o.TLSConfig == nil || o.TLSConfig.ServerName != "" {
		t.Errorf("cluster: %+v", o)
	}

	s := base
	s.Sentinel = config.SentinelConfig{MasterName: "mymaster", Addrs: []string{"s1:26379"}, Password: "spw"}
	o, err = s.UniversalOptions()
	if err != nil {
		t.Fatal(err)
	}
	if o.MasterName != "mymaster" || !slices.Equal(o.Addrs, []string{"s1:26379"}) || o.SentinelPassword != "spw" {
		t.Errorf("sentinel: %+v", o)
	}

	// Every topology honours context deadlines (a stalled Redis must not
	// outlast /readyz's budget or a lock renewal's).
	for name, rc := range map[string]config.RedisConfig{"single": r, "cluster": c, "sentinel": s} {
		if o, err := rc.UniversalOptions(); err != nil || !o.ContextTimeoutEnabled {
			t.Errorf("%s: ContextTimeoutEnabled = false (err %v)", name, err)
		}
	}

	tl := base
	tl.URL = "rediss://cache.example:6380/0"
	tl.TLS.CAFile = writeCA(t)
	o, err = tl.UniversalOptions()
	if err != nil {
		t.Fatal(err)
	}
	if o.TLSConfig == nil || o.TLSConfig.RootCAs == nil || o.TLSConfig.ServerName != "cache.example" {
		t.Errorf("tls: %+v", o.TLSConfig)
	}
}

func TestNATSOptions(t *testing.T) {
	apply := func(n config.NATSConfig) nats.Options {
		t.Helper()
		opts, err := n.Options()
		if err != nil {
			t.Fatal(err)
		}
		o := nats.GetDefaultOptions()
		for _, opt := range opts {
			if err := opt(&o); err != nil {
				t.Fatal(err)
			}
		}
		return o
	}
	if o := apply(config.NATSConfig{Token: "tok"}); o.Token != "tok" || o.Secure {
		t.Errorf("token: token %q secure %v", o.Token, o.Secure)
	}
	if o := apply(config.NATSConfig{User: "u", Password: "p"}); o.User != "u" || o.Password != "p" {
		t.Errorf("user: %q %q", o.User, o.Password)
	}
	o := apply(config.NATSConfig{TLS: config.TLSConfig{CAFile: writeCA(t)}})
	if !o.Secure || o.TLSConfig == nil || o.TLSConfig.RootCAs == nil {
		t.Errorf("tls: secure %v config %+v", o.Secure, o.TLSConfig)
	}
	if _, err := (config.NATSConfig{NKeySeedFile: filepath.Join(t.TempDir(), "absent")}).Options(); err == nil {
		t.Error("missing nkey seed accepted")
	}
}

// writeCA writes a self-signed CA certificate and returns its path.
func writeCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
