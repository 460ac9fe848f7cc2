// Package deploy_test checks the deployment files against the code: the
// configuration they ship loads, every environment variable they set is one
// the service reads, the Deployment's probes and shutdown timing match the
// service's, the Compose stack runs Redis and NATS as the contract requires,
// and (given helm's output, see scripts/ci-deploy.sh) the Helm chart renders
// the same objects as the plain manifests.
package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pathling-sync/pathling-sync/clients/pathling"
	"github.com/pathling-sync/pathling-sync/config"
)

// helmRenderedEnv names a directory of `helm template` outputs: default.yaml
// (the chart's defaults, compared with deploy/kubernetes) and any others
// (whose ConfigMaps must load too).
const helmRenderedEnv = "PATHLING_SYNC_HELM_RENDERED"

// secretsDir is where the manifests mount the Secret's files.
const secretsDir = "/etc/pathling-sync/secrets/"

type object = map[string]any

// readDocs decodes every YAML document of a file (empty ones skipped).
func readDocs(t *testing.T, path string) []object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []object
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc object
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			out = append(out, doc)
		}
	}
}

// plainObjects returns the objects deploy/kubernetes/kustomization.yaml lists.
func plainObjects(t *testing.T) []object {
	t.Helper()
	k := readDocs(t, "kubernetes/kustomization.yaml")[0]
	var out []object
	for _, r := range k["resources"].([]any) {
		out = append(out, readDocs(t, filepath.Join("kubernetes", r.(string)))...)
	}
	return out
}

func find(objs []object, kind string) object {
	for _, o := range objs {
		if o["kind"] == kind {
			return o
		}
	}
	return nil
}

// get walks a path of keys and list indexes.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(object)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func container(t *testing.T, deployment object) object {
	t.Helper()
	c, ok := get(deployment, "spec", "template", "spec", "containers", 0).(object)
	if !ok {
		t.Fatal("Deployment has no container")
	}
	return c
}

// containerEnv returns the container's variables with literal values.
func containerEnv(c object) map[string]string {
	env := map[string]string{}
	for _, e := range get(c, "env").([]any) {
		m := e.(object)
		if v, ok := m["value"].(string); ok {
			env[m["name"].(string)] = v
		} else {
			env[m["name"].(string)] = "" // from a field or resource reference
		}
	}
	return env
}

// loadShippedConfig loads a config.yaml the way a pod would, with the
// Secret's files replaced by stand-ins in a temporary directory.
func loadShippedConfig(t *testing.T, configYAML string, env map[string]string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	re := regexp.MustCompile(regexp.QuoteMeta(secretsDir) + `[A-Za-z0-9._-]+`)
	configYAML = re.ReplaceAllStringFunc(configYAML, func(p string) string {
		local := filepath.Join(dir, filepath.Base(p))
		content := "stand-in-secret"
		if strings.HasSuffix(p, ".jwk") {
			content = `{"kty":"EC","crv":"P-384"}`
		}
		if err := os.WriteFile(local, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return local
	})
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("the shipped configuration does not load: %v\n%s", err, configYAML)
	}
	return cfg
}

func TestPlainManifestConfigLoads(t *testing.T) {
	objs := plainObjects(t)
	cm := find(objs, "ConfigMap")
	cfgYAML, _ := get(cm, "data", "config.yaml").(string)
	if cfgYAML == "" {
		t.Fatal("ConfigMap has no config.yaml")
	}
	env := containerEnv(container(t, find(objs, "Deployment")))
	cfg := loadShippedConfig(t, cfgYAML, env)
	if len(cfg.Targets) == 0 {
		t.Fatal("no target configured")
	}
	for _, name := range cfg.TargetNames() {
		tc, _ := cfg.Target(name)
		if tc.Pathling.Auth.Type == config.AuthNone {
			t.Errorf("target %s: the production example should authenticate to Pathling", name)
		}
		for _, s := range tc.Schedules {
			// A full overwrite must be a full export: with a since, overwrite
			// replaces each table with only the changed resources.
			if s.Request.SaveMode == "overwrite" && (s.Request.Since != "" || tc.Defaults.Since != "") {
				t.Errorf("target %s schedule %s: overwrite with a since would drop unchanged resources", name, s.Name)
			}
		}
	}
	if cfg.NATS.Stream.Replicas != 3 {
		t.Errorf("production stream replicas = %d, want 3", cfg.NATS.Stream.Replicas)
	}
}

