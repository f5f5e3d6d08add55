// Package lock gives every output of explaind one writer at a time: a
// process about to write a directory (a run, an EPK output, an
// experiment's --out) or a file (a report) first takes an exclusive lock
// on a lock file there, and a second process is refused with the first
// one's PID instead of interleaving its files with the first one's.
//
// The lock is flock(2) on DIR/.explaind.lock (for a file F, on
// .F.explaind.lock beside it), which holds the holder's PID. The kernel
// releases it when the holder exits, however it exits, so the file of a
// killed process does not block the next one: the next holder overwrites
// its PID. A clean Release removes the lock file again. Readers take no
// lock. Lock files are not outputs: ReadDir and RemoveContents leave them
// out, for the checks of whether a directory is empty or holds an output.
//
// Acquiring never waits: a lock held by another process (or by another
// goroutine of this one: a Lock is not reentrant) is an error *HeldError.
package lock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/explaind/explaind/internal/atomicfile"
)

// Name is the lock file of a directory.
const Name = ".explaind.lock"

// suffix ends the name of every lock file: Name, and .F.explaind.lock
// for a file F.
const suffix = ".explaind.lock"

// A Lock is a held lock; Release gives it up.
type Lock struct {
	f    *os.File
	path string
	// created lists the directories Dir or File made, deepest first;
	// Release removes those left empty.
	created []string
}

// HeldError is the error of a lock held by another process (or by another
// Lock of this one).
type HeldError struct {
	// Target is the directory or file locked.
	Target string
	// PID is the holder's process ID (0: unknown).
	PID int
}

func (e *HeldError) Error() string {
	who := "another explaind process"
	if e.PID > 0 {
		who = fmt.Sprintf("another explaind process (PID %d)", e.PID)
	}
	return fmt.Sprintf("%s is writing to %s; wait for it to finish or stop it", who, e.Target)
}

// Dir locks the directory dir for writing, creating it (and its parents)
// if needed. As the one writer of dir, the holder then owns what earlier
// writers left half-done: Dir removes the temporary files of writers
// killed mid-write (atomicfile.RemoveTemps), so that a resume finds dir
// as the killed writer's last completed write left it.
func Dir(dir string) (*Lock, error) {
	l, err := acquire(dir, filepath.Join(dir, Name), dir)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.RemoveTemps(dir); err != nil {
		l.Release()
		return nil, err
	}
	return l, nil
}

// File locks the file path for writing (its directory is created if
// needed): the lock file is .NAME.explaind.lock beside it, so that a
// file can be locked inside a directory locked by someone else.
func File(path string) (*Lock, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	return acquire(dir, filepath.Join(dir, "."+base+suffix), path)
}

// IsLockFile reports whether the base name name is that of a lock file.
func IsLockFile(name string) bool {
	return strings.HasPrefix(name, ".") && strings.HasSuffix(name, suffix)
}

// ReadDir is os.ReadDir less the lock files: what dir holds as output.
func ReadDir(dir string) ([]os.DirEntry, error) {
	entries, err := os.ReadDir(dir)
	out := entries[:0]
	for _, e := range entries {
		if !IsLockFile(e.Name()) {
			out = append(out, e)
		}
	}
	return out, err
}

// RemoveContents removes everything in dir except the lock files, so
// that a writer holding dir's lock can empty it and keep the lock.
func RemoveContents(dir string) error {
	entries, err := ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// acquire takes the lock file path in dir, for target.
func acquire(dir, path, target string) (*Lock, error) {
	l := &Lock{path: path}
	for attempt := 0; ; attempt++ {
		made, err := mkdirAll(dir)
		if err != nil {
			return nil, fmt.Errorf("cannot lock %s: %w", target, err)
		}
		if l.created == nil {
			l.created = made
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if errors.Is(err, fs.ErrNotExist) && attempt < 100 {
			continue // a holder releasing its lock removed the directory it made
		}
		if err != nil {
			return nil, fmt.Errorf("cannot lock %s: %w", target, err)
		}
		held, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("cannot lock %s: %w", target, err)
		}
		if held {
			pid := readPID(f)
			f.Close()
			return nil, &HeldError{Target: target, PID: pid}
		}
		// Between our open and our flock, a holder may have released the
		// lock and removed its file: then ours is a lock on a file no one
		// else will open, and we start again.
		if same(f, path) {
			l.f = f
			break
		}
		f.Close()
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := l.f.Truncate(0); err != nil {
		l.Release()
		return nil, fmt.Errorf("cannot lock %s: %w", target, err)
	}
	if _, err := l.f.WriteAt(pid, 0); err != nil {
		l.Release()
		return nil, fmt.Errorf("cannot lock %s: %w", target, err)
	}
	return l, nil
}

// mkdirAll is os.MkdirAll returning the directories it made, deepest
// first.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return missing, nil
}

// same reports whether the open file f is still the file at path.
func same(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

// readPID reads the PID a holder wrote into its lock file; a holder that
// has just taken the lock writes it a moment later, so an empty file is
// read again for up to a tenth of a second. 0 means unknown.
func readPID(f *os.File) int {
	buf := make([]byte, 32)
	for range 20 {
		n, _ := f.ReadAt(buf, 0)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n]))); err == nil && pid > 0 {
			return pid
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0
}

// Release gives the lock up: it removes the lock file (while still
// holding it, so no one takes a lock on a file about to vanish), closes
// it, which releases the flock, and removes the directories Dir or File
// made that are still empty. Releasing a nil or released Lock does
// nothing.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := os.Remove(l.path)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	for _, d := range l.created {
		if os.Remove(d) != nil {
			break
		}
	}
	return err
}
