// Command 06-already-finished-child/bad supervises one child (itself, re-executed as
// "child-worker --token T") and reaps it from a goroutine. On SIGTERM or SIGINT it kills
// the child and treats every error from Kill as impossible: when the child has already
// died and been reaped, Kill returns os.ErrProcessDone and the supervisor panics with
// "panic: os: process already finished" (exit 2).
//
// Usage: bad [--token T]
//
// Stdout markers: "main: entered", "child: started pid N", "ready", then on SIGTERM or
// SIGINT "shutdown: stopping child", "child: stopped", "cleanup done" (exit 0) while the
// child lives; once it has died, a panic on stderr instead. The child prints nothing.
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

// childLife bounds the child even if nobody stops it.
const childLife = 30 * time.Second

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child-worker" {
		time.Sleep(childLife)
		return
	}
	token := flag.String("token", "", "opaque token passed on to the child's command line")
	flag.Parse()
	fmt.Println("main: entered")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	child, err := startChild(*token)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: start child:", err)
		os.Exit(1)
	}
	fmt.Println("child: started pid", child.Process.Pid)
	reaped := make(chan struct{})
	go func() {
		err := child.Wait()
		fmt.Println("child: exited:", err)
		close(reaped)
	}()
	fmt.Println("ready")

	<-ctx.Done()
	fmt.Println("shutdown: stopping child")
	// The bug: a child that already finished is "done", not a reason to crash.
	if err := child.Process.Kill(); err != nil {
		panic(err)
	}
	fmt.Println("child: stopped")
	<-reaped
	fmt.Println("cleanup done")
}

// startChild re-executes this binary as the child. Its stdio is /dev/null, so it holds
// none of the supervisor's pipes open.
func startChild(token string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "child-worker", "--token", token)
	return cmd, cmd.Start()
}
