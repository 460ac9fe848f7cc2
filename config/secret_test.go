package config_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/pathling-sync/pathling-sync/config"
)

// secretConfig is a config holding a distinct secret in every secret field.
func secretConfig() (*config.Config, []string) {
	cfg := config.Default()
	cfg.NATS.URL = "nats://natstok-0001@nats:4222,nats://u:natspw-0002@nats2:4222"
	cfg.NATS.User = "svc"
	cfg.NATS.Password = "natspw-0003"
	cfg.NATS.Token = "natstok-0004"
	cfg.Redis.URL = "rediss://app:redispw-0005@redis:6380/0"
	cfg.Redis.Password = "redispw-0006"
	cfg.Redis.Sentinel.Password = "sentinelpw-0007"
	tg := config.DefaultTarget()
	tg.Pathling.URL = "http://p/fhir"
	tg.Pathling.Auth = config.AuthConfig{
		Type: config.AuthSMARTBackend, Token: "bearer-0008", ClientSecret: "clientsecret-0009",
		PrivateKey: `{"kty":"EC","d":"privkey-0010"}`, ClientID: "client",
	}
	cfg.Targets = map[string]config.TargetConfig{"default": tg}
	return cfg, []string{"natstok-0001", "natspw-0002", "natspw-0003", "natstok-0004", "redispw-0005",
		"redispw-0006", "sentinelpw-0007", "bearer-0008", "clientsecret-0009", "privkey-0010"}
}

func TestSecretsNeverPrinted(t *testing.T) {
	cfg, secrets := secretConfig()
	outputs := map[string]string{
		"%v ptr":   fmt.Sprintf("%v", cfg),
		"%+v ptr":  fmt.Sprintf("%+v", cfg),
		"%v":       fmt.Sprintf("%v", *cfg),
		"%+v":      fmt.Sprintf("%+v", *cfg),
		"%#v":      fmt.Sprintf("%#v", *cfg),
		"%s":       fmt.Sprintf("<%s>", cfg.Redis.Sentinel.Password),
		"%x":       fmt.Sprintf("%x", cfg.NATS.Password),
		"%q":       fmt.Sprintf("%q", cfg.NATS.Password),
		"target":   fmt.Sprintf("%+v", cfg.Targets["default"]),
		"auth %#v": fmt.Sprintf("%#v", cfg.Targets["default"].Pathling.Auth),
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(js)
	ys, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs["yaml"] = string(ys)
	var jsonLog, textLog bytes.Buffer
	slog.New(slog.NewJSONHandler(&jsonLog, nil)).Info("loaded", "config", cfg, "password", cfg.NATS.Password,
		slog.Any("redis", cfg.Redis), "url", cfg.Redis.URL)
	slog.New(slog.NewTextHandler(&textLog, nil)).Info("loaded", "config", cfg, "password", cfg.NATS.Password, "url", cfg.Redis.URL)
	outputs["slog json"] = jsonLog.String()
	outputs["slog text"] = textLog.String()

	for name, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s output leaks %q:\n%s", name, s, out)
			}
		}
	}
	if !strings.Contains(outputs["%+v"], "Password:[redacted]") {
		t.Errorf("%%+v does not show the password as [redacted]: %s", outputs["%+v"])
	}
	if !strings.Contains(jsonLog.String(), `"password":"[redacted]"`) {
		t.Errorf("slog JSON does not show the password as [redacted]: %s", jsonLog.String())
	}
	if !strings.Contains(jsonLog.String(), `"url":"rediss://app:xxxxx@redis:6380/0"`) {
		t.Errorf("slog JSON does not show the redis URL masked: %s", jsonLog.String())
	}
	if got := cfg.NATS.URL.String(); got != "nats://xxxxx@nats:4222,nats://u:xxxxx@nats2:4222" {
		t.Errorf("NATS URL String() = %q", got)
	}
	if got := cfg.NATS.Password.Reveal(); got != "natspw-0003" {
		t.Errorf("Reveal() = %q", got)
	}
	if got := config.Secret("").String(); got != "" {
		t.Errorf("empty secret prints %q, want empty", got)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	keyFile := filepath.Join(dir, "key.json")
	pwFile := filepath.Join(dir, "redis-pw")
	mustWrite(t, tokenFile, "tok-from-file\n")
	mustWrite(t, keyFile, `{"kty":"EC","kid":"k1"}`+"\n")
	mustWrite(t, pwFile, "  pw-from-file \n")
	yaml := fmt.Sprintf(`
redis:
  passwordFile: %s
targets:
  a:
    pathling:
      url: http://p/fhir
      auth:
        type: smart_backend
        clientId: c
        privateKeyFile: %s
    defaults: {exportUrl: "https://s/fhir"}
`, pwFile, keyFile)
	cfg := mustLoad(t, yaml, map[string]string{"PATHLING_SYNC_NATS_TOKEN_FILE": tokenFile})
	if got := cfg.NATS.Token.Reveal(); got != "tok-from-file" {
		t.Errorf("nats token = %q", got)
	}
	if got := cfg.Redis.Password.Reveal(); got != "pw-from-file" {
		t.Errorf("redis password = %q", got)
	}
	a, _ := cfg.Target("a")
	if got := a.Pathling.Auth.PrivateKey.Reveal(); got != `{"kty":"EC","kid":"k1"}` {
		t.Errorf("private key = %q", got)
	}

	err := loadErr(t, "", map[string]string{"PATHLING_SYNC_NATS_TOKEN_FILE": tokenFile, "PATHLING_SYNC_NATS_TOKEN": "inline"})
	if !strings.Contains(err.Error(), "nats.token: set either the value or the File variant, not both") {
		t.Errorf("both inline and file: %v", err)
	}
	err = loadErr(t, "", map[string]string{"PATHLING_SYNC_REDIS_PASSWORD_FILE": filepath.Join(dir, "absent")})
	if !strings.Contains(err.Error(), "redis.passwordFile: open ") {
		t.Errorf("missing file: %v", err)
	}
	err = loadErr(t, "", map[string]string{"PATHLING_SYNC_NATS_CREDS_FILE": filepath.Join(dir, "absent.creds")})
	if !strings.Contains(err.Error(), "nats.credsFile: stat ") {
		t.Errorf("missing creds file: %v", err)
	}
}

func TestValidationNeverEchoesSecrets(t *testing.T) {
	err := loadErr(t, "", map[string]string{
		"REDIS_URL": "http://u:topsecret-1@r:6379",
		"NATS_URL":  "http://tok-secret-2@n:4222",
	})
	for _, s := range []string{"topsecret-1", "tok-secret-2"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error leaks %q: %v", s, err)
		}
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
