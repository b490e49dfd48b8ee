// Command 02-panic-in-init/bad compiles its route table in init() from a pattern with a
// missing ")": regexp.MustCompile panics, the runtime prints "panic: ..." on stderr and
// exits with code 2, and main is never entered.
//
// Usage: bad [--token T]
//
// Stdout markers: "init: compiling routes", then nothing: stderr gets
// "panic: regexp: Compile(...): error parsing regexp: missing closing ): ..." (exit 2).
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

// The bug: the id group is never closed.
const routePattern = `^/api/(?P<resource>[a-z]+)/(?P<id>[0-9]+$`

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
