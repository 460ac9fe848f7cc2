package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

func runCompose(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("compose", flag.ContinueOnError)
	printYAML := fs.Bool("print", false, "print the resolved project as YAML (like `docker compose config`)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("compose: one Compose file expected")
	}
	file, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		return err
	}
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithDotEnv,
		cli.WithName("pathling-sync"),
		cli.WithProfiles([]string{"*"}), // validate services of every profile
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	project, err := opts.LoadProject(ctx)
	if err != nil {
		return fmt.Errorf("compose: %s: %w", fs.Arg(0), err)
	}
	if *printYAML {
		out, err := project.MarshalYAML()
		if err != nil {
			return err
		}
		os.Stdout.Write(out)
	}
	fmt.Fprintf(os.Stderr, "compose: %s is valid (%d services: %v)\n", fs.Arg(0), len(project.Services), project.ServiceNames())
	return nil
}
