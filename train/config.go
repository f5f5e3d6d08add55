package train

import (
	"github.com/explaind/explaind/setting"

	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/optim"
)

// Config describes a training run completely: with the recorded batches it
// rebuilds the model, data and optimizer for replay. It is stored in the
// run's manifest.
type Config struct {
	// Task is "modulo" or "cnn".
	Task string `json:"task"`
	// Seed seeds initialization, the data split, batch order and flips.
	Seed uint64 `json:"seed"`

	Modulo *ModuloTask `json:"modulo,omitempty"`
	CNN    *CNNTask    `json:"cnn,omitempty"`

	Optimizer OptimizerConfig `json:"optimizer"`
	// Schedule is "constant" or "triangle" (0 → LR at PeakEpoch → 0 at the
	// last epoch, per step).
	Schedule  string `json:"schedule"`
	PeakEpoch int    `json:"peak_epoch,omitempty"`
	// BatchSize 0 means full batch (one step per epoch).
	BatchSize int `json:"batch_size"`
	Epochs    int `json:"epochs"`
	// StopAtPerfect stops once training and validation accuracy both reach
	// 100% (the modulo run's grokking criterion).
	StopAtPerfect bool `json:"stop_at_perfect"`
	// StopAccuracy is the accuracy both must reach for StopAtPerfect
	// (0 means 1, the paper's 100%: see AccuracyTarget).
	StopAccuracy    float64 `json:"stop_accuracy,omitempty"`
	CheckpointEvery int     `json:"checkpoint_every"`
}

// AccuracyTarget returns the accuracy a target of a asks for: a itself,
// or 1 (100%, the paper's criterion) when a is 0. It is the default of
// Config.StopAccuracy and of the experiments' accuracy targets.
func AccuracyTarget(a float64) float64 {
	if a == 0 {
		return 1
	}
	return a
}

// ModuloTask configures the modulo-addition transformer and its data.
type ModuloTask struct {
	P         int `json:"p"`
	TrainSize int `json:"train_size"`
	ValSize   int `json:"val_size"`
	DModel    int `json:"d_model"`
	Heads     int `json:"heads"`
	MLP       int `json:"mlp"`
}

// CNNTask configures the ResNet-9 and its two-class image data.
type CNNTask struct {
	// Dataset is "fashion2" or "cifar2".
	Dataset string `json:"dataset"`
	DataDir string `json:"data_dir,omitempty"`
	// TrainSize and TestSize keep the first samples (0: all).
	TrainSize int  `json:"train_size,omitempty"`
	TestSize  int  `json:"test_size,omitempty"`
	WidthDiv  int  `json:"width_div"`
	Flip      bool `json:"flip"`
}

// OptimizerConfig selects and configures the optimizer.
type OptimizerConfig struct {
	Name        string  `json:"name"` // "sgd" or "adamw"
	LR          float64 `json:"lr"`
	WeightDecay float64 `json:"weight_decay"`
	Momentum    float64 `json:"momentum,omitempty"`
	Dampening   float64 `json:"dampening,omitempty"`
	Nesterov    bool    `json:"nesterov,omitempty"`
	Beta1       float64 `json:"beta1,omitempty"`
	Beta2       float64 `json:"beta2,omitempty"`
	Eps         float64 `json:"eps,omitempty"`
}

// ModuloDefaults returns the paper's modulo run: p = 113, 4000/2000 split,
// d_model 64, 4 heads, MLP 512, AdamW lr 1e-3, betas (0.9, 0.98), weight
// decay 4, full batch, up to 4000 epochs, stopping at 100%/100%.
func ModuloDefaults() Config {
	return Config{
		Task:   "modulo",
		Seed:   0,
		Modulo: &ModuloTask{P: 113, TrainSize: 4000, ValSize: 2000, DModel: 64, Heads: 4, MLP: 512},
		Optimizer: OptimizerConfig{Name: "adamw", LR: 1e-3, WeightDecay: 4.0,
			Beta1: 0.9, Beta2: 0.98, Eps: 1e-8},
		Schedule:        "constant",
		BatchSize:       0,
		Epochs:          4000,
		StopAtPerfect:   true,
		CheckpointEvery: 100,
	}
}

