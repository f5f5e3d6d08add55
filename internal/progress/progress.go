// Package progress shows explaind's progress, one look for every command.
// On a terminal it is a bar: a description, the count done of the total
// and an estimate of the time left, redrawn in place at most twice a
// second and cleared when done. Anywhere else (a log file, a pipe, a job
// scheduler's output) redrawing in place would fill the log with carriage
// returns, so it is plain lines instead, one each time another tenth of
// the total is done or every 30 seconds, whichever comes first:
//
//	training: 300/1000 steps (30%), 41.2 steps/s, ETA 17s
//
// and a last line when the total is reached:
//
//	training: 1000/1000 steps (100%) in 24s, 41.7 steps/s
//
// The rate is the count done by this process over the time since the
// display was created, r = (n − n₀)/t, and the time left (total − n)/r.
package progress

import (
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Every is the longest time between two plain lines.
const Every = 30 * time.Second

// isTerminal decides whether w is a terminal, which gets the redrawn bar.
// Tests replace it.
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// now is the clock of the plain lines. Tests replace it.
var now = time.Now

// A Bar shows the progress of one job on a writer: a bar on a terminal,
// plain lines elsewhere. Its methods may be called from several
// goroutines.
type Bar struct {
	bar *progressbar.ProgressBar // on a terminal, else nil

	mu         sync.Mutex
	w          io.Writer
	what, unit string
	total      int
	n, n0      int       // done, and done when the bar was made
	t0, last   time.Time // when the bar was made and the last line written
	next       int       // the count at which the next tenth is reached
	finished   bool
}

// New returns the progress of a job of total items on w, described by
// what, with done items already done (by an earlier process: a job
// resumed); unit names the items in the count and the rate ("steps"), or
// is "".
func New(w io.Writer, total, done int, what, unit string) *Bar {
	if isTerminal(w) {
		opts := []progressbar.Option{progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(), progressbar.OptionThrottle(500 * time.Millisecond), progressbar.OptionClearOnFinish()}
		if unit != "" {
			opts = append(opts, progressbar.OptionSetItsString(unit), progressbar.OptionShowIts())
		}
		b := &Bar{bar: progressbar.NewOptions(total, opts...)}
		if done > 0 {
			b.bar.Set(done)
		}
		return b
	}
	t := now()
	b := &Bar{w: w, what: what, unit: unit, total: total, n: done, n0: done, t0: t, last: t}
	b.next = b.tenthAfter(done)
	return b
}

// tenthAfter returns the first count after n at a whole tenth of the total.
func (b *Bar) tenthAfter(n int) int {
	if b.total <= 0 {
		return math.MaxInt
	}
	k := n*10/b.total + 1
	return (k*b.total + 9) / 10
}

// Set sets the count done to n.
func (b *Bar) Set(n int) {
	if b.bar != nil {
		b.bar.Set(n)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n = n
	t := now()
	if b.finished || n >= b.total {
		return // Finish writes the last line
	}
	if n >= b.next || t.Sub(b.last) >= Every {
		b.line(t, false)
		b.last = t
		b.next = b.tenthAfter(n)
	}
}

// Add adds n to the count done.
func (b *Bar) Add(n int) {
	if b.bar != nil {
		b.bar.Add(n)
		return
	}
	b.mu.Lock()
	m := b.n + n
	b.mu.Unlock()
	b.Set(m)
}

// Describe replaces the description.
func (b *Bar) Describe(what string) {
	if b.bar != nil {
		b.bar.Describe(what)
		return
	}
	b.mu.Lock()
	b.what = what
	b.mu.Unlock()
}

// Clear erases the bar from a terminal until its next redraw, so that a
// line printed meanwhile does not land on it; elsewhere it does nothing.
func (b *Bar) Clear() {
	if b.bar != nil {
		b.bar.Clear()
	}
}

// Finish ends the display: it clears the bar, or writes the last line.
func (b *Bar) Finish() {
	if b.bar != nil {
		b.bar.Finish()
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.finished {
		b.finished = true
		b.line(now(), true)
	}
}

// line writes one plain line at time t.
func (b *Bar) line(t time.Time, last bool) {
	unit := ""
	if b.unit != "" {
		unit = " " + b.unit
	}
	s := fmt.Sprintf("%s: %d/%d%s", b.what, b.n, b.total, unit)
	if b.total > 0 {
		s += fmt.Sprintf(" (%d%%)", 100*b.n/b.total)
	}
	el := t.Sub(b.t0)
	if last {
		s += fmt.Sprintf(" in %v", el.Round(time.Second))
	}
	if rate := float64(b.n-b.n0) / max(el.Seconds(), 1e-9); rate > 0 {
		s += fmt.Sprintf(", %.3g%s/s", rate, unit)
		if !last && b.total > b.n {
			eta := time.Duration(float64(b.total-b.n) / rate * float64(time.Second))
			s += fmt.Sprintf(", ETA %v", eta.Round(time.Second))
		}
	}
	fmt.Fprintln(b.w, s)
}

// Func returns a callback for the Progress fields of explaind's jobs
// (func(done, total int)): the first call starts the progress of the
// total on w, every call sets it to done, and it is finished once done
// reaches the total. The rate is counted from the first call, the first
// moment known. A nil w gives a nil callback: no progress shown.
func Func(w io.Writer, what string) func(done, total int) {
	if w == nil {
		return nil
	}
	var bar *Bar
	return func(done, total int) {
		if bar == nil {
			bar = New(w, total, done, what, "")
		}
		bar.Set(done)
		if done == total {
			bar.Finish()
		}
	}
}
