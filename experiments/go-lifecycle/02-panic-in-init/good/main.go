// Command 02-panic-in-init/good compiles its route table in init() from a valid pattern,
// so main is entered and the program serves until told to stop.
//
// Usage: good [--token T]
//
// Stdout markers: "init: compiling routes", "init: routes ready", "main: entered", "ready",
// then on SIGTERM or SIGINT "cleanup done" (exit 0).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"syscall"
)

const routePattern = `^/api/(?P<resource>[a-z]+)/(?P<id>[0-9]+)$`

var routeRE *regexp.Regexp

func init() {
	fmt.Println("init: compiling routes")
	routeRE = regexp.MustCompile(routePattern)
	fmt.Println("init: routes ready,", routeRE.NumSubexp(), "captures")
}

func main() {
	flag.String("token", "", "opaque token that makes the command line unique")
	flag.Parse()
	fmt.Println("main: entered")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fmt.Println("ready")
	<-ctx.Done()
	fmt.Println("cleanup done")
}
