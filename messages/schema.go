package messages

import (
	"embed"
	"io/fs"
)

// Names of the published JSON Schemas (draft 2020-12), one per event body. The files are
// schemas/<name>.schema.json; each schema's $id is "urn:pathling-sync:schema:<name>:v1".
const (
	SchemaRequested = "sync-requested"
	SchemaCompleted = "sync-completed"
	SchemaFailed    = "sync-failed"
)

//go:embed schemas/*.schema.json
var schemaFiles embed.FS

// SchemaNames returns the names of the published schemas.
func SchemaNames() []string {
	return []string{SchemaRequested, SchemaCompleted, SchemaFailed}
}

// Schema returns the JSON Schema document of the named event body (a fresh copy), or nil for an
// unknown name.
func Schema(name string) []byte {
	b, err := schemaFiles.ReadFile("schemas/" + name + ".schema.json")
	if err != nil {
		return nil
	}
	return b
}

// SchemaFS returns the schema files, named <name>.schema.json, for serving or bundling.
func SchemaFS() fs.FS {
	sub, err := fs.Sub(schemaFiles, "schemas")
	if err != nil {
		panic("messages: embedded schemas: " + err.Error()) // cannot happen: the path is a literal
	}
	return sub
}
