package agent

// FlipByte lets the external tests corrupt a cached blob as cache_test.go
// does.
var FlipByte = flipByte
