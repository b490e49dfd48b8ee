// Command 07-signal-after-exit/good does a short job (writes result.txt in DIR), prints
// "done" and exits 0 by itself. Faults aimed at it after it exited must be recorded by
// atropos as zombie / already_finished, never as a harness error.
//
// Usage: good --dir DIR [--token T]
//
// Stdout markers: "main: entered", "working", "done" (exit 0).
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
}

// flush writes the result and closes the file; its error is the one that matters.
func flush(f *os.File, result string) error {
	if _, err := f.WriteString(result); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
