// Package localpath checks that a file name read from a manifest or
// summary stays inside the directory that holds it.
//
// explaind's output directories name their files in JSON (a run's
// checkpoints, an EPK output's arrays, an experiment's results). Those
// files are read back, and rewritten, relative to the directory; a name
// that is absolute, climbs out with "..", or passes through a symbolic
// link that points elsewhere would read or overwrite a file that is not the
// directory's own. Check refuses all three before anything is opened.
package localpath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Check returns an error unless name is a relative path inside dir: local
// in the sense of filepath.IsLocal (not absolute, not empty, no ".."
// climbing above dir) and, with every symbolic link along it resolved,
// still inside dir. A name that does not exist yet is judged by its text
// and its existing parents only (and a missing dir holds no link), so a
// reader reports a missing file in its own words. The error says what name is and why it is refused; callers
// add which file named it.
func Check(dir, name string) error {
	if !filepath.IsLocal(name) {
		return fmt.Errorf("%q is not a path inside %s", name, dir)
	}
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing inside to lead out
	}
	if err != nil {
		return err
	}
	defer root.Close()
	// Root.Stat follows symbolic links but refuses to leave the root.
	if _, err := root.Stat(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("%q is not a path inside %s: %v", name, dir, err)
	}
	return nil
}

// ReadFile reads the file name of dir after Check. Its errors are those of
// Check and of os.ReadFile (a missing file's wraps fs.ErrNotExist).
func ReadFile(dir, name string) ([]byte, error) {
	if err := Check(dir, name); err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(dir, name))
}
