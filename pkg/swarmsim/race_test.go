//go:build race

package swarmsim

// The simulator is one goroutine: the race detector only slows it down.
const raceEnabled = true
