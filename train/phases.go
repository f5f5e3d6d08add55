package train

// Phases are the milestones of a grokking run, read off its epoch metrics
// (Nanda et al.'s three phases: memorization, circuit formation, cleanup).
// A milestone is the number of steps done at the end of the first epoch
// that reaches it, or -1 when no epoch does:
//
//   - Memorized: training accuracy ≥ MemorizedAt, ending memorization;
//   - Rising: validation accuracy ≥ RisingAt after Memorized, ending
//     circuit formation (the circuits are not visible in validation
//     accuracy before) and starting cleanup;
//   - Grokked: validation accuracy ≥ the target after Memorized, ending
//     cleanup.
//
// The thresholds are conventions, not measurements of the circuits: they
// place the phases where the accuracy curves show them.
type Phases struct {
	Memorized, Rising, Grokked int
}

// The accuracy thresholds of Phases.
const (
	MemorizedAt = 0.99
	RisingAt    = 0.1
)

// PhasesOf returns the milestones of the metrics ms, with target the
// validation accuracy that counts as grokked (AccuracyTarget's default
// applies to 0).
func PhasesOf(ms []EpochMetrics, target float64) Phases {
	target = AccuracyTarget(target)
	p := Phases{Memorized: -1, Rising: -1, Grokked: -1}
	for _, m := range ms {
		if p.Memorized < 0 && m.TrainAcc >= MemorizedAt {
			p.Memorized = m.Step
		}
		if p.Memorized < 0 {
			continue
		}
		if p.Rising < 0 && m.ValAcc >= RisingAt {
			p.Rising = m.Step
		}
		if p.Grokked < 0 && m.ValAcc >= target {
			p.Grokked = m.Step
			if p.Rising < 0 {
				p.Rising = m.Step
			}
		}
	}
	return p
}
