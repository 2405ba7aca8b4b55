// Package events holds Weft's domain vocabulary: the coded error type, and
// (as the engine grows) message types, subjects and stream definitions. It
// depends on nothing of ours and on no driver, so every other package can
// import it.
package events
