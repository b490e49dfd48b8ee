// Command 04-sigint-swallowed/bad handles SIGTERM by cancelling a context, but on SIGINT its
// signal goroutine calls runtime.Goexit(), meaning "stop here, the defers will clean up".
// Goexit ends only that goroutine: nothing cancels the context, signal.Notify keeps SIGINT
// caught so the default "exit on Ctrl-C" never happens either, and the process runs on
// until something kills it.
//
// Usage: bad [--token T]
//
// Stdout markers: "init: starting", "main: entered", "ready"; on SIGTERM "signal: terminated",
// "shutdown: context cancelled", "cleanup done" (exit 0); on SIGINT "signal: interrupt",
// "signal goroutine: exiting", and then it hangs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

func init() {
	fmt.Println("init: starting")
}

func main() {
	flag.String("token", "", "opaque token that makes the command line unique")
	flag.Parse()
	fmt.Println("main: entered")

	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		defer fmt.Println("signal goroutine: exiting")
		s := <-sigs
		fmt.Println("signal:", s)
		if s == os.Interrupt {
			// The bug: Goexit runs this goroutine's defers and ends it; main never hears.
			runtime.Goexit()
		}
		cancel()
	}()
	go work(ctx)
	fmt.Println("ready")

	<-ctx.Done()
	fmt.Println("shutdown: context cancelled")
	fmt.Println("cleanup done")
}

// work stands for the program's real job: it ticks until the context is cancelled.
func work(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
