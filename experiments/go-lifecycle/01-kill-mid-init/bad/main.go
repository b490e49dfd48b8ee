// Command 01-kill-mid-init/bad loads and rewrites a state file from its init() chain, and
// writes it in place: state.json is truncated and then written chunk by chunk. A SIGKILL
// between the truncation and the last chunk leaves a file cut short, and the next start
// refuses it ("state corrupt") and never reaches "ready".
//
// Usage: bad --dir DIR [--token T]
//
// Stdout markers: "init: loading state", "init: rewriting state", "init: state written",
// "main: entered", "ready", then on SIGTERM or SIGINT "cleanup done" (exit 0).
// A state file that fails validation prints "state corrupt: ..." on stderr and exits 1
// before "ready".
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

var (
	dir   = flag.String("dir", "", "directory holding state.json (required)")
	_     = flag.String("token", "", "opaque token that makes the command line unique")
	state State
)

// State is what the program keeps between runs. Checksum covers every other field, so a
// file cut short or mixed from two generations is detected.
type State struct {
	Generation int      `json:"generation"`
	Records    []string `json:"records"`
	Checksum   string   `json:"checksum"`
}

func (s State) sum() string {
	h := sha256.New()
	fmt.Fprintf(h, "%d\n%s", s.Generation, strings.Join(s.Records, "\n"))
	return hex.EncodeToString(h.Sum(nil))
}

// Chunks and the pause between them make the write take tens of milliseconds, as a larger
// state on a slower disk would; a SIGKILL in the init phase lands inside it most of the time.
const (
	chunkCount = 10
	chunkPause = 3 * time.Millisecond
)

func statePath() string { return filepath.Join(*dir, "state.json") }

// First init: parse flags, load and validate the state, creating it when missing.
func init() {
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: --dir DIR is required")
		os.Exit(2)
	}
	fmt.Println("init: loading state")
	data, err := os.ReadFile(statePath())
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Println("init: no state yet, creating it")
		state = State{Generation: 0, Records: initialRecords()}
		state.Checksum = state.sum()
		if err := writeState(state, false); err != nil {
			fail("create state: %v", err)
		}
		return
	}
	if err != nil {
		fail("read state: %v", err)
	}
	if err := json.Unmarshal(data, &state); err != nil {
		corrupt("%d bytes, not valid JSON: %v", len(data), err)
	}
	if state.Checksum != state.sum() {
		corrupt("checksum mismatch at generation %d", state.Generation)
	}
	fmt.Println("init: state ok, generation", state.Generation)
}

// Second init: bump the generation and write the state back.
func init() {
	fmt.Println("init: rewriting state")
	state.Generation++
	state.Checksum = state.sum()
	if err := writeState(state, true); err != nil {
		fail("write state: %v", err)
	}
	fmt.Println("init: state written, generation", state.Generation)
}

// writeState overwrites state.json in place. The bug: between O_TRUNC and the last chunk
// the file holds neither the old nor the new state.
func writeState(s State, slow bool) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	f, err := os.OpenFile(statePath(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := writeChunks(f, data, slow); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeChunks(f *os.File, data []byte, slow bool) error {
	if !slow {
		_, err := f.Write(data)
		return err
	}
	size := (len(data) + chunkCount - 1) / chunkCount
	for start := 0; start < len(data); start += size {
		end := start + size
		if end > len(data) {
			end = len(data)
		}
		if _, err := f.Write(data[start:end]); err != nil {
			return err
		}
		time.Sleep(chunkPause)
	}
	return nil
}

func initialRecords() []string {
	records := make([]string, 40)
	for i := range records {
		records[i] = fmt.Sprintf("record-%03d: the quick brown fox jumps over the lazy dog", i)
	}
	return records
}

func corrupt(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "state corrupt: "+format+"\n", args...)
	os.Exit(1)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	fmt.Println("main: entered")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fmt.Println("ready")
	<-ctx.Done()
	fmt.Println("cleanup done")
}
