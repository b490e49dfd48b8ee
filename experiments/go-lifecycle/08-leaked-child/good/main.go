// Command 08-leaked-child/good starts a background indexer from init(): a child process
// (itself, re-executed as "leak-indexer --token T") in a session of its own, plus a
// heartbeat goroutine. On SIGTERM or SIGINT main kills the indexer and waits for it before
// exiting, so nothing outlives the program.
//
// Usage: good [--token T]
//
// Stdout markers: "init: starting background indexer", "init: indexer started pid N",
// "main: entered", "ready", then on SIGTERM or SIGINT "cleanup: indexer stopped",
// "cleanup done" (exit 0). The indexer prints nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

// indexerLife bounds the indexer even if nobody stops it.
const indexerLife = 30 * time.Second

var (
	token   = flag.String("token", "", "opaque token passed on to the indexer's command line")
	indexer *exec.Cmd
)

// The indexer is this same binary: when started as one, sleep and never reach main.
func init() {
	if len(os.Args) > 1 && os.Args[1] == "leak-indexer" {
		time.Sleep(indexerLife)
		os.Exit(0)
	}
}

func init() {
	flag.Parse()
	fmt.Println("init: starting background indexer")
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: find own executable:", err)
		os.Exit(1)
	}
	indexer = exec.Command(self, "leak-indexer", "--token", *token)
	// Its own session: outside the target's process group, so only a subreaper or a
	// cgroup can still tell that it belongs to this trial.
	indexer.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := indexer.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "error: start indexer:", err)
		os.Exit(1)
	}
	fmt.Println("init: indexer started pid", indexer.Process.Pid)
	go heartbeat()
}

// heartbeat is the goroutine half of the background work; it ends with the process.
func heartbeat() {
	for range time.Tick(10 * time.Millisecond) {
	}
}

func main() {
	fmt.Println("main: entered")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fmt.Println("ready")
	<-ctx.Done()

	if err := indexer.Process.Kill(); err != nil {
		fmt.Fprintln(os.Stderr, "error: kill indexer:", err)
	}
	_ = indexer.Wait() // "signal: killed" is the expected outcome
	fmt.Println("cleanup: indexer stopped")
	fmt.Println("cleanup done")
}
