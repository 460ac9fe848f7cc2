// Command deploycheck supports scripts/ci-deploy.sh, offline:
//
//	deploycheck k8s-schemas -swagger swagger.json -crds dir[,dir] -out dir
//
// turns Kubernetes' OpenAPI v2 document (api/openapi-spec/swagger.json of the
// k8s.io/kubernetes module) and CustomResourceDefinition manifests (e.g.
// prometheus-operator's) into the JSON Schema files kubeconform reads with
// -schema-location '<dir>/{{ .ResourceKind }}{{ .KindSuffix }}.json', as
// kubeconform's default registry lays them out, strict (unknown fields are
// errors) and self-contained (each file carries the definitions it uses).
//
//	deploycheck compose [-print] compose.yaml
//
// loads a Compose file with compose-go, the loader of `docker compose`: the
// Compose Specification's JSON Schema, interpolation, and the semantic checks
// (unknown services in depends_on, undeclared volumes and networks, ...).
//
// It is a separate module so that the service's go.mod stays free of its
// dependencies.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "k8s-schemas":
		err = runK8sSchemas(os.Args[2:])
	case "compose":
		err = runCompose(context.Background(), os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploycheck:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: deploycheck k8s-schemas -swagger FILE [-crds DIR,...] -out DIR | deploycheck compose [-print] FILE")
	os.Exit(2)
}
