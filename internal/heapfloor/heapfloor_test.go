package heapfloor

import (
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
)

// residentBytes reads the process's resident memory from /proc.
func residentBytes(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}

// TestHeapFloor: the heap floor raises the collector's heap goal above its
// size and leaves resident memory (nearly) as it was: its pages are never
// touched. It runs in a fresh process, as in explaind, where the floor is
// the first large allocation (in this test binary other tests leave freed,
// touched memory that the floor might reuse).
func TestHeapFloor(t *testing.T) {
	if os.Getenv("EXPLAIND_HEAP_FLOOR_CHILD") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHeapFloor$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "EXPLAIND_HEAP_FLOOR_CHILD=1")
		out, err := cmd.CombinedOutput()
		t.Logf("fresh process:\n%s", out)
		if err != nil || !strings.Contains(string(out), "--- PASS: TestHeapFloor") {
			t.Errorf("the heap floor's check in a fresh process failed: %v", err)
		}
		return
	}
	before := residentBytes(t)
	Set()
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	goal := s[0].Value.Uint64()
	after := residentBytes(t)
	t.Logf("heap goal %d MB; resident %d → %d MB", goal>>20, before>>20, after>>20)
	if goal < Bytes {
		t.Errorf("heap goal %d bytes after the floor of %d", goal, Bytes)
	}
	if after-before > Bytes/8 {
		t.Errorf("resident memory grew by %d MB with the floor of %d MB: its pages were touched", (after-before)>>20, Bytes>>20)
	}
}
