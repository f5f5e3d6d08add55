// Package progress draws explaind's progress bars, one look for every
// command: a description, the count done of the total and an estimate of
// the time left, redrawn at most twice a second and cleared when done.
package progress

import (
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// New returns a bar on w counting to total, described by what; opts add
// to (or override) the common look.
func New(w io.Writer, total int, what string, opts ...progressbar.Option) *progressbar.ProgressBar {
	base := []progressbar.Option{progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(), progressbar.OptionThrottle(500 * time.Millisecond), progressbar.OptionClearOnFinish()}
	return progressbar.NewOptions(total, append(base, opts...)...)
}

// Func returns a callback for the Progress fields of explaind's jobs
// (func(done, total int)): the first call draws a bar of the total on w,
// every call sets it to done, and the bar is finished once done reaches
// the total. A nil w gives a nil callback: no bar.
func Func(w io.Writer, what string) func(done, total int) {
	if w == nil {
		return nil
	}
	var bar *progressbar.ProgressBar
	return func(done, total int) {
		if bar == nil {
			bar = New(w, total, what)
		}
		bar.Set(done)
		if done == total {
			bar.Finish()
		}
	}
}
