// Package atomicfile writes files so that readers see either the old file or
// the complete new one, never a half-written file: data goes to a temporary
// file in the same directory, which is synced and renamed over the target,
// and the directory is synced, so that the rename survives a crash.
//
// A writer killed mid-write (SIGKILL, power loss) leaves its temporary file
// behind, named .NAME.tmp-RANDOM; IsTemp recognizes such names and
// RemoveTemps clears them, for the next writer of the directory.
package atomicfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// tempMark is what every temporary file's name holds after the target's name.
const tempMark = ".tmp-"

// Write creates or replaces path with what write produces. On any error the
// temporary file is removed and path is left as it was.
func Write(path string, write func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+tempMark+"*")
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(faulty(path, tmp), 1<<20)
	if err = write(bw); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = tmp.Chmod(0o644); err != nil { // CreateTemp makes files 0600
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// syncDir syncs the directory dir, making a rename in it durable.
// File systems that cannot sync a directory (EINVAL) are passed over.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) {
		return nil
	}
	return err
}

// IsTemp reports whether the base name name is that of a temporary file
// of Write: .NAME.tmp-RANDOM.
func IsTemp(name string) bool {
	i := strings.LastIndex(name, tempMark)
	return strings.HasPrefix(name, ".") && i > 1 && i+len(tempMark) < len(name)
}

// RemoveTemps removes the temporary files that killed writers left in dir
// and in the directories below it (links are not followed). Only the one
// writer of dir may call it (see internal/lock): another writer's
// temporary file would be removed under it.
func RemoveTemps(dir string) error {
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() && IsTemp(d.Name()) {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("removing the temporary files a killed writer left in %s: %w", dir, err)
	}
	return nil
}

// WriteBytes is Write for data already in memory.
func WriteBytes(path string, data []byte) error {
	return Write(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Rename renames oldpath to newpath (in the same directory) and syncs the
// directory, so that the rename survives a crash: the commit of a file the
// caller wrote and synced itself.
func Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(newpath)); err != nil {
		return fmt.Errorf("renaming %s: %w", newpath, err)
	}
	return nil
}
