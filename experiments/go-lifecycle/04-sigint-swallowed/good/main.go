// Command 04-sigint-swallowed/good runs a worker until SIGINT or SIGTERM; its signal
// goroutine cancels a context, main sees the context done, returns, and the process exits 0.
//
// Usage: good [--token T]
//
// Stdout markers: "init: starting", "main: entered", "ready", then on SIGINT or SIGTERM
// "signal: interrupt" / "signal: terminated", "shutdown: context cancelled",
// "cleanup done" (exit 0).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
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
		s := <-sigs
		fmt.Println("signal:", s)
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
