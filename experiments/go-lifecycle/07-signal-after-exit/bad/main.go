// Command 07-signal-after-exit/bad does a short job (writes result.txt in DIR), prints
// "done", and then closes the result file a second time and checks that error: "file
// already closed" turns a finished job into exit code 1. Faults aimed at it after it exited
// must still be recorded by atropos as zombie / already_finished, never as a harness error;
// the verdict fails on the exit code alone.
//
// Usage: bad --dir DIR [--token T]
//
// Stdout markers: "main: entered", "working", "done"; stderr
// "error: close .../result.txt: file already closed" (exit 1).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func main() {
	dir := flag.String("dir", "", "directory for result.txt (required)")
	flag.String("token", "", "opaque token that makes the command line unique")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: --dir DIR is required")
		os.Exit(2)
	}
	fmt.Println("main: entered")
	f, err := os.Create(filepath.Join(*dir, "result.txt"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Println("working")
	time.Sleep(20 * time.Millisecond)
	if err := flush(f, "42\n"); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Println("done")
	// The bug: flush already closed f; a second Close always fails.
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// flush writes the result and closes the file; its error is the one that matters.
func flush(f *os.File, result string) error {
	if _, err := f.WriteString(result); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
