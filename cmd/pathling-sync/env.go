package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pathling-sync/pathling-sync/config"
)

func newEnvCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "env",
		Short: "List every environment variable the configuration reads, as a Markdown table",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			writeEnvTable(g.stdout)
			return nil
		},
	}
}

// writeEnvTable writes the reference the README's configuration section holds.
func writeEnvTable(w io.Writer) {
	fmt.Fprintln(w, "| variable | key | default | meaning |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, v := range config.EnvReference() {
		d := v.Default
		if d != "" {
			d = "`" + d + "`"
		}
		fmt.Fprintf(w, "| `%s` | `%s` | %s | %s |\n", v.Name, v.Key, d, strings.ReplaceAll(v.Help, "|", `\|`))
	}
}
