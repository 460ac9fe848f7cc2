package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

func runK8sSchemas(args []string) error {
	fs := flag.NewFlagSet("k8s-schemas", flag.ContinueOnError)
	swagger := fs.String("swagger", "", "Kubernetes OpenAPI v2 document (swagger.json)")
	crds := fs.String("crds", "", "comma-separated files or directories of CustomResourceDefinition YAML")
	out := fs.String("out", "", "output directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *swagger == "" || *out == "" {
		return errors.New("k8s-schemas: -swagger and -out are required")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	n, err := convertSwagger(*swagger, *out)
	if err != nil {
		return fmt.Errorf("k8s-schemas: %s: %w", *swagger, err)
	}
	m := 0
	for p := range strings.SplitSeq(*crds, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		k, err := convertCRDs(p, *out)
		if err != nil {
			return fmt.Errorf("k8s-schemas: %s: %w", p, err)
		}
		m += k
	}
	fmt.Printf("k8s-schemas: %d Kubernetes and %d custom resource schemas in %s\n", n, m, *out)
	return nil
}

// kindSuffix is kubeconform's {{ .KindSuffix }} for a group and version:
// "-v1" for the core group, "-apps-v1" for apps/v1, "-networking-v1" for
// networking.k8s.io/v1 (the group's first label only).
func kindSuffix(group, version string) string {
	if group == "" {
		return "-" + strings.ToLower(version)
	}
	first, _, _ := strings.Cut(group, ".")
	return "-" + strings.ToLower(first) + "-" + strings.ToLower(version)
}

type gvk struct{ Group, Version, Kind string }

// convertSwagger writes one schema per group/version/kind of the document.
func convertSwagger(path, out string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return 0, err
	}
	if len(doc.Definitions) == 0 {
		return 0, errors.New("no definitions")
	}
	defs := make(map[string]any, len(doc.Definitions))
	for name, d := range doc.Definitions {
		defs[name] = openAPIToJSONSchema(name, d)
	}
	names := make([]string, 0, len(doc.Definitions))
	for name := range doc.Definitions {
		names = append(names, name)
	}
	sort.Strings(names)
	written := map[string]bool{}
	for _, name := range names {
		raw, _ := doc.Definitions[name]["x-kubernetes-group-version-kind"].([]any)
		for _, g := range raw {
			m, _ := g.(map[string]any)
			k := gvk{Group: str(m["group"]), Version: str(m["version"]), Kind: str(m["kind"])}
			if k.Kind == "" || k.Version == "" {
				continue
			}
			file := strings.ToLower(k.Kind) + kindSuffix(k.Group, k.Version) + ".json"
			if written[file] {
				continue
			}
			root := deepCopy(defs[name]).(map[string]any)
			used := map[string]any{}
			collectRefs(root, defs, used)
			if len(used) > 0 {
				root["definitions"] = used
			}
			pinKind(root, k)
			root["$schema"] = "http://json-schema.org/draft-04/schema#"
			if err := writeJSON(filepath.Join(out, file), root); err != nil {
				return 0, err
			}
			written[file] = true
		}
	}
	return len(written), nil
}

// pinKind restricts apiVersion and kind to the schema's own, as the API
// server does.
func pinKind(root map[string]any, k gvk) {
	props, _ := root["properties"].(map[string]any)
	if props == nil {
		return
	}
	apiVersion := k.Version
	if k.Group != "" {
		apiVersion = k.Group + "/" + k.Version
	}
	props["apiVersion"] = map[string]any{"type": "string", "enum": []any{apiVersion}}
	props["kind"] = map[string]any{"type": "string", "enum": []any{k.Kind}}
	req, _ := root["required"].([]any)
	for _, f := range []string{"apiVersion", "kind"} {
		if !containsAny(req, f) {
			req = append(req, f)
		}
	}
	root["required"] = req
}

// openAPIToJSONSchema adapts one OpenAPI v2 definition: int-or-string and
// quantities accept numbers, objects reject unknown fields.
func openAPIToJSONSchema(name string, d map[string]any) any {
	switch name {
	case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
	case "io.k8s.apimachinery.pkg.api.resource.Quantity":
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
	}
	return strictify(deepCopy(d))
}

