package lock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestSecondWriterIsRefusedWithThePID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	first, err := Dir(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, Name))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q (%v), want this process's PID %d", b, err, os.Getpid())
	}
	// Goroutines racing for the held lock are all refused, naming the holder.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			l, err := Dir(dir)
			l.Release()
			errs[i] = err
		})
	}
	wg.Wait()
	want := fmt.Sprintf("another explaind process (PID %d) is writing to %s; wait for it to finish or stop it", os.Getpid(), dir)
	for _, err := range errs {
		var held *HeldError
		if !errors.As(err, &held) || held.PID != os.Getpid() || err.Error() != want {
			t.Fatalf("second writer: %v; want %q", err, want)
		}
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, Name)); !os.IsNotExist(err) {
		t.Errorf("the lock file outlives Release: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the empty directory Dir made outlives Release: %v", err)
	}
	if err := first.Release(); err != nil {
		t.Errorf("a second Release: %v", err)
	}
	second, err := Dir(dir)
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "out.txt"), nil, 0o644)
	second.Release()
	if _, err := os.Stat(filepath.Join(dir, "out.txt")); err != nil {
		t.Errorf("Release removed a directory with output in it: %v", err)
	}
}

// TestOneWinnerUnderContention has goroutines take and release the lock
// in a loop and checks that no two ever hold it at once.
func TestOneWinnerUnderContention(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	var mu sync.Mutex
	holders, wins := 0, 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				l, err := Dir(dir)
				if err != nil {
					var held *HeldError
					if !errors.As(err, &held) {
						t.Error(err)
						return
					}
					continue
				}
				mu.Lock()
				holders++
				wins++
				if holders != 1 {
					t.Errorf("%d holders at once", holders)
				}
				mu.Unlock()
				runtime.Gosched()
				mu.Lock()
				holders--
				mu.Unlock()
				if err := l.Release(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if wins == 0 {
		t.Error("no goroutine ever took the lock")
	}
}

// TestHoldLock is the child process of TestKilledHolderDoesNotBlock: it
// takes the lock on $EXPLAIND_LOCK_TEST_DIR, says so and waits to be
// killed.
func TestHoldLock(t *testing.T) {
	dir := os.Getenv("EXPLAIND_LOCK_TEST_DIR")
	if dir == "" {
		t.Skip("the child process of TestKilledHolderDoesNotBlock")
	}
	l, err := Dir(dir)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	// The lock stays reachable: an unreachable Lock's file is closed by
	// the garbage collector, which releases the flock (a loaded machine
	// made that happen before the parent's check).
	childLock = l
	fmt.Println("locked")
	select {}
}

// childLock keeps TestHoldLock's lock reachable until the process dies.
var childLock *Lock

func TestKilledHolderDoesNotBlock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	child := exec.Command(os.Args[0], "-test.run=^TestHoldLock$")
	child.Env = append(os.Environ(), "EXPLAIND_LOCK_TEST_DIR="+dir)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "locked\n" {
		t.Fatalf("the child says %q", line)
	}
	_, err = Dir(dir)
	var held *HeldError
	if !errors.As(err, &held) || held.PID != child.Process.Pid || !strings.Contains(err.Error(), fmt.Sprintf("(PID %d)", child.Process.Pid)) {
		t.Fatalf("while the child holds the lock: %v; want it refused naming PID %d", err, child.Process.Pid)
	}
	if err := child.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	if b, err := os.ReadFile(filepath.Join(dir, Name)); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(child.Process.Pid) {
		t.Fatalf("the killed child's lock file holds %q (%v); want its PID left behind", b, err)
	}
	l, err := Dir(dir)
	if err != nil {
		t.Fatalf("after the holder was killed: %v", err)
	}
	defer l.Release()
	if b, _ := os.ReadFile(filepath.Join(dir, Name)); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("the stale lock file now holds %q, want this process's PID", b)
	}
}

func TestFileLocksBesideTheFile(t *testing.T) {
	dir := t.TempDir()
	d, err := Dir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Release()
	path := filepath.Join(dir, "report.html")
	f, err := File(path)
	if err != nil {
		t.Fatalf("a file in a locked directory: %v", err)
	}
	if _, err := File(path); err == nil || !strings.Contains(err.Error(), "is writing to "+path+";") {
		t.Errorf("a second lock of the file: %v", err)
	}
	lockFile := filepath.Join(dir, ".report.html.explaind.lock")
	if _, err := os.Stat(lockFile); err != nil {
		t.Errorf("no lock file beside the file: %v", err)
	}
	f.Release()
	if _, err := os.Stat(lockFile); !os.IsNotExist(err) {
		t.Errorf("the file's lock file outlives Release: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("Release removed a directory File did not make: %v", err)
	}
}

func TestLockFilesAreNotOutput(t *testing.T) {
	for name, want := range map[string]bool{Name: true, ".report.html.explaind.lock": true,
		"explaind.lock": false, "summary.json": false, ".epk-state.gob": false} {
		if IsLockFile(name) != want {
			t.Errorf("IsLockFile(%q) = %v", name, !want)
		}
	}
	dir := t.TempDir()
	l, err := Dir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if entries, err := ReadDir(dir); err != nil || len(entries) != 0 {
		t.Fatalf("ReadDir of a locked empty directory: %v, %v", entries, err)
	}
	os.MkdirAll(filepath.Join(dir, "checkpoints"), 0o755)
	os.WriteFile(filepath.Join(dir, "manifest.json"), nil, 0o644)
	if entries, _ := ReadDir(dir); len(entries) != 2 {
		t.Errorf("ReadDir: %d entries, want 2", len(entries))
	}
	if err := RemoveContents(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != Name {
		t.Errorf("after RemoveContents the directory holds %v, want only the lock file", entries)
	}
	if _, err := ReadDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("ReadDir of a missing directory: want an error")
	}
}
