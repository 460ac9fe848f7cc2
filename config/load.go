package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// Load reads the configuration: the YAML file at path (none when path is
// ""), then environment variables looked up with env (nil: none; pass
// os.Getenv), then defaults; it reads the secret files (passwordFile,
// tokenFile, ...) and validates the result.
//
// Every error matches ErrInvalid (errors.Is) and names the key or variable
// at fault; none contains a secret.
func Load(path string, env func(string) string) (*Config, error) {
	if env == nil {
		env = func(string) string { return "" }
	}
	cfg, err := readFile(path)
	if err != nil {
		return nil, err
	}
	for name, t := range cfg.Targets {
		if reflect.ValueOf(t).IsZero() { // "name:" with no body
			cfg.Targets[name] = DefaultTarget()
		}
	}
	if errs := applyEnv(cfg, env); len(errs) > 0 {
		return nil, errs
	}
	cfg.fillDefaults()
	if errs := cfg.readFiles(); len(errs) > 0 {
		return nil, errs
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// readFile returns the defaults overlaid with the YAML file at path (none
// when path is "").
func readFile(path string) (*Config, error) {
	cfg := Default()
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := decodeYAML(data, cfg); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, path, err)
	}
	return cfg, nil
}

// decodeYAML decodes one YAML document onto cfg. Unknown keys and values of
// the wrong type are reported by their path first; the strict decoder then
// does the work.
func decodeYAML(data []byte, cfg *Config) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file
		}
		return err
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document")
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	var errs Errors
	checkNode(root, reflect.TypeOf(cfg).Elem(), "", &errs)
	if len(errs) > 0 {
		return errs
	}
	// checkNode has refused unknown keys, so the parsed document is decoded
	// as it is rather than parsed a second time by a strict decoder.
	targets := plainMapping(root, "targets")
	if targets == nil {
		return root.Decode(cfg)
	}
	// yaml.v3 looks for duplicate keys of a mapping pair by pair, which takes
	// seconds for 10,000 targets: the targets are checked with a map here and
	// decoded one by one, the rest of the document without them.
	seen := make(map[string]int, len(targets.Content)/2)
	var dups []string
	for i := 0; i+1 < len(targets.Content); i += 2 {
		k := targets.Content[i]
		if line, ok := seen[k.Value]; ok {
			dups = append(dups, fmt.Sprintf("line %d: mapping key %#v already defined at line %d", k.Line, k.Value, line))
			continue
		}
		seen[k.Value] = k.Line
	}
	if len(dups) > 0 {
		return &yaml.TypeError{Errors: dups}
	}
	content := targets.Content
	targets.Content = nil
	err := root.Decode(cfg)
	targets.Content = content
	if err != nil {
		return err
	}
	if cfg.Targets == nil {
		cfg.Targets = make(map[string]TargetConfig, len(content)/2)
	}
	var typeErrs []string
	for i := 0; i+1 < len(content); i += 2 {
		var t TargetConfig
		if err := content[i+1].Decode(&t); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return err
			}
			typeErrs = append(typeErrs, te.Errors...)
		}
		cfg.Targets[content[i].Value] = t
	}
	if len(typeErrs) > 0 {
		return &yaml.TypeError{Errors: typeErrs}
	}
	return nil
}

// plainMapping returns the value of key in the mapping n when it is a
// mapping of plain scalar keys (no merge key, no alias, no tag), else nil.
func plainMapping(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "<<" {
			return nil // a merge key could bring targets too
		}
		if k.Value != key {
			continue
		}
		if v.Kind != yaml.MappingNode || v.Tag != "!!map" {
			return nil
		}
		for j := 0; j+1 < len(v.Content); j += 2 {
			if tk := v.Content[j]; tk.Kind != yaml.ScalarNode || tk.Value == "<<" || tk.ShortTag() != "!!str" {
				return nil
			}
		}
		return v
	}
	return nil
}

// checkNode checks n against the Go type t: mappings only with known keys,
// lists where lists are expected, scalars that decode. Problems are added to
// errs with the key's path and line.
func checkNode(n *yaml.Node, t reflect.Type, path string, errs *Errors) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	at := func(format string, args ...any) {
		errs.add(path, fmt.Sprintf(format, args...)+fmt.Sprintf(" (line %d)", n.Line))
	}
	switch {
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			at("must be a mapping")
			return
		}
		fields := cachedYAMLFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" { // merge key: the merged mappings have this type too
				checkNode(v, t, path, errs)
				continue
			}
			f, ok := fields[k.Value]
			if !ok {
				msg := "unknown key"
				if s := suggest(k.Value, fields); s != "" {
					msg += fmt.Sprintf(" (did you mean %s?)", s)
				}
				errs.add(join(path, k.Value), fmt.Sprintf("%s (line %d)", msg, k.Line))
				continue
			}
			checkNode(v, f.Type, join(path, k.Value), errs)
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			at("must be a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				errs.add(path, fmt.Sprintf("keys must be names (line %d)", k.Line))
				continue
			}
			checkNode(v, t.Elem(), join(path, k.Value), errs)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			at("must be a list")
			return
		}
		for i, e := range n.Content {
			checkNode(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	default:
		if n.Kind != yaml.ScalarNode {
			at("must be a single value, not a list or mapping")
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			if isSecret(t) {
				at("is not valid")
				return
			}
			at("%q is not %s", n.Value, describe(t))
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fieldCache holds yamlFields' answers by type: checkNode asks once per
// mapping of the document, 10,000 times for the targets of a large one.
var fieldCache sync.Map // reflect.Type → map[string]reflect.StructField

// cachedYAMLFields is yamlFields(t), computed once per type. The map is
// shared: callers only read it.
func cachedYAMLFields(t reflect.Type) map[string]reflect.StructField {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.StructField)
	}
	m, _ := fieldCache.LoadOrStore(t, yamlFields(t))
	return m.(map[string]reflect.StructField)
}

// yamlFields maps a struct type's YAML keys to its fields, those of inlined
// structs (`yaml:",inline"`) included.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := make(map[string]reflect.StructField, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if isInline(f) {
			maps.Copy(m, yamlFields(f.Type))
			continue
		}
		if key := yamlKey(f); key != "" {
			m[key] = f
		}
	}
	return m
}

