package atomicfile

import (
	"io"
	"sync/atomic"
)

// fault holds the function installed by SetFault, if any.
var fault atomic.Pointer[func(path string) error]

// SetFault makes every later Write of a path for which fail returns an
// error fail as a full disk would: the temporary file takes half of the
// first block written to it and the write then returns that error (say
// syscall.ENOSPC). It is a hook for tests of what a failed write leaves
// behind; nil removes it. It returns a function that restores the hook
// it replaced. Write is unchanged while no hook is set.
func SetFault(fail func(path string) error) (restore func()) {
	var p *func(string) error
	if fail != nil {
		p = &fail
	}
	old := fault.Swap(p)
	return func() { fault.Store(old) }
}

// faulty returns w, or a writer that fails as SetFault says for path.
func faulty(path string, w io.Writer) io.Writer {
	if f := fault.Load(); f != nil {
		if err := (*f)(path); err != nil {
			return &failingWriter{w: w, err: err}
		}
	}
	return w
}

// failingWriter writes half of its first block to w, then fails.
type failingWriter struct {
	w   io.Writer
	err error
}

func (f *failingWriter) Write(b []byte) (int, error) {
	n, _ := f.w.Write(b[:len(b)/2])
	return n, f.err
}
