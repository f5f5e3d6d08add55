package history

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"

	"github.com/explaind/explaind/internal/atomicfile"
)

// StampFile is the name of a run's verification stamp.
const StampFile = "verified.json"

// Stamp records that the steps 0..Steps−1 of a run reproduce bit for bit
// under one executable: either that executable trained the run in one go,
// or it replayed the steps and every hash matched. It pins the run's
// manifest and checkpoint files and the executable by their SHA-256, and
// the software string (GEMM backend and thread count among it), so that a
// later job with the same executable can skip a full pre-flight replay of
// an unmodified run. Any edit to the run, another build or another thread
// count voids it.
type Stamp struct {
	// Steps is the number of leading steps known to reproduce.
	Steps int `json:"steps"`
	// How says how they were checked: "trained" or "replayed".
	How string `json:"how"`
	// Software is the software string of the executable.
	Software string `json:"software"`
	// Executable is the SHA-256 of the executable's file.
	Executable string `json:"executable_sha256"`
	// Manifest is the SHA-256 of manifest.json, Checkpoints those of the
	// checkpoint files by their relative path.
	Manifest    string            `json:"manifest_sha256"`
	Checkpoints map[string]string `json:"checkpoints_sha256"`
}

// currentStamp hashes the run's files and the running executable.
// It also returns the manifest it read.
func currentStamp(dir string, steps int, how, software string) (*Stamp, *Manifest, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	s := &Stamp{Steps: steps, How: how, Software: software, Checkpoints: map[string]string{}}
	if s.Executable, err = fileSHA256(exe); err != nil {
		return nil, nil, err
	}
	if s.Manifest, err = fileSHA256(filepath.Join(dir, ManifestFile)); err != nil {
		return nil, nil, err
	}
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, nil, err
	}
	for _, c := range m.Checkpoints {
		if s.Checkpoints[c.File], err = fileSHA256(filepath.Join(dir, c.File)); err != nil {
			return nil, nil, err
		}
	}
	return s, m, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// WriteStamp records, atomically, that the run's first steps steps
// reproduce under the running executable with the given software string;
// how is "trained" or "replayed". An existing stamp of this executable that
// covers more steps is kept.
func WriteStamp(dir string, steps int, how, software string) error {
	s, _, err := currentStamp(dir, steps, how, software)
	if err != nil {
		return fmt.Errorf("history: stamping %s: %w", dir, err)
	}
	if old, err := readStamp(dir); err == nil && old.matches(s) && old.Steps >= steps {
		return nil
	}
	data, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(dir, StampFile), append(data, '\n'))
}

// readStamp reads dir's stamp; its errors name the file (a missing one is
// an error wrapping os.ErrNotExist).
func readStamp(dir string) (*Stamp, error) {
	path := filepath.Join(dir, StampFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Stamp
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %v", path, err)
	}
	if s.Steps < 0 || (s.How != "trained" && s.How != "replayed") {
		return nil, fmt.Errorf("%s is corrupt: steps %d, how %q; want steps ≥ 0 and how \"trained\" or \"replayed\"", path, s.Steps, s.How)
	}
	return &s, nil
}

// matches reports whether two stamps pin the same files, executable and
// software.
func (s *Stamp) matches(o *Stamp) bool {
	return s.Software == o.Software && s.Executable == o.Executable && s.Manifest == o.Manifest &&
		maps.Equal(s.Checkpoints, o.Checkpoints)
}

// StampCovers reports whether the run carries a stamp of the running
// executable, with this software string, for its current files, covering
// at least the first steps steps. A missing, unreadable or stale stamp is
// not an error: the answer is then false, with the reason.
func StampCovers(dir string, steps int, software string) (bool, string, error) {
	old, err := readStamp(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, "the run has no verification stamp", nil
	}
	if err != nil {
		return false, fmt.Sprintf("its verification stamp is unreadable (%v)", err), nil
	}
	cur, m, err := currentStamp(dir, steps, old.How, software)
	if err != nil {
		return false, "", fmt.Errorf("history: checking the stamp of %s: %w", dir, err)
	}
	if step, diverged := m.Diverged(); diverged {
		return false, fmt.Sprintf("the run diverged at step %d, which voids its verification stamp", step), nil
	}
	switch {
	case old.Executable != cur.Executable || old.Software != cur.Software:
		return false, "its verification stamp is from another build or thread count", nil
	case old.Manifest != cur.Manifest || !maps.Equal(old.Checkpoints, cur.Checkpoints):
		return false, "the run was modified after its verification stamp", nil
	case old.Steps < steps:
		return false, fmt.Sprintf("its verification stamp covers %d steps, not %d", old.Steps, steps), nil
	}
	return true, fmt.Sprintf("the run's steps were %s by this executable (%s)", old.How, StampFile), nil
}