// isInline reports whether f is an exported or embedded struct whose fields
// YAML reads at the level of f's own struct.
func isInline(f reflect.StructField) bool {
	_, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return (f.IsExported() || f.Anonymous) && f.Type.Kind() == reflect.Struct &&
		slices.Contains(strings.Split(opts, ","), "inline")
}

// yamlKey is f's YAML key, "" for a field not in YAML.
func yamlKey(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || name == "" {
		return ""
	}
	return name
}

// suggest finds the known key that key probably meant: the same letters
// ignoring case, '_' and '-' (max_workers, MaxWorkers → maxWorkers).
func suggest(key string, fields map[string]reflect.StructField) string {
	norm := func(s string) string {
		return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(s))
	}
	for k := range fields {
		if norm(k) == norm(key) {
			return k
		}
	}
	return ""
}

// readFiles replaces each secret given by file with the file's content
// (surrounding white space trimmed) and checks that the other files the
// connections will read exist. Giving a secret both inline and by file is
// an error.
func (c *Config) readFiles() Errors {
	errs := c.readConnectionFiles()
	for _, name := range c.TargetNames() {
		t := c.Targets[name]
		a := &t.Pathling.Auth
		p := "targets." + name + ".pathling.auth."
		readSecretFile(&errs, p+"token", &a.Token, a.TokenFile)
		readSecretFile(&errs, p+"clientSecret", &a.ClientSecret, a.ClientSecretFile)
		readSecretFile(&errs, p+"privateKey", &a.PrivateKey, a.PrivateKeyFile)
		c.Targets[name] = t
	}
	return errs
}

// readConnectionFiles does what readFiles does for the NATS and Redis
// settings only: all that the client commands read.
func (c *Config) readConnectionFiles() Errors {
	var errs Errors
	secret := func(path string, value *Secret, file string) { readSecretFile(&errs, path, value, file) }
	exists := func(path, file string) {
		if file == "" {
			return
		}
		if _, err := os.Stat(file); err != nil {
			errs.add(path, err.Error())
		}
	}
	n := &c.NATS
	secret("nats.password", &n.Password, n.PasswordFile)
	secret("nats.token", &n.Token, n.TokenFile)
	exists("nats.credsFile", n.CredsFile)
	exists("nats.nkeySeedFile", n.NKeySeedFile)
	tlsFiles := func(prefix string, t TLSConfig) {
		exists(prefix+".caFile", t.CAFile)
		exists(prefix+".certFile", t.CertFile)
		exists(prefix+".keyFile", t.KeyFile)
	}
	tlsFiles("nats.tls", n.TLS)
	r := &c.Redis
	secret("redis.password", &r.Password, r.PasswordFile)
	secret("redis.sentinel.password", &r.Sentinel.Password, r.Sentinel.PasswordFile)
	tlsFiles("redis.tls", r.TLS)
	return errs
}

// readSecretFile replaces *value with the content of file (when given),
// surrounding white space trimmed.
func readSecretFile(errs *Errors, path string, value *Secret, file string) {
	if file == "" {
		return
	}
	if *value != "" {
		errs.add(path, "set either the value or the File variant, not both")
		return
	}
	data, err := os.ReadFile(file)
	if err != nil {
		errs.add(path+"File", err.Error())
		return
	}
	*value = Secret(strings.TrimSpace(string(data)))
	if *value == "" {
		errs.add(path+"File", fmt.Sprintf("%s is empty", file))
	}
}

// fillDefaults sets the defaults that are not constants (the host name) and
// the enumerations whose empty value means the default.
func (c *Config) fillDefaults() {
	if c.Service.InstanceID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "pathling-sync"
		}
		c.Service.InstanceID = host
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	for name, t := range c.Targets {
		if t.Pathling.Auth.Type == "" {
			t.Pathling.Auth.Type = AuthNone
		}
		if t.Pathling.ExportURLStyle == "" {
			t.Pathling.ExportURLStyle = ExportURLBase
		}
		c.Targets[name] = t
	}
}
