package train_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/train"
)

// TestOneWriterPerRun: while another writer holds a run directory's lock,
// training into it and resuming it are refused, naming the holder's PID;
// a lock file left behind by a killed holder blocks neither and is not
// taken for a run's files; and an --overwrite keeps the lock while it
// replaces the run.
func TestOneWriterPerRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	other, err := lock.Dir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("(PID %d) is writing to %s", os.Getpid(), dir)
	if _, err := train.Train[float32](context.Background(), dir, tinyModulo(), train.Options{}); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("train into a locked directory: %v; want %q", err, want)
	}
	if _, err := train.Resume[float32](context.Background(), dir, train.Options{}); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("resume a locked directory: %v; want %q", err, want)
	}
	other.Release()

	// A killed holder's lock file, in an otherwise empty directory.
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, lock.Name), []byte("999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := train.Train[float32](ctx, dir, tinyModulo(), train.Options{}); err != nil {
		t.Fatalf("a stale lock file in an empty directory: %v", err)
	}
	os.WriteFile(filepath.Join(dir, lock.Name), []byte("999999\n"), 0o644)
	// Every progress line is written while the run is being trained: the
	// lock must be held then, by its file in the run.
	probe := &lockProbe{t: t, dir: dir}
	s, err := train.Resume[float32](context.Background(), dir, train.Options{Progress: probe})
	if err != nil || !s.Done {
		t.Fatalf("resume past a stale lock file: %+v, %v", s, err)
	}
	s, err = train.Train[float32](context.Background(), dir, tinyModulo(), train.Options{Overwrite: true, Progress: probe})
	if err != nil || !s.Done {
		t.Fatalf("overwrite: %+v, %v", s, err)
	}
	if probe.writes == 0 {
		t.Fatal("no progress was written")
	}
	if _, err := os.Stat(filepath.Join(dir, lock.Name)); !os.IsNotExist(err) {
		t.Errorf("the lock file outlives the run: %v", err)
	}
}

// lockProbe is a progress writer that checks the run's lock is held.
type lockProbe struct {
	t      *testing.T
	dir    string
	writes int
}

func (p *lockProbe) Write(b []byte) (int, error) {
	p.writes++
	l, err := lock.Dir(p.dir)
	var held *lock.HeldError
	if !errors.As(err, &held) {
		l.Release()
		p.t.Errorf("while training: lock.Dir(run) = %v; want it held", err)
	}
	return len(b), nil
}
