package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExperimentSummaryLinkedOut: an experiment directory whose
// summary.json is a symbolic link to a file outside it is refused, naming
// the file, instead of being read into the report.
func TestExperimentSummaryLinkedOut(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(root, "secret.json")
	if err := os.WriteFile(outside, []byte(`{"complete": true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "exp")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "summary.json")); err != nil {
		t.Fatal(err)
	}
	e, err := readExperiment(dir)
	if err == nil || !strings.Contains(err.Error(), "summary.json") {
		t.Fatalf("summary.json linked out of the experiment: got %+v, %v; want an error naming it", e, err)
	}
	// The same file inside the directory is read.
	if err := os.Remove(filepath.Join(dir, "summary.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.json"), []byte(`{"complete": true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readExperiment(dir); err != nil {
		t.Fatalf("a plain summary.json: %v", err)
	}
}
