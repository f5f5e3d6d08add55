package retrain_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/experiments/retrain"
)

// TestResumeRefusesLinksOut: an output directory whose progress.json, or
// summary.json, is a symbolic link leading out of it is refused before the
// file is read, with an error naming the file.
func TestResumeRefusesLinksOut(t *testing.T) {
	r, opt := resumeJob(t)
	for _, name := range []string{retrain.ProgressFile, retrain.SummaryFile} {
		parent := t.TempDir()
		dir := filepath.Join(parent, "out")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		outside := filepath.Join(parent, "elsewhere.json")
		if err := os.WriteFile(outside, []byte(`{"command": "retrain"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		rows, err := retrain.Resume(dir, r, opt)
		if err == nil || !strings.Contains(err.Error(), `"`+name+`" is not a path inside `+dir) {
			t.Errorf("%s linked out of the directory: rows %v, error %v; want an error naming it", name, rows, err)
		}
	}
}
