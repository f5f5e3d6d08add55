package train_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/train"
)

// TestReadMetrics: the one reader of metrics.jsonl skips blank lines, names
// the line it cannot read, and gives nothing for a run without the file.
func TestReadMetrics(t *testing.T) {
	dir := t.TempDir()
	if ms, err := train.ReadMetrics(dir); err != nil || ms != nil {
		t.Errorf("no metrics.jsonl: %v, %v; want no metrics and no error", ms, err)
	}
	path := filepath.Join(dir, train.MetricsFile)
	lines := `{"epoch":0,"step":2,"val_acc":0.5}` + "\n\n" + `{"epoch":1,"step":4,"val_acc":0.75}` + "\n"
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, err := train.ReadMetrics(dir)
	if err != nil || len(ms) != 2 || ms[1].Epoch != 1 || ms[1].Step != 4 || ms[1].ValAcc != 0.75 {
		t.Fatalf("ReadMetrics: %+v, %v; want 2 epochs", ms, err)
	}
	if err := os.WriteFile(path, []byte(lines+"{oops\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := train.ReadMetrics(dir); err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("a bad line: %v; want an error naming line 4", err)
	}
}

// TestManifestConfig: the configuration recorded in a manifest reads back
// as the one written; an unreadable one is an error.
func TestManifestConfig(t *testing.T) {
	c := train.CNNDefaults("fashion2")
	got, err := train.ManifestConfig(&history.Manifest{Config: c.Marshal()})
	if err != nil || string(got.Marshal()) != string(c.Marshal()) {
		t.Errorf("ManifestConfig: %s (%v); want %s", got.Marshal(), err, c.Marshal())
	}
	if _, err := train.ManifestConfig(&history.Manifest{Config: []byte(`{"task": 3}`)}); err == nil || !strings.Contains(err.Error(), "configuration is unreadable") {
		t.Errorf("an unreadable configuration: %v", err)
	}
}
