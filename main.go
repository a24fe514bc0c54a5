// Command wecom-bridge connects a WeCom (企业微信) self-built app to an LLM
// backend (Dify or any OpenAI-compatible API).
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "version" || args[0] == "-version" || args[0] == "--version") {
		fmt.Fprintf(stdout, "wecom-bridge %s\n", version)
		return 0
	}
	fmt.Fprintln(stderr, "usage: wecom-bridge version")
	return 2
}