// knownEnv reports whether the service (or the platform) reads name.
func knownEnv(name string) bool {
	switch {
	case strings.HasPrefix(name, "OTEL_"),
		slices.Contains([]string{"PATHLING_SYNC_CONFIG", "GOMEMLIMIT", "GOMAXPROCS", "POD_NAME", "POD_NAMESPACE"}, name):
		return true
	}
	for _, v := range config.EnvReference() {
		pattern := "^" + strings.ReplaceAll(regexp.QuoteMeta(v.Name), "<NAME>", "[A-Z0-9_]+") + "$"
		if regexp.MustCompile(pattern).MatchString(name) {
			return true
		}
	}
	return false
}

func TestEnvironmentVariablesAreKnown(t *testing.T) {
	check := func(where string, names []string) {
		for _, n := range names {
			if !knownEnv(n) {
				t.Errorf("%s sets %s, which the service does not read (typo? see `pathling-sync env`)", where, n)
			}
		}
	}
	check("deploy/kubernetes/deployment.yaml", mapsKeys(containerEnv(container(t, find(plainObjects(t), "Deployment")))))
	cron := readDocs(t, "kubernetes/cronjob.example.yaml")[0]
	check("deploy/kubernetes/cronjob.example.yaml", mapsKeys(containerEnv(get(cron, "spec", "jobTemplate", "spec", "template", "spec", "containers", 0).(object))))
	for name, svc := range composeServices(t) {
		if img, _ := svc["image"].(string); img != "pathling-sync:dev" {
			continue
		}
		check("deploy/compose service "+name, mapsKeys(composeEnv(svc)))
	}
	for _, f := range []string{"helm/pathling-sync/values.yaml", "helm/pathling-sync/ci/full-values.yaml"} {
		vals := readDocs(t, f)[0]
		var names []string
		if l, ok := vals["extraEnv"].([]any); ok {
			for _, e := range l {
				names = append(names, get(e, "name").(string))
			}
		}
		check(f+" extraEnv", names)
	}
}

func mapsKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestDeploymentMatchesService(t *testing.T) {
	objs := plainObjects(t)
	d := find(objs, "Deployment")
	c := container(t, d)
	env := containerEnv(c)

	if r := get(d, "spec", "replicas"); r != 2 {
		t.Errorf("replicas = %v, want 2", r)
	}
	// Probes hit the admin listener's paths on the port it listens on.
	addr := env["PATHLING_SYNC_ADMIN_ADDR"]
	var port int
	for _, p := range get(c, "ports").([]any) {
		if get(p, "name") == "admin" {
			port = get(p, "containerPort").(int)
		}
	}
	if addr != fmt.Sprintf(":%d", port) {
		t.Errorf("PATHLING_SYNC_ADMIN_ADDR %q does not match the admin containerPort %d", addr, port)
	}
	for probe, path := range map[string]string{"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"} {
		if got := get(c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path = %v, want %s", probe, got, path)
		}
		if got := get(c, probe, "httpGet", "port"); got != "admin" {
			t.Errorf("%s port = %v, want admin", probe, got)
		}
	}
	// The grace period outlives the service's shutdown: shutdownGrace plus
	// closing connections (the contract: within 10 s).
	grace := time.Duration(get(d, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)) * time.Second
	if want := config.Default().Service.ShutdownGrace + 2*time.Second; grace <= want || grace <= 10*time.Second {
		t.Errorf("terminationGracePeriodSeconds %s is not above the shutdown time (%s, 10 s)", grace, want)
	}
	sc := get(c, "securityContext").(object)
	if sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false {
		t.Errorf("container security context too weak: %v", sc)
	}
	if get(d, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
		t.Error("pod does not require a non-root user")
	}
	// The Service and ServiceMonitor scrape that same port.
	if p := get(find(objs, "Service"), "spec", "ports", 0, "targetPort"); p != "admin" {
		t.Errorf("Service targetPort = %v, want admin", p)
	}
	if p := get(find(objs, "ServiceMonitor"), "spec", "endpoints", 0, "path"); p != "/metrics" {
		t.Errorf("ServiceMonitor path = %v, want /metrics", p)
	}
	// The NetworkPolicy lets traffic out to NATS, Redis and Pathling (and DNS) only.
	var ports []int
	for _, rule := range get(find(objs, "NetworkPolicy"), "spec", "egress").([]any) {
		for _, p := range get(rule, "ports").([]any) {
			ports = append(ports, get(p, "port").(int))
		}
	}
	slices.Sort(ports)
	if want := []int{53, 53, 4222, 6379, 8080}; !slices.Equal(ports, want) {
		t.Errorf("egress ports = %v, want %v", ports, want)
	}
}

