//go:build !race

package swarmsim

const raceEnabled = false
