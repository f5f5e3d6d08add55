package job_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/internal/testrun"
)

// TestOneWriterPerOutput: a job whose output directory another writer
// holds is refused, naming the holder's PID, and changes nothing; a lock
// file a killed holder left in an empty directory is not taken for
// someone else's files.
func TestOneWriterPerOutput(t *testing.T) {
	run := tinyRun(t)
	out := filepath.Join(t.TempDir(), "out")
	other, err := lock.Dir(out)
	if err != nil {
		t.Fatal(err)
	}
	before := tree(t, out)
	want := fmt.Sprintf("another explaind process (PID %d) is writing to %s; wait for it to finish or stop it", os.Getpid(), out)
	if _, err := job.Run(context.Background(), job.Options{Run: run, Out: out, TestSize: 2}); err == nil || err.Error() != want {
		t.Errorf("a locked --out: %v; want %q", err, want)
	}
	if after := tree(t, out); !reflect.DeepEqual(after, before) {
		t.Errorf("the refused job changed %s", out)
	}
	other.Release()
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, lock.Name), []byte("999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := job.Run(context.Background(), job.Options{Run: run, Out: out, TestSize: 2}); err != nil {
		t.Errorf("an empty --out with a stale lock file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, lock.Name)); !os.IsNotExist(err) {
		t.Errorf("the lock file outlives the job: %v", err)
	}
}

// TestStampOnlyUnderTheRunsLock: the job reads the run without its lock,
// so a run being written still replays, but the job does not write the
// run's stamp then; once the run is free it does.
func TestStampOnlyUnderTheRunsLock(t *testing.T) {
	run := testrun.Copy(t, tinyRun(t))
	stamp := filepath.Join(run, history.StampFile)
	if err := os.Remove(stamp); err != nil {
		t.Fatal(err)
	}
	writer, err := lock.Dir(run)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	if _, err := job.Run(context.Background(), job.Options{Run: run, Out: filepath.Join(t.TempDir(), "a"), TestSize: 2, Log: &log}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stamp); !os.IsNotExist(err) {
		t.Errorf("the job stamped a run another process is writing: %v", err)
	}
	if want := fmt.Sprintf("its stamp was not written: another explaind process (PID %d) is writing to %s", os.Getpid(), run); !strings.Contains(log.String(), want) {
		t.Errorf("log %q; want it to say %q", log.String(), want)
	}
	writer.Release()
	if _, err := job.Run(context.Background(), job.Options{Run: run, Out: filepath.Join(t.TempDir(), "b"), TestSize: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stamp); err != nil {
		t.Errorf("a free run replayed but was not stamped: %v", err)
	}
}