func composeServices(t *testing.T) map[string]object {
	t.Helper()
	doc := readDocs(t, "compose/compose.yaml")[0]
	out := map[string]object{}
	for name, svc := range doc["services"].(object) {
		out[name] = svc.(object)
	}
	return out
}

func composeEnv(svc object) map[string]string {
	env := map[string]string{}
	switch e := svc["environment"].(type) {
	case object:
		for k, v := range e {
			env[k] = fmt.Sprint(v)
		}
	case []any:
		for _, kv := range e {
			k, v, _ := strings.Cut(kv.(string), "=")
			env[k] = v
		}
	}
	return env
}

func TestComposeStack(t *testing.T) {
	svcs := composeServices(t)

	// Redis: never evict (locks, watermarks), append-only file.
	cmd := strings.Join(toStrings(svcs["redis"]["command"]), " ")
	for _, want := range []string{"--maxmemory-policy noeviction", "--appendonly yes"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis command %q lacks %q", cmd, want)
		}
	}
	// NATS: JetStream fsyncs every write.
	nats, err := os.ReadFile("compose/nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s*sync_interval:\s*always\s*$`).Match(nats) {
		t.Error("nats.conf lacks sync_interval: always")
	}
	if !regexp.MustCompile(`(?m)^jetstream\s*\{`).Match(nats) {
		t.Error("nats.conf does not enable JetStream")
	}

	// The service's configuration loads, and Pathling allows its source.
	env := composeEnv(svcs["pathling-sync"])
	cfg, err := config.Load("", func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("compose pathling-sync configuration: %v", err)
	}
	def, ok := cfg.Target(config.DefaultTargetName)
	if !ok {
		t.Fatal("compose configures no default target")
	}
	pathlingEnv := composeEnv(svcs["pathling"])
	allowed := strings.Split(pathlingEnv["pathling.import.pnp.allowableExportUrls"], ",")
	src, err := pathling.NormalizeExportURL(def.Defaults.ExportURL, pathling.ExportURLBase)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(allowed, src) {
		t.Errorf("Pathling's allowableExportUrls %v do not allow the source %s", allowed, src)
	}
	if !strings.HasPrefix(def.Pathling.URL, "http://pathling:8080/") {
		t.Errorf("default target's Pathling URL %q is not the compose service", def.Pathling.URL)
	}
	for _, s := range def.Schedules {
		if s.Request.SaveMode == "overwrite" && (s.Request.Since != "" || def.Defaults.Since != "") {
			t.Errorf("schedule %s: overwrite with a since would drop unchanged resources", s.Name)
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, e := range v.([]any) {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

// normalize removes what only Helm adds (its labels, the config checksum,
// namespaces) and parses config.yaml, so that equal objects compare equal.
func normalize(o object) object {
	md, _ := o["metadata"].(object)
	delete(md, "namespace")
	for _, labels := range []any{get(o, "metadata", "labels"), get(o, "spec", "template", "metadata", "labels")} {
		if l, ok := labels.(object); ok {
			for _, k := range []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"} {
				delete(l, k)
			}
		}
	}
	if tm, ok := get(o, "spec", "template", "metadata").(object); ok {
		if a, ok := tm["annotations"].(object); ok {
			delete(a, "checksum/config")
			if len(a) == 0 {
				delete(tm, "annotations")
			}
		}
	}
	if o["kind"] == "ConfigMap" {
		data := o["data"].(object)
		var parsed any
		if err := yaml.Unmarshal([]byte(data["config.yaml"].(string)), &parsed); err == nil {
			data["config.yaml"] = parsed
		}
	}
	return o
}

func TestHelmChartMatchesPlainManifests(t *testing.T) {
	dir := os.Getenv(helmRenderedEnv)
	if dir == "" {
		t.Skipf("set %s to a directory of `helm template` outputs (scripts/ci-deploy.sh does)", helmRenderedEnv)
	}
	rendered := readDocs(t, filepath.Join(dir, "default.yaml"))
	plain := plainObjects(t)
	key := func(o object) string { return fmt.Sprintf("%s/%s", o["kind"], get(o, "metadata", "name")) }
	byKey := map[string]object{}
	for _, o := range rendered {
		byKey[key(o)] = normalize(o)
	}
	if len(rendered) != len(plain) {
		t.Errorf("helm renders %d objects, deploy/kubernetes has %d", len(rendered), len(plain))
	}
	for _, p := range plain {
		k := key(p)
		r, ok := byKey[k]
		if !ok {
			t.Errorf("%s: in deploy/kubernetes, not rendered by the chart", k)
			continue
		}
		p = normalize(p)
		if !reflect.DeepEqual(p, r) {
			pb, _ := yaml.Marshal(p)
			rb, _ := yaml.Marshal(r)
			t.Errorf("%s differs between deploy/kubernetes and the chart:\n--- plain\n%s\n--- chart\n%s", k, pb, rb)
		}
	}

	// Every rendered configuration loads, whatever the values.
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		objs := readDocs(t, f)
		cm := find(objs, "ConfigMap")
		if cm == nil {
			continue // an existing ConfigMap is used
		}
		env := containerEnv(container(t, find(objs, "Deployment")))
		t.Run(filepath.Base(f), func(t *testing.T) {
			loadShippedConfig(t, get(cm, "data", "config.yaml").(string), env)
		})
	}
}

// between returns the text of file between two marker lines.
func between(t *testing.T, file, begin, end string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i := strings.Index(s, begin)
	j := strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("%s: markers %s ... %s not found", file, begin, end)
	}
	return s[i+len(begin) : j]
}

