// Package history is explaind's run store: it records a training run well
// enough to recompute any of its states exactly, and replays and verifies it.
//
// ExPLAIND explains a training run, so it needs every step's parameters,
// optimizer state, batch and learning rate. The reference implementation
// stores all of them; this package stores what makes training reproducible
// instead (the configuration, each step's batch, augmentation draws and
// learning rate) plus a checkpoint of parameters and optimizer state every K
// steps, and a hash of the parameters after every step. Replay recomputes
// any step from the nearest checkpoint and checks it against its hash, so
// storage drops from N×P to N/K×P values and nothing is taken on trust.
//
// A run directory holds:
//
//	manifest.json                  what the run is (Manifest)
//	checkpoints/step-NNNNNN.safetensors  parameters ("param/<name>") and
//	                               optimizer state ("optim/<kind>/<name>")
//	                               before step NNNNNN
//
// The manifest is only ever replaced atomically, after the checkpoint it
// names has been written, so it never points at a missing file; a run
// interrupted at any moment can be resumed from its last checkpoint.
package history

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/internal/localpath"
)

// FormatVersion is the manifest format this package writes and reads.
const FormatVersion = 1

// ManifestFile is the manifest's file name inside a run directory.
const ManifestFile = "manifest.json"

// Manifest describes a recorded run. Config is the caller's own description
// of how to rebuild the model, data and optimizer (explaind's train package
// stores its train.Config there); history treats it as opaque JSON.
type Manifest struct {
	Format   int    `json:"format"`
	Software string `json:"software"`
	Created  string `json:"created"`
	// Config rebuilds the run (model, data, optimizer); opaque to history.
	Config json.RawMessage `json:"config"`
	// Params lists the parameters in order, with shapes.
	Params []ParamInfo `json:"params"`
	// Dtype is the element type training ran in ("float32" or "float64").
	Dtype string `json:"dtype"`
	// Datasets fingerprints the data the run used, by role ("train", "val").
	Datasets map[string]DatasetInfo `json:"datasets"`
	// Threads is GOMAXPROCS during training; bit-exact replay assumes the
	// same build and thread count (reductions are split by thread).
	Threads int `json:"threads"`
	// GemmBackend names the matrix-product backend used for training.
	GemmBackend string `json:"gemm_backend"`
	// CheckpointEvery is K: a checkpoint is written every K steps.
	CheckpointEvery int `json:"checkpoint_every"`
	// InitHash is the hash of the initial parameters.
	InitHash string `json:"init_hash"`
	// Steps holds one record per completed step, in order.
	Steps []StepRecord `json:"steps"`
	// Checkpoints lists the checkpoint files, by increasing step.
	Checkpoints []Checkpoint `json:"checkpoints"`
	// Done is true once training has finished (not merely stopped).
	Done bool `json:"done"`
	// StopReason says why training ended or paused.
	StopReason string `json:"stop_reason,omitempty"`
}

// ParamInfo names one parameter and its shape.
type ParamInfo struct {
	Name  string `json:"name"`
	Shape []int  `json:"shape"`
}

// DatasetInfo identifies a dataset by name, size and content fingerprint.
type DatasetInfo struct {
	Name        string `json:"name"`
	Samples     int    `json:"samples"`
	Classes     int    `json:"classes"`
	Fingerprint string `json:"fingerprint"`
}

// StepRecord is everything needed to redo one optimizer step, and the hash
// of the parameters after it.
type StepRecord struct {
	// Epoch is the 0-based epoch the step belongs to.
	Epoch int `json:"epoch"`
	// LR and WeightDecay are the step's learning rate and weight decay.
	LR          float64 `json:"lr"`
	WeightDecay float64 `json:"wd"`
	// Batch lists the training-sample indices of the step, in order; nil
	// means the full training set in order (full-batch training).
	Batch []int `json:"batch,omitempty"`
	// Flips holds the horizontal-flip draws of the batch's samples as a
	// bitmap in hex ("" when the run does not augment).
	Flips string `json:"flips,omitempty"`
	// Hash is ParamHash of the parameters after the step.
	Hash string `json:"hash"`
}

// Checkpoint names a checkpoint file holding the state before Step.
type Checkpoint struct {
	Step int    `json:"step"`
	File string `json:"file"`
}

