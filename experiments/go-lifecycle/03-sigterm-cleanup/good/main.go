// Command 03-sigterm-cleanup/good is a small TCP server on 127.0.0.1 that, on SIGTERM or
// SIGINT, returns from main so that its deferred cleanup runs, and exits 0.
//
// Usage: good --port PORT [--token T]
//
// Stdout markers: "init: registering handlers", "main: entered", "ready" (the port is
// listening), then on SIGTERM or SIGINT "shutdown: signal received",
// "cleanup: listener closed", "cleanup done" (exit 0).
package main

import (
	"context"
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

	// Handlers before the listener: once the port answers, a signal is handled.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: listen:", err)
		os.Exit(1)
	}
	defer func() {
		ln.Close()
		fmt.Println("cleanup: listener closed")
	}()
	go serve(ln)
	fmt.Println("ready")

	<-ctx.Done()
	fmt.Println("shutdown: signal received")
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
