// Command 03-sigterm-cleanup/bad is a small TCP server on 127.0.0.1 whose signal goroutine
// calls os.Exit(0). os.Exit ends the process at once: main's deferred cleanup never runs and
// "cleanup done" is never printed, although the exit code looks fine.
//
// Usage: bad --port PORT [--token T]
//
// Stdout markers: "init: registering handlers", "main: entered", "ready" (the port is
// listening), then on SIGTERM or SIGINT "shutdown: signal received" and nothing more (exit 0).
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func init() {
	fmt.Println("init: registering handlers")
}

func main() {
	port := flag.String("port", "", "loopback port to listen on (required)")
	flag.String("token", "", "opaque token that makes the command line unique")
	flag.Parse()
	fmt.Println("main: entered")
	defer fmt.Println("cleanup done")

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-sigs
		fmt.Println("shutdown: signal received")
		// The bug: os.Exit skips every deferred function of every goroutine.
		os.Exit(0)
	}()

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: listen:", err)
		os.Exit(1)
	}
	defer func() {
		ln.Close()
		fmt.Println("cleanup: listener closed")
	}()
	fmt.Println("ready")
	serve(ln)
}

// serve answers every connection with one line until the listener is closed.
func serve(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintln(conn, "ok")
		conn.Close()
	}
}