// CheckpointName returns the relative path of the checkpoint before step.
func CheckpointName(step int) string {
	return filepath.Join("checkpoints", fmt.Sprintf("step-%06d.safetensors", step))
}

// ReadManifest reads and validates dir/manifest.json.
func ReadManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, ManifestFile)
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("history: %s is not a run directory: it has no %s (make one with explaind train)", dir, ManifestFile)
		}
		return nil, fmt.Errorf("history: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("history: %s is corrupt: %v", path, err)
	}
	if err := m.validate(dir); err != nil {
		return nil, fmt.Errorf("history: %s: %w", path, err)
	}
	return &m, nil
}

// validate checks the manifest's internal consistency and that its
// checkpoint files exist, as regular files inside dir (no symbolic link
// along their names leads out of it).
func (m *Manifest) validate(dir string) error {
	if m.Format != FormatVersion {
		return fmt.Errorf("format version %d, this explaind reads version %d", m.Format, FormatVersion)
	}
	if len(m.Params) == 0 {
		return fmt.Errorf("no parameters listed")
	}
	if m.CheckpointEvery < 1 {
		return fmt.Errorf("checkpoint_every is %d, want ≥ 1", m.CheckpointEvery)
	}
	if len(m.Checkpoints) == 0 || m.Checkpoints[0].Step != 0 {
		return fmt.Errorf("no checkpoint of the initial parameters (step 0)")
	}
	for i, c := range m.Checkpoints {
		if i > 0 && c.Step <= m.Checkpoints[i-1].Step {
			return fmt.Errorf("checkpoints out of order at step %d", c.Step)
		}
		if c.Step > len(m.Steps) {
			return fmt.Errorf("checkpoint %s is for step %d but only %d steps are recorded", c.File, c.Step, len(m.Steps))
		}
		// Checkpoints are read whole and hashed: a name outside the run
		// directory, or a device such as /dev/zero, would never end.
		if !filepath.IsLocal(c.File) {
			return fmt.Errorf("checkpoint %q of step %d is not a path inside the run directory", c.File, c.Step)
		}
		if err := localpath.Check(dir, c.File); err != nil {
			return fmt.Errorf("checkpoint of step %d: %v", c.Step, err)
		}
		st, err := os.Stat(filepath.Join(dir, c.File))
		if err != nil {
			return fmt.Errorf("checkpoint %s of step %d is missing: %v", c.File, c.Step, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("checkpoint %s of step %d is not a regular file (%v)", c.File, c.Step, st.Mode().Type())
		}
	}
	for s, r := range m.Steps {
		if r.Hash == "" {
			return fmt.Errorf("step %d has no parameter hash", s)
		}
	}
	return nil
}

// DivergedReason is the StopReason of a run stopped because its loss
// became NaN or infinite at step (0-based). Verify refuses such a run, and
// a verification stamp does not cover it.
func DivergedReason(step int) string { return fmt.Sprintf("diverged at step %d", step) }

// Diverged reports whether the manifest records that the run diverged
// (its StopReason is DivergedReason), and at which step.
func (m *Manifest) Diverged() (step int, ok bool) {
	if _, err := fmt.Sscanf(m.StopReason, "diverged at step %d", &step); err != nil || DivergedReason(step) != m.StopReason {
		return 0, false
	}
	return step, true
}

// checkConverged refuses a run that diverged; dir names it.
func (m *Manifest) checkConverged(dir string) error {
	if step, ok := m.Diverged(); ok {
		return fmt.Errorf("history: %s: the run diverged at step %d (its manifest's stop_reason is %q): its states are not a trained model to verify or explain; train it again with a lower learning rate", filepath.Join(dir, ManifestFile), step, m.StopReason)
	}
	return nil
}

// Hash returns the recorded parameter hash after step s steps (s = 0 is the
// initial hash).
func (m *Manifest) Hash(s int) string {
	if s == 0 {
		return m.InitHash
	}
	return m.Steps[s-1].Hash
}

// LastCheckpoint returns the latest checkpoint at or before step s.
func (m *Manifest) LastCheckpoint(s int) Checkpoint {
	best := m.Checkpoints[0]
	for _, c := range m.Checkpoints {
		if c.Step <= s {
			best = c
		}
	}
	return best
}

// write replaces dir/manifest.json atomically.
func (m *Manifest) write(dir string) error {
	data, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, ManifestFile), append(data, '\n')); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}
