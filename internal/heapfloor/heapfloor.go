// Package heapfloor keeps the Go collector from running every few MB in
// explaind's jobs.
//
// The runtime starts a collection whenever the heap has grown by GOGC %
// of the live heap, and explaind's jobs hold little (a few MB while an EPK
// job streams over steps) while allocating hundreds of MB per step: the
// runtime collected every few MB (90 times per step of the demo's run) and
// its scavenger handed the freed pages back to the kernel, to fault them
// in again at once. Set allocates a heap ballast of Bytes that counts as
// live heap but is never touched, so it takes address space and no
// memory: a collection then comes every Bytes or more, at the cost of about
// Bytes more resident memory (the heap may grow to twice the live heap
// plus the floor, of which the floor itself is never touched; with the
// runtime's own slack, measured +110 MB on an EPK job, +250 MB on a
// training run, +360 MB over the whole demo, 294 → 654 MB). Measured on
// the demo's run, 256 validation samples × 20 steps: 49.3 s → 26.3 s
// (system time 14.0 → 4.6 s), peak RSS 238 → 347 MB; 150 epochs of its
// training 8.0 → 6.5 s, 68 → 320 MB; the demo 193 → 117 s.
package heapfloor

// Bytes is the size of the floor.
const Bytes = 256 << 20

var floor []byte

// Set allocates the floor, once. Called first thing in a process, the
// large allocation comes straight from the kernel, already zero, so the
// runtime does not clear it and no page of it becomes resident; later, it
// may reuse (and clear) memory the process freed.
func Set() {
	if floor == nil {
		floor = make([]byte, Bytes)
	}
}