// CNNDefaults returns the paper's CIFAR-2 settings on the given dataset:
// SGD lr 0.1, momentum 0.9, weight decay 5e-3, batch 256, 12 epochs,
// triangular schedule peaking at epoch 5, random flips. The width divisor
// defaults to 8 (the paper's model is divisor 1) to keep CPU runs short.
func CNNDefaults(dataset string) Config {
	return Config{
		Task: "cnn",
		CNN:  &CNNTask{Dataset: dataset, WidthDiv: 8, Flip: true},
		Optimizer: OptimizerConfig{Name: "sgd", LR: 0.1, WeightDecay: 5e-3,
			Momentum: 0.9},
		Schedule:        "triangle",
		PeakEpoch:       5,
		BatchSize:       256,
		Epochs:          12,
		CheckpointEvery: 39,
	}
}

// Validate checks the configuration and names the first bad value by its
// field ("Optimizer.LR"), as a *setting.Error.
func (c *Config) Validate() error {
	bad := func(name string, value any, format string, args ...any) error {
		return fmt.Errorf("train: %w", setting.Invalid(name, value, format, args...))
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch c.Task {
	case "modulo":
		m := c.Modulo
		if m == nil {
			return fmt.Errorf("train: modulo task without its settings")
		}
		if m.P < 3 {
			return bad("Modulo.P", m.P, "the modulus must be at least 3")
		}
		if m.TrainSize < 1 || m.ValSize < 0 {
			return bad("Modulo.TrainSize", nil, "%d training and %d validation samples; want ≥ 1 and ≥ 0", m.TrainSize, m.ValSize)
		}
		if n := data.NumModuloPairs(m.P); m.TrainSize > n || m.ValSize > n-m.TrainSize { // TrainSize+ValSize may overflow
			return bad("Modulo.TrainSize", nil, "%d + %d validation samples exceed the %d pairs that exist for p = %d", m.TrainSize, m.ValSize, n, m.P)
		}
		if m.DModel < 1 || m.Heads < 1 || m.DModel%m.Heads != 0 || m.MLP < 1 {
			return bad("Modulo.DModel", nil, "d_model %d, %d heads, MLP %d: d_model must be a positive multiple of the head count", m.DModel, m.Heads, m.MLP)
		}
	case "cnn":
		n := c.CNN
		if n == nil {
			return fmt.Errorf("train: cnn task without its settings")
		}
		if n.Dataset != "fashion2" && n.Dataset != "cifar2" {
			return bad("CNN.Dataset", strconv.Quote(n.Dataset), "want fashion2 or cifar2")
		}
		if n.TrainSize < 0 || n.TestSize < 0 {
			return bad("CNN.TrainSize", nil, "%d (test %d); sizes must be ≥ 0 (0 keeps all)", n.TrainSize, n.TestSize)
		}
		if n.WidthDiv < 1 || 64%n.WidthDiv != 0 {
			return bad("CNN.WidthDiv", n.WidthDiv, "it must divide 64")
		}
	default:
		return bad("Task", strconv.Quote(c.Task), "want modulo or cnn")
	}
	o := c.Optimizer
	if !finite(o.LR) || o.LR < 0 {
		return bad("Optimizer.LR", o.LR, "want a finite value ≥ 0")
	}
	if !finite(o.WeightDecay) || o.WeightDecay < 0 {
		return bad("Optimizer.WeightDecay", o.WeightDecay, "want a finite value ≥ 0")
	}
	switch o.Name {
	case "sgd", "adamw":
	default:
		return bad("Optimizer.Name", strconv.Quote(o.Name), "want sgd or adamw")
	}
	if c.BatchSize < 0 {
		return bad("BatchSize", c.BatchSize, "want ≥ 1, or 0 for full batch")
	}
	if c.Epochs < 1 {
		return bad("Epochs", c.Epochs, "want ≥ 1")
	}
	if c.StopAccuracy < 0 || c.StopAccuracy > 1 {
		return bad("StopAccuracy", c.StopAccuracy, "want a fraction in (0, 1]")
	}
	if c.CheckpointEvery < 1 {
		return bad("CheckpointEvery", c.CheckpointEvery, "want ≥ 1")
	}
	switch c.Schedule {
	case "constant":
	case "triangle":
		if !(0 < c.PeakEpoch && c.PeakEpoch < c.Epochs) {
			return bad("PeakEpoch", c.PeakEpoch, "want strictly between 0 and %v (%d): the triangle rises and falls", setting.Name("Epochs"), c.Epochs)
		}
	default:
		return bad("Schedule", strconv.Quote(c.Schedule), "want constant or triangle")
	}
	return nil
}

// Data holds a run's training and evaluation sets.
type Data[T interface{ ~float32 | ~float64 }] struct {
	Train, Val data.Dataset[T]
	// ModuloTrain and ModuloVal are the modulo splits (nil for images).
	ModuloTrain, ModuloVal *data.ModuloSplit
}

// LoadData builds or reads the run's datasets.
func LoadData[T interface{ ~float32 | ~float64 }](c *Config) (*Data[T], error) {
	switch c.Task {
	case "modulo":
		m := c.Modulo
		tr, va, err := data.MakeModulo(data.ModuloConfig{P: m.P, Train: m.TrainSize, Val: m.ValSize, Seed: c.Seed})
		if err != nil {
			return nil, err
		}
		return &Data[T]{Train: data.ModuloDataset[T](tr), Val: data.ModuloDataset[T](va), ModuloTrain: tr, ModuloVal: va}, nil
	case "cnn":
		n := c.CNN
		var tr, te data.Dataset[T]
		var err error
		if n.Dataset == "cifar2" {
			if n.DataDir == "" {
				return nil, setting.Errorf("train: CIFAR-2 needs %v pointing at cifar-10-batches-bin (the CIFAR-10 binary version); this machine cannot download it, and %v fashion2 works out of the box",
					setting.Name("CNN.DataDir"), setting.Name("CNN.Dataset"))
			}
			if tr, err = data.LoadCIFAR2[T](n.DataDir, data.SplitTrain); err == nil {
				te, err = data.LoadCIFAR2[T](n.DataDir, data.SplitTest)
			}
		} else {
			if tr, err = data.LoadFashion2[T](n.DataDir, data.SplitTrain, data.DefaultFashionPair); err == nil {
				te, err = data.LoadFashion2[T](n.DataDir, data.SplitTest, data.DefaultFashionPair)
			}
		}
		if err != nil {
			return nil, err
		}
		if n.TrainSize > 0 {
			if tr, err = tr.Head(n.TrainSize); err != nil {
				return nil, err
			}
		}
		if n.TestSize > 0 {
			if te, err = te.Head(n.TestSize); err != nil {
				return nil, err
			}
		}
		return &Data[T]{Train: tr, Val: te}, nil
	}
	return nil, fmt.Errorf("train: unknown task %q", c.Task)
}

// BuildModel returns the run's model, initialized from the seed.
func BuildModel[T interface{ ~float32 | ~float64 }](c *Config, d *Data[T]) (models.Model[T], error) {
	var m models.Model[T]
	var err error
	switch c.Task {
	case "modulo":
		t := c.Modulo
		m, err = models.NewModulo[T](models.ModuloConfig{P: t.P, DModel: t.DModel, Heads: t.Heads, MLP: t.MLP})
	case "cnn":
		shape := d.Train.SampleShape()
		if len(shape) != 3 {
			return nil, fmt.Errorf("train: images of shape %v, want [C, H, W]", shape)
		}
		m, err = models.NewResNet9[T](models.ResNet9Config{WidthDiv: c.CNN.WidthDiv, InChannels: shape[0],
			Classes: d.Train.Classes, Height: shape[1], Width: shape[2]})
	default:
		return nil, fmt.Errorf("train: unknown task %q", c.Task)
	}
	if err != nil {
		return nil, err
	}
	m.Init(rand.New(rand.NewPCG(c.Seed, 0x696e6974))) // "init"
	return m, nil
}

// BuildOptimizer returns the run's optimizer.
func BuildOptimizer[T interface{ ~float32 | ~float64 }](c *Config) (optim.Optimizer[T], error) {
	o := c.Optimizer
	switch strings.ToLower(o.Name) {
	case "sgd":
		return optim.NewSGD[T](o.Momentum, o.Dampening, o.WeightDecay, o.Nesterov)
	case "adamw":
		return optim.NewAdamW[T](o.Beta1, o.Beta2, o.Eps, o.WeightDecay)
	}
	return nil, fmt.Errorf("train: unknown optimizer %q", o.Name)
}

// StepsPerEpoch returns the number of steps of one epoch.
func (c *Config) StepsPerEpoch(trainSize int) int {
	if c.BatchSize == 0 {
		return 1
	}
	return data.StepsPerEpoch(trainSize, c.BatchSize)
}

// BuildSchedule returns the run's learning-rate schedule.
func (c *Config) BuildSchedule(trainSize int) (optim.Schedule, error) {
	switch c.Schedule {
	case "constant":
		return optim.Constant(c.Optimizer.LR), nil
	case "triangle":
		return optim.Triangle(c.Optimizer.LR, c.StepsPerEpoch(trainSize), c.PeakEpoch, c.Epochs)
	}
	return nil, fmt.Errorf("train: unknown schedule %q", c.Schedule)
}

// Marshal returns the configuration as JSON for the manifest.
func (c *Config) Marshal() []byte {
	b, _ := json.Marshal(c)
	return b
}
