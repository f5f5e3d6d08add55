package epk_test

import (
	"os"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/internal/fixtures"
	"github.com/explaind/explaind/models"
)

// cnnPathForm gives the path form of a ResNet-9 the CNN oracle checks
// evaluate: the generic row-grouped one (epk.LayerPath, the plain rules at
// θ + tΔθ written into the weights) or the model's own path rules.
type cnnPathForm func(m *models.ResNet9[float64]) epk.PathModel[float64]

func genericCNNPath(m *models.ResNet9[float64]) epk.PathModel[float64] {
	return epk.LayerPath[float64](m)
}

func nativeCNNPath(m *models.ResNet9[float64]) epk.PathModel[float64] { return m }

// TestCNNOracleSubsetPath is the golden CNN oracle check of TestGoldenEPK
// (checkCNNOracleSubset) through ResNet-9's own path rules (the
// convolutions' stacked [W; ΔW] GEMMs and grouped backward) rather than
// the generic path.
func TestCNNOracleSubsetPath(t *testing.T) {
	fixtures.EachOracle(t, models.ResNet9Arch, func(t *testing.T, path string) {
		checkCNNOracleSubsetOn(t, path, nativeCNNPath)
	})
}

// TestCNNOracleFullPath is TestCNNOracleFull through ResNet-9's own path
// rules: every step and test sample, the data, regularization and
// per-tensor contributions, the per-parameter scores (through the grouped
// backward pass) and the data kernel. Set EXPLAIND_EPK_FULL=1 to run it.
func TestCNNOracleFullPath(t *testing.T) {
	if os.Getenv("EXPLAIND_EPK_FULL") == "" {
		t.Skip("takes minutes; set EXPLAIND_EPK_FULL=1 to run")
	}
	fixtures.EachOracle(t, models.ResNet9Arch, func(t *testing.T, path string) {
		checkCNNOracleFull(t, path, nativeCNNPath)
	})
}
