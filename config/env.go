package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts the name of every environment variable of the service
// except the connection URLs (NATS_URL, REDIS_URL) and the seed script's.
const EnvPrefix = "PATHLING_SYNC_"

// EnvTargets lists, comma-separated, targets to create from environment
// variables alone; targets in the YAML file and "default" need not be listed.
const EnvTargets = EnvPrefix + "TARGETS"

// DefaultTargetName is the target the seed script's variables configure.
const DefaultTargetName = "default"

// Seed script variables (sync.sh), which configure the target "default".
const (
	EnvPathlingURL     = "PATHLING_URL"
	EnvSourceExportURL = "SOURCE_EXPORT_URL"
	EnvSaveMode        = "SAVE_MODE"
	EnvTimeout         = "TIMEOUT"
	EnvResourceTypes   = "RESOURCE_TYPES"
	EnvSince           = "SINCE"
)

// EnvVar documents one environment variable.
type EnvVar struct {
	// Name is the variable; "<NAME>" stands for a target's name in upper
	// case with '-' as '_'.
	Name string
	// Key is the configuration key it sets ("<name>" for a target's name).
	Key string
	// Default is the value used when neither the variable nor the YAML file
	// sets the key ("" for none).
	Default string
	// Help says what it does.
	Help string
}

// EnvReference lists every environment variable Load reads, in the order of
// the configuration's keys, for the README and `--help`.
func EnvReference() []EnvVar {
	var out []EnvVar
	def := reflect.ValueOf(Default()).Elem()
	forEachLeaf(def.Type(), nil, nil, func(l leaf) {
		name := EnvPrefix + l.envName()
		key := strings.Join(l.path, ".")
		dflt := defaultText(l.field, def.FieldByIndex(l.index))
		out = append(out, EnvVar{Name: name, Key: key, Default: dflt, Help: l.field.Tag.Get("help")})
		if alias := l.field.Tag.Get("env"); alias != "" {
			out = append(out, EnvVar{Name: alias, Key: key, Default: dflt,
				Help: l.field.Tag.Get("help") + " (" + name + " takes precedence)"})
		}
	})
	out = append(out, EnvVar{Name: EnvTargets, Key: "targets",
		Help: "comma-separated names of targets configured by environment variables alone (targets in the file and \"default\" need not be listed)"})
	target := reflect.ValueOf(DefaultTarget())
	forEachLeaf(target.Type(), []string{"targets", "<name>"}, nil, func(l leaf) {
		out = append(out, EnvVar{
			Name:    EnvPrefix + "TARGETS_<NAME>_" + envName(l.path[2:]),
			Key:     strings.Join(l.path, "."),
			Default: defaultText(l.field, target.FieldByIndex(l.index)),
			Help:    l.field.Tag.Get("help"),
		})
	})
	seed := func(name, key, help string) {
		out = append(out, EnvVar{Name: name, Key: "targets.default." + key, Help: help + " (seed script variable; " + EnvPrefix + "TARGETS_DEFAULT_... takes precedence)"})
	}
	seed(EnvPathlingURL, "pathling.url", "Pathling FHIR base URL of the target \"default\"")
	seed(EnvSourceExportURL, "defaults.exportUrl", "default source export URL of the target \"default\", also added to its allowed export URLs")
	seed(EnvSaveMode, "defaults.saveMode", "default save mode of the target \"default\"")
	seed(EnvTimeout, "timeout", "sync timeout of the target \"default\", in seconds (or a duration such as 2h)")
	seed(EnvResourceTypes, "defaults.types", "comma-separated default resource types of the target \"default\"")
	seed(EnvSince, "defaults.since", "default since of the target \"default\": an instant, or auto")
	return out
}

// leaf is one settable key of the configuration.
type leaf struct {
	path  []string // YAML keys from the root
	index []int    // field index from the root struct
	field reflect.StructField
}

// envName is the leaf's variable name without prefix.
func (l leaf) envName() string { return envName(l.path) }

