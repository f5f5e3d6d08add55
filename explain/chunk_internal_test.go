package explain

import "testing"

// TestDefaultChunk: the default test chunk is 256 shared by the workers,
// at most the samples' share of a worker, and at most ChunkValues over the
// model's forward values per sample (at least 1); a chunk given is kept.
func TestDefaultChunk(t *testing.T) {
	for _, c := range []struct {
		chunk, workers, samples, values int
		want                            int
	}{
		{0, 2, 1000, 0, 128},                 // no working set known: 256 over 2 workers
		{0, 2, 10, 0, 5},                     // the samples' share
		{0, 2, 1000, 198_148, 4},             // width/8 ResNet-9
		{0, 2, 1000, 2_032_388, 1},           // full width: one image
		{0, 1, 1000, ChunkValues / 300, 256}, // a small model: the 256 cap
		{0, 2, 1000, ChunkValues / 7, 7},
		{32, 2, 1000, 198_148, 32}, // given: kept
	} {
		j := &job[float64, float64]{spec: Spec[float64]{Chunk: c.chunk, Workers: c.workers}, dims: dims{samples: c.samples},
			sampleValues: c.values}
		j.chunking()
		if j.spec.Chunk != c.want {
			t.Errorf("chunk %d, %d workers, %d samples, %d values per sample: chunk %d, want %d",
				c.chunk, c.workers, c.samples, c.values, j.spec.Chunk, c.want)
		}
	}
}
