package job

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/npy"
)

// historyGram is the history preset's array of Gram snapshots.
const historyGram = "history_gram"

// gramPartial is the file history_gram.npy is written into while the job
// runs, in the output directory.
const gramPartial = ".history_gram.npy.partial"

// gramFile is the history preset's explain.GramSink: the job's
// history_gram.npy while the job runs, DIR/.history_gram.npy.partial,
// whose npy header declares the whole array [K, G, X, X] of float32 and
// into which each snapshot k is written at its own offset as it is taken,
// so that the job holds one snapshot at a time. The job syncs it before
// each save of its state (which counts the snapshots written), a rerun
// reopens it and writes from the state's count on (the same values at the
// same offsets), and the finished job renames it to history_gram.npy. The
// file is opened when explain first asks for it, so that a job refused
// before any work leaves none.
type gramFile struct {
	dir, path string
	// query is the history query's name, shape the array's.
	query string
	shape []int
	// resume is set for a job that resumes a saved state; f is the file,
	// once opened.
	resume bool
	f      *os.File
	// header is the npy header, snap the bytes of one snapshot.
	header []byte
	snap   int64
	buf    []byte
	// placed is set once finish has renamed the file to
	// history_gram.npy.
	placed bool
}

// newGramFile returns the partial history_gram.npy of a job in dir whose
// history query, named query, takes K snapshots of G groups of X test
// samples; resume says whether the job resumes a saved state.
func newGramFile(dir, query string, K, G, X int, resume bool) *gramFile {
	shape := []int{K, G, X, X}
	return &gramFile{dir: dir, path: filepath.Join(dir, gramPartial), query: query, shape: shape, resume: resume,
		header: npy.Header[float32](shape), snap: int64(G) * int64(X) * int64(X) * 4}
}

// open opens the file, once: afresh (truncated to its header) unless the
// job resumes, when it reopens the file the job wrote so far (explain
// asks, through Holds, whether it holds the snapshots the saved state
// counts). A resumed job killed after the rename of its finished file but
// before its manifest was written finds history_gram.npy instead, and
// takes it back.
func (g *gramFile) open() error {
	if g.f != nil {
		return nil
	}
	flag := os.O_RDWR | os.O_CREATE | os.O_TRUNC
	if g.resume {
		flag = os.O_RDWR | os.O_CREATE
		final := filepath.Join(g.dir, epkfile.FileName(historyGram))
		if _, err := os.Lstat(g.path); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Lstat(final); err == nil {
				if err := atomicfile.Rename(final, g.path); err != nil {
					return fmt.Errorf("taking back the unfinished job's %s: %w", final, err)
				}
			}
		}
	}
	f, err := os.OpenFile(g.path, flag, 0o644)
	if err != nil {
		return fmt.Errorf("cannot write the history preset's Gram snapshots: %w", err)
	}
	if g.resume {
		// A file the job wrote starts with this very header; an empty one
		// (a kill before the header was written) is given it.
		have := make([]byte, len(g.header))
		n, _ := f.ReadAt(have, 0)
		if n > 0 && string(have[:n]) != string(g.header[:n]) {
			f.Close()
			return fmt.Errorf("%s is not this job's unfinished history_gram.npy (its header is not that of the array %v of float32 the job writes): "+
				"remove the job's state %s to start the job afresh", g.path, g.shape, statePath(g.dir))
		}
	}
	if _, err := f.WriteAt(g.header, 0); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", g.path, err)
	}
	g.f = f
	return nil
}

// Snapshot writes group gr's matrix of snapshot k at its offset, as
// float32 (explain.GramSink).
func (g *gramFile) Snapshot(q explain.Query, k, step, gr int, gram []float64) error {
	if err := g.open(); err != nil {
		return err
	}
	group := g.snap / int64(g.shape[1])
	if q.Name != g.query || k < 0 || k >= g.shape[0] || gr < 0 || gr >= g.shape[1] || int64(len(gram))*4 != group {
		return fmt.Errorf("%s: group %d of snapshot %d of query %q with %d values does not fit the array %v of query %q", g.path, gr, k, q.Name,
			len(gram), g.shape, g.query)
	}
	if g.buf == nil {
		g.buf = make([]byte, 0, 1<<20)
	}
	off := int64(len(g.header)) + int64(k)*g.snap + int64(gr)*group
	for i := 0; i < len(gram); {
		b := g.buf[:0]
		for ; i < len(gram) && len(b) < cap(b); i++ {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(gram[i])))
		}
		if _, err := g.f.WriteAt(b, off); err != nil {
			return fmt.Errorf("writing %s: %w", g.path, err)
		}
		off += int64(len(b))
	}
	return nil
}

// Holds checks that the file holds k snapshots (explain.GramSink): the
// snapshots the resumed job's saved state counts.
func (g *gramFile) Holds(q explain.Query, k int) error {
	if err := g.open(); err != nil {
		return err
	}
	st, err := g.f.Stat()
	if err != nil {
		return err
	}
	if have := (st.Size() - int64(len(g.header))) / g.snap; have < int64(k) {
		return fmt.Errorf("%s holds %d of the %d Gram snapshots the job's saved state %s counts (it was truncated or replaced): "+
			"remove %s to start the job afresh", g.path, max(have, 0), k, statePath(g.dir), statePath(g.dir))
	}
	return nil
}

// sync makes the snapshots written so far durable, before a state that
// counts them is saved.
func (g *gramFile) sync() error {
	if g.f == nil {
		return nil // none written
	}
	if err := g.f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", g.path, err)
	}
	return nil
}

// finish syncs and closes the file, which must hold the K snapshots of a
// finished job, and places it as the array history_gram with info (the
// rename is atomic).
func (g *gramFile) finish(w *epkfile.Writer, info epkfile.ArrayInfo) error {
	if err := g.Holds(explain.Query{Name: g.query}, g.shape[0]); err != nil {
		return err
	}
	if err := g.sync(); err != nil {
		return err
	}
	if err := g.f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", g.path, err)
	}
	info.Shape = g.shape
	if err := epkfile.Place(w, historyGram, g.path, "float32", info); err != nil {
		return err
	}
	g.placed = true
	return nil
}

// unplace renames history_gram.npy back to the partial file after a
// failed write of the output, which removes the files it wrote: a rerun
// resumes from the saved state, whose snapshots the partial file holds.
func (g *gramFile) unplace() {
	if g.placed {
		atomicfile.Rename(filepath.Join(g.dir, epkfile.FileName(historyGram)), g.path)
		g.placed = false
	}
}

// close closes the file of a job that stops before it finishes, leaving
// it for a rerun.
func (g *gramFile) close() {
	if g.f != nil && !g.placed {
		g.f.Close()
	}
}
