// Command testbin is every small program the live-cluster test needs inside
// images, chosen by the name it is run as (like busybox), so one static
// build serves them all and nothing comes from the internet:
//
//	pause  the pod sandbox: sleeps until told to stop
//	etcd   etcd itself (the chart's etcd StatefulSet), from the etcd module Shoal already uses
//	hello  the test workload: prints a line and its arguments, then sleeps
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "etcd":
		etcdmain.Main(os.Args)
	case "hello":
		fmt.Println("hello from a pod pulled through shoal", os.Args[1:])
		wait()
	default:
		wait()
	}
}

// wait blocks until SIGTERM or SIGINT: a pause container and a workload
// that stays Ready until the test deletes it.
func wait() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
