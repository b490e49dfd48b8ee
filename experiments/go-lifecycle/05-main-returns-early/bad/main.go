// Command 05-main-returns-early/bad acknowledges a record every 5ms and hands each to a
// goroutine that persists it (20ms, then one file per record). On SIGTERM or SIGINT it stops
// acknowledging and returns from main at once. main returning ends the process with the
// goroutines still in their write: the last few acknowledged records are never persisted.
//
// Usage: bad --dir DIR [--token T]
//
// Files in DIR: acks.log ("ack N" per acknowledged record, written before the
// acknowledgement is printed) and record-N per persisted record.
// Stdout markers: "main: entered", "ready", "ack 1", "ack 2", ..., then on SIGTERM or SIGINT
// "shutdown: returning", "cleanup done" (exit 0).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

const (
	ackEvery    = 5 * time.Millisecond
	persistTime = 20 * time.Millisecond
	maxRecords  = 2000
)

func main() {
	dir := flag.String("dir", "", "directory for acks.log and the record files (required)")
	flag.String("token", "", "opaque token that makes the command line unique")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: --dir DIR is required")
		os.Exit(2)
	}
	fmt.Println("main: entered")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	acks, err := os.OpenFile(filepath.Join(*dir, "acks.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: open acks.log:", err)
		os.Exit(1)
	}
	defer acks.Close()

	var inflight sync.WaitGroup
	fmt.Println("ready")
	tick := time.NewTicker(ackEvery)
	defer tick.Stop()
	acked := 0
produce:
	for acked < maxRecords {
		select {
		case <-ctx.Done():
			break produce
		case <-tick.C:
		}
		acked++
		inflight.Add(1)
		go persist(*dir, acked, &inflight)
		if _, err := fmt.Fprintf(acks, "ack %d\n", acked); err != nil {
			fmt.Fprintln(os.Stderr, "error: write acks.log:", err)
			os.Exit(1)
		}
		fmt.Println("ack", acked)
	}
	<-ctx.Done()

	// The bug: no inflight.Wait(); returning from main kills the persisting goroutines.
	fmt.Println("shutdown: returning")
	fmt.Println("cleanup done")
}

// persist stands for a slow write: after persistTime the record appears as record-N,
// complete (written to a temporary name, then renamed).
func persist(dir string, id int, done *sync.WaitGroup) {
	defer done.Done()
	time.Sleep(persistTime)
	final := filepath.Join(dir, fmt.Sprintf("record-%d", id))
	tmp := final + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("record %d\n", id)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "error: persist:", err)
		return
	}
	if err := os.Rename(tmp, final); err != nil {
		fmt.Fprintln(os.Stderr, "error: persist:", err)
	}
}