// strictify walks a schema: objects with properties get
// additionalProperties false (unless they preserve unknown fields), and
// int-or-string formats become string-or-integer.
func strictify(v any) any {
	switch s := v.(type) {
	case map[string]any:
		for k, sub := range s {
			switch k {
			case "properties", "patternProperties", "definitions":
				if m, ok := sub.(map[string]any); ok {
					for pk, pv := range m {
						m[pk] = strictify(pv)
					}
				}
			case "items", "additionalProperties", "not":
				s[k] = strictify(sub)
			case "allOf", "anyOf", "oneOf":
				if l, ok := sub.([]any); ok {
					for i := range l {
						l[i] = strictify(l[i])
					}
				}
			}
		}
		if s["format"] == "int-or-string" || s["x-kubernetes-int-or-string"] == true {
			delete(s, "type")
			delete(s, "format")
			if _, ok := s["anyOf"]; !ok {
				s["oneOf"] = []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}
			}
		}
		if s["nullable"] == true {
			if t, ok := s["type"].(string); ok {
				s["type"] = []any{t, "null"}
			}
		}
		_, hasProps := s["properties"]
		_, hasAdditional := s["additionalProperties"]
		if hasProps && !hasAdditional && s["x-kubernetes-preserve-unknown-fields"] != true {
			s["additionalProperties"] = false
		}
		return s
	default:
		return v
	}
}

// collectRefs adds to used every definition v refers to, transitively.
func collectRefs(v any, defs map[string]any, used map[string]any) {
	switch s := v.(type) {
	case map[string]any:
		if ref, ok := s["$ref"].(string); ok {
			name := strings.TrimPrefix(ref, "#/definitions/")
			if _, seen := used[name]; !seen {
				if d, ok := defs[name]; ok {
					cp := deepCopy(d)
					used[name] = cp
					collectRefs(cp, defs, used)
				}
			}
		}
		for k, sub := range s {
			if k == "definitions" {
				continue
			}
			collectRefs(sub, defs, used)
		}
	case []any:
		for _, sub := range s {
			collectRefs(sub, defs, used)
		}
	}
}

// convertCRDs writes one schema per served version of every
// CustomResourceDefinition in path (a YAML file or a directory of them).
func convertCRDs(path, out string) (int, error) {
	files := []string{path}
	if st, err := os.Stat(path); err != nil {
		return 0, err
	} else if st.IsDir() {
		files = nil
		entries, err := os.ReadDir(path)
		if err != nil {
			return 0, err
		}
		for _, e := range entries {
			if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return n, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var crd struct {
				Kind string `yaml:"kind"`
				Spec struct {
					Group string `yaml:"group"`
					Names struct {
						Kind string `yaml:"kind"`
					} `yaml:"names"`
					Versions []struct {
						Name   string `yaml:"name"`
						Schema struct {
							OpenAPIV3Schema map[string]any `yaml:"openAPIV3Schema"`
						} `yaml:"schema"`
					} `yaml:"versions"`
				} `yaml:"spec"`
			}
			if err := dec.Decode(&crd); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return n, fmt.Errorf("%s: %w", f, err)
			}
			if crd.Kind != "CustomResourceDefinition" {
				continue
			}
			for _, v := range crd.Spec.Versions {
				if v.Schema.OpenAPIV3Schema == nil {
					continue
				}
				root := strictify(normalizeYAML(v.Schema.OpenAPIV3Schema)).(map[string]any)
				pinKind(root, gvk{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind})
				root["$schema"] = "http://json-schema.org/draft-04/schema#"
				file := strings.ToLower(crd.Spec.Names.Kind) + kindSuffix(crd.Spec.Group, v.Name) + ".json"
				if err := writeJSON(filepath.Join(out, file), root); err != nil {
					return n, err
				}
				n++
			}
		}
	}
	return n, nil
}

// normalizeYAML turns yaml.v3's decoded values into JSON's (map[string]any).
func normalizeYAML(v any) any {
	switch s := v.(type) {
	case map[string]any:
		for k, sub := range s {
			s[k] = normalizeYAML(sub)
		}
		return s
	case map[any]any:
		m := make(map[string]any, len(s))
		for k, sub := range s {
			m[fmt.Sprint(k)] = normalizeYAML(sub)
		}
		return m
	case []any:
		for i := range s {
			s[i] = normalizeYAML(s[i])
		}
		return s
	default:
		return v
	}
}

func deepCopy(v any) any {
	switch s := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(s))
		for k, sub := range s {
			m[k] = deepCopy(sub)
		}
		return m
	case []any:
		l := make([]any, len(s))
		for i := range s {
			l[i] = deepCopy(s[i])
		}
		return l
	default:
		return v
	}
}

func writeJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

func str(v any) string { s, _ := v.(string); return s }

func containsAny(l []any, s string) bool {
	for _, v := range l {
		if v == s {
			return true
		}
	}
	return false
}