// envName joins YAML keys in upper snake case: [nats consumer maxWorkers] →
// NATS_CONSUMER_MAX_WORKERS.
func envName(path []string) string {
	parts := make([]string, len(path))
	for i, p := range path {
		parts[i] = upperSnake(p)
	}
	return strings.Join(parts, "_")
}

func upperSnake(s string) string {
	var b strings.Builder
	runes := []rune(s)
	for i, r := range runes {
		if i > 0 && unicode.IsUpper(r) && (unicode.IsLower(runes[i-1]) || unicode.IsDigit(runes[i-1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// forEachLeaf calls fn for every key of struct type t: fields of nested
// structs recursively, every other field (scalars and lists) as a leaf.
// Maps (the targets) are skipped: their entries are walked separately.
func forEachLeaf(t reflect.Type, path []string, index []int, fn func(leaf)) {
	for i := range t.NumField() {
		f := t.Field(i)
		if isInline(f) {
			forEachLeaf(f.Type, path, append(slices.Clone(index), i), fn)
			continue
		}
		key := yamlKey(f)
		if key == "" {
			continue
		}
		p := append(slices.Clone(path), key)
		idx := append(slices.Clone(index), i)
		switch f.Type.Kind() {
		case reflect.Map:
		case reflect.Struct:
			forEachLeaf(f.Type, p, idx, fn)
		default:
			fn(leaf{path: p, index: idx, field: f})
		}
	}
}

// applyEnv overrides cfg with the environment: the connections' common
// names, then the seed script's variables, then PATHLING_SYNC_*.
func applyEnv(cfg *Config, env func(string) string) Errors {
	var errs Errors
	applyStruct(reflect.ValueOf(cfg).Elem(), EnvPrefix, env, &errs)

	if cfg.Targets == nil {
		cfg.Targets = map[string]TargetConfig{}
	}
	for name := range strings.SplitSeq(env(EnvTargets), ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if _, ok := cfg.targetByEnvName(envToken(name)); !ok {
			cfg.Targets[name] = DefaultTarget()
		}
	}

	defName, defExists := cfg.targetByEnvName(envToken(DefaultTargetName))
	if !defExists {
		defName = DefaultTargetName
	}
	def := cfg.Targets[defName]
	if !defExists {
		def = DefaultTarget()
	}
	seeded := applySeed(&def, env, &errs)
	overridden := applyStruct(reflect.ValueOf(&def).Elem(), EnvPrefix+"TARGETS_"+envToken(defName)+"_", env, &errs)
	if defExists || seeded || overridden {
		cfg.Targets[defName] = def
	}

	for _, name := range cfg.TargetNames() {
		if name == defName {
			continue
		}
		t := cfg.Targets[name]
		applyStruct(reflect.ValueOf(&t).Elem(), EnvPrefix+"TARGETS_"+envToken(name)+"_", env, &errs)
		cfg.Targets[name] = t
	}
	return errs
}

// applySeed applies the seed script's variables to t; it reports whether any
// was set.
func applySeed(t *TargetConfig, env func(string) string, errs *Errors) bool {
	set := false
	if v := env(EnvPathlingURL); v != "" {
		t.Pathling.URL, set = v, true
	}
	if v := env(EnvSourceExportURL); v != "" {
		t.Defaults.ExportURL, set = v, true
		if !slices.Contains(t.AllowedExportURLs, v) {
			t.AllowedExportURLs = append(t.AllowedExportURLs, v)
		}
	}
	if v := env(EnvSaveMode); v != "" {
		t.Defaults.SaveMode, set = v, true
	}
	if v := env(EnvTimeout); v != "" {
		set = true
		if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && secs > 0 {
			t.Timeout = time.Duration(secs) * time.Second
		} else if d, err := time.ParseDuration(v); err == nil && d > 0 {
			t.Timeout = d
		} else {
			errs.add(EnvTimeout, fmt.Sprintf("%q is not a positive number of seconds", v))
		}
	}
	if v := env(EnvResourceTypes); v != "" {
		t.Defaults.Types, set = splitList(v), true
	}
	if v := env(EnvSince); v != "" {
		t.Defaults.Since, set = v, true
	}
	return set
}

// applyStruct sets every leaf of the struct v whose variable (prefix + its
// upper-snake path) or alias (the field's env tag) is set and not empty;
// it reports whether any was.
func applyStruct(v reflect.Value, prefix string, env func(string) string, errs *Errors) bool {
	applied := false
	for _, l := range leavesOf(v.Type()) {
		name := prefix + l.env
		value := env(name)
		if value == "" && l.alias != "" {
			name, value = l.alias, env(l.alias)
		}
		if value == "" {
			continue
		}
		applied = true
		if err := setFromString(v.FieldByIndex(l.index), name, value); err != nil {
			*errs = append(*errs, err...)
		}
	}
	return applied
}

// namedLeaf is a leaf with its variable name (without prefix) and alias.
type namedLeaf struct {
	leaf
	env   string
	alias string
}

// leafCache holds leavesOf's answers by struct type: the per-target walks
// of Load (one per configured target, 10,000 of them in a large
// deployment) then cost no reflection over struct tags.
var leafCache sync.Map // reflect.Type → []namedLeaf

// leavesOf returns forEachLeaf's leaves of t with their variable names.
func leavesOf(t reflect.Type) []namedLeaf {
	if c, ok := leafCache.Load(t); ok {
		return c.([]namedLeaf)
	}
	var out []namedLeaf
	forEachLeaf(t, nil, nil, func(l leaf) {
		out = append(out, namedLeaf{leaf: l, env: l.envName(), alias: l.field.Tag.Get("env")})
	})
	c, _ := leafCache.LoadOrStore(t, out)
	return c.([]namedLeaf)
}

// setFromString sets fv from an environment variable's text: durations as
// Go durations, lists of strings comma-separated (or as a YAML/JSON list
// when the text starts with '['), other lists as YAML/JSON.
func setFromString(fv reflect.Value, name, s string) Errors {
	t := fv.Type()
	bad := func() Errors {
		if isSecret(t) {
			return Errors{{Path: name, Message: "is not valid"}}
		}
		return Errors{{Path: name, Message: fmt.Sprintf("%q is not %s", s, describe(t))}}
	}
	switch {
	case t == durationType:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return bad()
		}
		fv.SetInt(int64(d))
	case t.Kind() == reflect.String:
		fv.SetString(s)
	case t.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return bad()
		}
		fv.SetBool(b)
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, t.Bits())
		if err != nil {
			return bad()
		}
		fv.SetInt(n)
	case t.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return bad()
		}
		fv.SetFloat(f)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String && !strings.HasPrefix(strings.TrimSpace(s), "["):
		fv.Set(reflect.ValueOf(splitList(s)).Convert(t))
	default:
		var node yaml.Node
		if err := yaml.Unmarshal([]byte(s), &node); err != nil || len(node.Content) == 0 {
			return bad()
		}
		var errs Errors
		checkNode(node.Content[0], t, name, &errs)
		if len(errs) > 0 {
			return errs
		}
		ptr := reflect.New(t)
		if err := node.Content[0].Decode(ptr.Interface()); err != nil {
			return bad()
		}
		fv.Set(ptr.Elem())
	}
	return nil
}

// splitList splits a comma-separated list, trimming blanks and dropping
// empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// defaultText renders a default value for EnvReference.
func defaultText(f reflect.StructField, v reflect.Value) string {
	if d := f.Tag.Get("default"); d != "" {
		return d
	}
	switch {
	case v.Type() == durationType:
		return formatDuration(time.Duration(v.Int()))
	case v.Kind() == reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return ""
		}
		return strings.Join(v.Convert(reflect.TypeFor[[]string]()).Interface().([]string), ",")
	case v.Kind() == reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case v.Kind() == reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	default:
		return v.String()
	}
}

// formatDuration prints d without trailing zero units: 720h, 2m, 1m30s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
