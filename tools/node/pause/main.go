// pause is PID 1 of every pod sandbox: it holds the pod's namespaces open, reaps the zombies
// that get reparented to it, and exits 0 on SIGINT/SIGTERM. It does what the upstream pause
// image's C program does, in Go with no dependencies, so it builds like everything else here.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const version = "gru-pause 1.0"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println(version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not running as PID 1")
	}
	// Buffered: signals that arrive while reaping are kept, and SIGCHLDs coalesce anyway,
	// which is why reap() loops until no exited child is left.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	reap() // children that exited before the handler was in place
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "pause: shutting down, got signal: %v\n", sig)
		os.Exit(0)
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil { // 0: children left but none exited; ECHILD: no children
			return
		}
	}
}
