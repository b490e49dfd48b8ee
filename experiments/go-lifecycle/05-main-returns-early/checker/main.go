// Command 05-main-returns-early/checker is the experiment's "nothing lost" probe: every
// record listed in DIR/acks.log ("ack N" lines) must have been persisted as DIR/record-N.
// It prints one line on stdout (the verdict, with the missing ids) and exits 0 when none is
// missing, 1 when some are, 2 on bad input (message on stderr).
//
// Usage: checker --dir DIR
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	dir := flag.String("dir", "", "the trial directory the program wrote to (required)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: --dir DIR is required")
		os.Exit(2)
	}
	if info, err := os.Stat(*dir); err != nil || !info.IsDir() {
		fmt.Fprintf(os.Stderr, "error: %s is not a directory\n", *dir)
		os.Exit(2)
	}
	f, err := os.Open(filepath.Join(*dir, "acks.log"))
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Println("no record acknowledged")
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	defer f.Close()

	acked := 0
	var lost []string
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		id := strings.TrimPrefix(lines.Text(), "ack ")
		if id == lines.Text() || id == "" {
			fmt.Fprintf(os.Stderr, "error: acks.log: unexpected line %q\n", lines.Text())
			os.Exit(2)
		}
		acked++
		if _, err := os.Stat(filepath.Join(*dir, "record-"+id)); err != nil {
			lost = append(lost, id)
		}
	}
	if err := lines.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "error: read acks.log:", err)
		os.Exit(2)
	}
	if len(lost) > 0 {
		fmt.Printf("%d of %d acknowledged records not persisted: %s\n", len(lost), acked, strings.Join(lost, " "))
		os.Exit(1)
	}
	fmt.Printf("all %d acknowledged records persisted\n", acked)
}