func TestConfigurationReferenceLoads(t *testing.T) {
	block := between(t, "../docs/configuration.md", "<!-- config-reference:begin -->", "<!-- config-reference:end -->")
	block = strings.TrimSpace(block)
	block = strings.TrimPrefix(block, "```yaml")
	block = strings.TrimSuffix(block, "```")
	cfg := loadShippedConfig(t, block, nil)
	// The reference spells out the defaults: they must be the code's.
	def := config.Default()
	if cfg.NATS.Stream != def.NATS.Stream || cfg.NATS.Consumer != def.NATS.Consumer {
		t.Errorf("docs/configuration.md: nats defaults differ from the code's:\n doc  %+v %+v\n code %+v %+v",
			cfg.NATS.Stream, cfg.NATS.Consumer, def.NATS.Stream, def.NATS.Consumer)
	}
	if cfg.Redis.KeyPrefix != def.Redis.KeyPrefix || cfg.Redis.Retention != def.Redis.Retention || cfg.Redis.LockTTL != def.Redis.LockTTL {
		t.Errorf("docs/configuration.md: redis defaults differ from the code's")
	}
	if cfg.Admin != def.Admin || cfg.Log != def.Log || cfg.Service.Source != def.Service.Source ||
		cfg.Service.QueueRetry != def.Service.QueueRetry || cfg.Service.ShutdownGrace != def.Service.ShutdownGrace {
		t.Errorf("docs/configuration.md: admin, log or service defaults differ from the code's")
	}
	got, _ := cfg.Target("default")
	want := config.DefaultTarget()
	if got.Timeout != want.Timeout || got.Overlap != want.Overlap || got.Poll != want.Poll || got.Retry != want.Retry ||
		got.MaxJobLosses != want.MaxJobLosses || got.KeepJobs != want.KeepJobs ||
		got.Pathling.ExportURLStyle != want.Pathling.ExportURLStyle || got.Pathling.RequestTimeout != want.Pathling.RequestTimeout {
		t.Errorf("docs/configuration.md: target defaults differ from the code's")
	}
}

// envTable renders config.EnvReference as `pathling-sync env` prints it.
func envTable() string {
	var b strings.Builder
	b.WriteString("| variable | key | default | meaning |\n|---|---|---|---|\n")
	for _, v := range config.EnvReference() {
		d := v.Default
		if d != "" {
			d = "`" + d + "`"
		}
		fmt.Fprintf(&b, "| `%s` | `%s` | %s | %s |\n", v.Name, v.Key, d, strings.ReplaceAll(v.Help, "|", `\|`))
	}
	return b.String()
}

func TestConfigurationEnvTableIsCurrent(t *testing.T) {
	got := strings.TrimSpace(between(t, "../docs/configuration.md", "<!-- env-table:begin -->", "<!-- env-table:end -->"))
	if want := strings.TrimSpace(envTable()); got != want {
		t.Errorf("docs/configuration.md's variable table is out of date: regenerate it with `go run ./cmd/pathling-sync env`")
	}
}
