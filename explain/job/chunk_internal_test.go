package job

import (
	"testing"

	"github.com/explaind/explaind/train"
)

// TestDefaultChunk: a CNN run's test chunk defaults to CNNChunk, the
// transformer's to the explain package's own default (0), and a chunk
// the user gives is kept.
func TestDefaultChunk(t *testing.T) {
	cnn, mod := &train.Config{Task: "cnn"}, &train.Config{Task: "modulo"}
	for _, c := range []struct {
		chunk int
		cfg   *train.Config
		want  int
	}{{0, cnn, CNNChunk}, {0, mod, 0}, {32, cnn, 32}, {7, mod, 7}} {
		if got := defaultChunk(c.chunk, c.cfg); got != c.want {
			t.Errorf("defaultChunk(%d, task %s) = %d, want %d", c.chunk, c.cfg.Task, got, c.want)
		}
	}
}
