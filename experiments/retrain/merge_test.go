package retrain_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/experiments/expio/expiotest"
	"github.com/explaind/explaind/experiments/retrain"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/shard"
)

// TestShardRowsSplit: for every job size up to 100 and every shard
// count, the shards' rows are ascending, disjoint and together all of
// the job's, of sizes within one; each shard has within log₂(N)+1 of its
// share of every contiguous span of the job's rows (the balance ShardRows
// promises); more shards than rows, and bad shards, are refused naming
// the setting Shard.
func TestShardRowsSplit(t *testing.T) {
	for n := 1; n <= 100; n++ {
		all, err := retrain.ShardRows(n, shard.Shard{})
		if err != nil || len(all) != n {
			t.Fatalf("ShardRows(%d, whole job): %v, %v", n, all, err)
		}
		bound := math.Log2(float64(n)) + 1
		for count := 1; count <= n; count++ {
			seen := make([]bool, n)
			lo, hi := n, 0
			for i := range count {
				rows, err := retrain.ShardRows(n, shard.Shard{Index: i, Count: count})
				if err != nil {
					t.Fatalf("ShardRows(%d, %d/%d): %v", n, i, count, err)
				}
				if !slices.IsSorted(rows) {
					t.Fatalf("ShardRows(%d, %d/%d) = %v: not ascending", n, i, count, rows)
				}
				lo, hi = min(lo, len(rows)), max(hi, len(rows))
				in := make([]bool, n)
				for _, k := range rows {
					if k < 0 || k >= n || seen[k] {
						t.Fatalf("ShardRows(%d, %d/%d): row %d out of range or in two shards", n, i, count, k)
					}
					seen[k], in[k] = true, true
				}
				// The deviation of the running count from the share, over
				// every prefix: its range bounds every span's.
				var c, dmin, dmax float64
				for x := range n {
					if in[x] {
						c++
					}
					d := c - float64(x+1)*float64(len(rows))/float64(n)
					dmin, dmax = min(dmin, d), max(dmax, d)
				}
				if dmax-dmin > bound || math.IsNaN(dmax-dmin) {
					t.Fatalf("ShardRows(%d, %d/%d) = %v: %.2f off its share of a span, more than log2(N)+1 = %.2f", n, i, count, rows, dmax-dmin, bound)
				}
			}
			if slices.Contains(seen, false) || hi-lo > 1 {
				t.Fatalf("%d shards of %d rows: some row in none, or sizes %d … %d", count, n, lo, hi)
			}
		}
		if _, err := retrain.ShardRows(n, shard.Shard{Index: 0, Count: n + 1}); err == nil || !strings.Contains(err.Error(), "Shard") {
			t.Errorf("%d shards of %d rows: %v, want an error naming Shard", n+1, n, err)
		}
	}
	if _, err := retrain.ShardRows(10, shard.Shard{Index: 3, Count: 3}); err == nil {
		t.Error("shard 3/3 accepted")
	}
}

// TestShardBalance: in the 12 retrainings of resumeJob (3 checkpoints ×
// 2 parts × 2 seeds), 3 shards each get every checkpoint, where
// contiguous blocks of the job's order would give each shard one
// checkpoint only: the latest (cheap, the model is there already) to the
// first, the earliest (expensive) to the last.
func TestShardBalance(t *testing.T) {
	plan := retrain.Plan([]int{100, 50, 0}, []string{retrain.Attention, retrain.Outer}, 2)
	for i := range 3 {
		rows, err := retrain.ShardRows(len(plan), shard.Shard{Index: i, Count: 3})
		if err != nil {
			t.Fatal(err)
		}
		cps := map[int]bool{}
		for _, k := range rows {
			cps[plan[k].Checkpoint] = true
		}
		if len(rows) != 4 || len(cps) != 3 {
			t.Errorf("shard %d/3: rows %v, checkpoints %v; want 4 rows over all 3 checkpoints", i, rows, cps)
		}
	}
}

// runShard runs (Run, then Write as Do does) the job opt describes, or
// its shard s, into dir, as built by software; it fails the test unless
// the result is complete.
func runShard(t *testing.T, r *expio.Run, opt retrain.Options, s shard.Shard, dir, software string) *retrain.Result {
	t.Helper()
	opt.Shard, opt.Out = s, dir
	if err := opt.Check(); err != nil {
		t.Fatal(err)
	}
	res, err := retrain.Run(context.Background(), r, opt)
	if err != nil || !res.Complete {
		t.Fatalf("shard %v: %v, %+v", s, err, res)
	}
	if err := retrain.Write(dir, r, opt, res, software); err != nil {
		t.Fatal(err)
	}
	return res
}

// mergeFiles are the files of a retrain output that Merge writes.
var mergeFiles = []string{retrain.ProgressFile, retrain.CSVFile, retrain.SummaryFile, retrain.FigureBase + ".png", retrain.FigureBase + ".svg"}

// sameOutputs checks that dirs got and want hold the same mergeFiles,
// byte for byte.
func sameOutputs(t *testing.T, got, want string) {
	t.Helper()
	for _, f := range mergeFiles {
		a, err := os.ReadFile(filepath.Join(want, f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(got, f))
		if err != nil {
			t.Fatal(err)
		}
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s: merged (%d bytes) differs from the unsharded job's (%d bytes):\n%s\nwant\n%s", f, len(b), len(a), clip(b), clip(a))
		}
	}
}

func clip(b []byte) []byte {
	if len(b) > 2000 || !isText(b) {
		return []byte("(binary or long)")
	}
	return b
}

func isText(b []byte) bool { return !bytes.ContainsRune(b, 0) && bytes.IndexByte(b, 0x89) < 0 }

// shardedJob runs resumeJob whole into want and as 3 shards into
// shards[0..2] (software "test" for all), and returns the directories.
func shardedJob(t *testing.T) (r *expio.Run, opt retrain.Options, want string, shards []string) {
	t.Helper()
	r, opt = resumeJob(t)
	root := t.TempDir()
	want = filepath.Join(root, "whole")
	whole := runShard(t, r, opt, shard.Shard{}, want, "test")
	epochs := map[int]bool{}
	for _, row := range whole.Rows {
		epochs[row.Epochs] = true
	}
	if len(epochs) < 3 {
		t.Fatalf("the rows reach the target after %v epochs: too alike for the comparison to mean much", epochs)
	}
	for i := range 3 {
		dir := filepath.Join(root, "shard"+string(rune('0'+i)))
		res := runShard(t, r, opt, shard.Shard{Index: i, Count: 3}, dir, "test")
		if len(res.Rows) != 4 || res.Shard == nil || res.Shard.Index != i || res.Shard.Of != 12 {
			t.Fatalf("shard %d/3: %d rows, record %+v", i, len(res.Rows), res.Shard)
		}
		shards = append(shards, dir)
	}
	return r, opt, want, shards
}

// TestMergeEqualsUnsharded: the 3 shards of a job, given in any order,
// merge into the files of the unsharded job, byte for byte; each shard's
// own files record the shard; merging again into the same directory
// rewrites the same files.
func TestMergeEqualsUnsharded(t *testing.T) {
	_, _, want, shards := shardedJob(t)
	for i, dir := range shards {
		if !retrain.IsShard(dir) {
			t.Errorf("IsShard(%s) = false", dir)
		}
		s, err := retrain.ReadSummary(dir)
		if err != nil || s.Shard == nil || s.Shard.Index != i || s.Shard.Count != 3 || len(s.Shard.Rows) != 4 || s.Shard.Order != retrain.ShardOrder || !s.Complete {
			t.Errorf("%s: summary's shard record %+v, %v", dir, s.Shard, err)
		}
	}
	if retrain.IsShard(want) || retrain.IsShard(t.TempDir()) {
		t.Error("IsShard true for an unsharded output or an empty directory")
	}
	out := filepath.Join(t.TempDir(), "merged")
	var log bytes.Buffer
	s, err := retrain.Merge(out, []string{shards[2], shards[0], shards[1]}, &log)
	if err != nil {
		t.Fatalf("Merge: %v\n%s", err, &log)
	}
	if s.Shard != nil || !s.Complete || !strings.Contains(log.String(), "merged 3 shards (12 retrainings)") {
		t.Errorf("Merge: summary shard %+v, complete %v; log %q", s.Shard, s.Complete, &log)
	}
	sameOutputs(t, out, want)
	if _, err := retrain.Merge(out, shards, nil); err != nil {
		t.Fatalf("Merge again into its own output: %v", err)
	}
	sameOutputs(t, out, want)
}

// TestMergeRefuses: Merge refuses, naming the shard and the problem, and
// writes nothing: a missing, duplicated, unfinished, foreign (another run,
// other settings, another build, another split), non-shard or malformed
// shard, and an output directory that is a shard or holds another result.
// Shards that differ in their threads only merge, with a note.
func TestMergeRefuses(t *testing.T) {
	r, opt, want, shards := shardedJob(t)
	root := t.TempDir()
	out := filepath.Join(root, "out")
	refused := func(what string, dirs []string, wants ...string) {
		t.Helper()
		s, err := retrain.Merge(out, dirs, nil)
		for _, w := range wants {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: got %v, want an error mentioning %q", what, err, w)
				break
			}
		}
		if s != nil {
			t.Errorf("%s: returned a summary", what)
		}
		if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %s was created (%v)", what, out, err)
		}
	}
	refused("no shards", nil, "no shard outputs")
	refused("missing shard", shards[:1], "missing shards 1, 2 of 3 (1 given)")
	refused("missing middle shard", []string{shards[0], shards[2]}, "missing shard 1 of 3")
	refused("duplicate", []string{shards[0], shards[1], shards[1], shards[2]}, shards[1]+" and "+shards[1]+" are both shard 1/3")
	refused("whole job as a shard", []string{want}, want+" holds the output of a whole retrain job, not of one shard")
	empty := filepath.Join(root, "empty")
	refused("not an output", append([]string{empty}, shards...), empty+" holds no retrain output")

	// Another split: shard 1/4 overlaps the shards of 3.
	four := filepath.Join(root, "four")
	runShard(t, r, opt, shard.Shard{Index: 1, Count: 4}, four, "test")
	refused("another split", append(slices.Clone(shards), four), "shard 1/4 ("+four+") is one of 4 shards of 12 retrainings", "shard 0/3 ("+shards[0]+") one of 3 of 12", "overlap")

	// Another build.
	build := filepath.Join(root, "build")
	runShard(t, r, opt, shard.Shard{Index: 2, Count: 3}, build, "other")
	refused("another build", []string{shards[0], shards[1], build}, "shard 2/3 ("+build+") was computed by another build (other)")

	// Other settings.
	settings := filepath.Join(root, "settings")
	o := opt
	o.MaxEpochs = 39
	runShard(t, r, o, shard.Shard{Index: 1, Count: 3}, settings, "test")
	refused("other settings", []string{shards[0], settings, shards[2]}, "shard 1/3 ("+settings+") is of this run with other settings than shard 0/3", "MaxEpochs 39 in it, 40 in shard 0/3")

	// Another run.
	other := expiotest.OpenTinyModuloRun(t, retrain.Command, 10, 50, 25)
	other.Data = memorized(other)
	otherDir := filepath.Join(root, "other-run")
	runShard(t, other, opt, shard.Shard{Index: 0, Count: 3}, otherDir, "test")
	refused("another run", []string{shards[2], shards[1], otherDir}, "shard 0/3 ("+otherDir+") is of another run", other.Fingerprint, r.Fingerprint)

	// An unfinished shard: cancelled after 2 of its 4 rows, and one killed
	// before its summary was written.
	unfinished := filepath.Join(root, "unfinished")
	ctx, cancel := context.WithCancel(context.Background())
	u := opt
	u.Shard, u.Out = shard.Shard{Index: 1, Count: 3}, unfinished
	u.Progress = func(done, total int) {
		if total != 4 {
			t.Errorf("shard progress total %d, want 4", total)
		}
		if done == 2 {
			cancel()
		}
	}
	if _, err := retrain.Run(ctx, r, u); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled shard: %v", err)
	}
	cancel()
	if !retrain.IsShard(unfinished) {
		t.Error("IsShard false for an unfinished shard")
	}
	refused("unfinished shard", []string{shards[0], unfinished, shards[2]}, "shard 1/3 ("+unfinished+") is unfinished: 2 of its 4 retrainings done")
	started := filepath.Join(root, "started")
	s0 := opt
	s0.Shard, s0.Out = shard.Shard{Index: 1, Count: 3}, started
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := retrain.Run(ctx, r, s0); !errors.Is(err, context.Canceled) {
		t.Fatalf("shard cancelled before its first row: %v", err)
	}
	if !retrain.IsShard(started) {
		t.Error("IsShard false for a shard whose task started but finished no row")
	}
	refused("started shard", []string{shards[0], started, shards[2]}, "is unfinished: 0 of its 4 retrainings done")
	noSummary := testrun.Copy(t, shards[1])
	if err := os.Remove(filepath.Join(noSummary, retrain.SummaryFile)); err != nil {
		t.Fatal(err)
	}
	refused("shard without summary", []string{shards[0], noSummary, shards[2]}, "shard 1/3 ("+noSummary+") is unfinished: its rows are done but summary.json was not written")

	// Rows that are not the shard's.
	forged := testrun.Copy(t, shards[1])
	var p retrain.Progress
	b, _ := os.ReadFile(filepath.Join(forged, retrain.ProgressFile))
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	p.Rows[0].Seed = 7
	if err := expio.WriteJSON(filepath.Join(forged, retrain.ProgressFile), p); err != nil {
		t.Fatal(err)
	}
	refused("forged rows", []string{shards[0], forged, shards[2]}, "shard 1/3 ("+forged+"): its row 0 is checkpoint")

	// The output directory: a shard, or holding another result.
	if _, err := retrain.Merge(shards[1], shards, nil); err == nil || !strings.Contains(err.Error(), "Out "+shards[1]+" is the shard output") {
		t.Errorf("merge into a shard: %v", err)
	}
	if _, err := retrain.Merge(four, shards, nil); err == nil || !strings.Contains(err.Error(), "Out "+four) || !strings.Contains(err.Error(), "Shard 1/4 there, none here") {
		t.Errorf("merge into another shard's output: %v", err)
	}
	if _, err := retrain.Merge(filepath.Join(otherDir), shards, nil); err == nil || !strings.Contains(err.Error(), "result of another run") {
		t.Errorf("merge into another run's output: %v", err)
	}

	// Threads only: merged, with a note; the first shard's software is
	// recorded.
	threads := filepath.Join(root, "threads")
	runShard(t, r, opt, shard.Shard{Index: 0, Count: 3}, threads, "explaind (devel), go, gemm backend x, 3 threads")
	for i := 1; i <= 2; i++ {
		dst := filepath.Join(root, "threads"+string(rune('0'+i)))
		runShard(t, r, opt, shard.Shard{Index: i, Count: 3}, dst, "explaind (devel), go, gemm backend x, 5 threads")
	}
	var log bytes.Buffer
	merged := filepath.Join(root, "threads-merged")
	s, err := retrain.Merge(merged, []string{threads, filepath.Join(root, "threads1"), filepath.Join(root, "threads2")}, &log)
	if err != nil {
		t.Fatalf("shards differing in threads only: %v", err)
	}
	if s.Software != "explaind (devel), go, gemm backend x, 3 threads" || !strings.Contains(log.String(), "ran with other threads") {
		t.Errorf("shards differing in threads only: software %q, log %q", s.Software, &log)
	}
}

// TestShardResume: a shard interrupted after 1 of its 4 rows resumes
// after it (a shard's directory asked for another shard, or for the
// whole job, is refused naming the shard), and its rows are those of the
// uninterrupted shard; too many shards are refused before any work.
func TestShardResume(t *testing.T) {
	r, opt := resumeJob(t)
	root := t.TempDir()
	want := runShard(t, r, opt, shard.Shard{Index: 2, Count: 3}, filepath.Join(root, "want"), "test")
	dir := filepath.Join(root, "got")
	ctx, cancel := context.WithCancel(context.Background())
	o := opt
	o.Shard, o.Out = shard.Shard{Index: 2, Count: 3}, dir
	o.Progress = func(done, _ int) {
		if done == 1 {
			cancel()
		}
	}
	if _, err := retrain.Run(ctx, r, o); !errors.Is(err, context.Canceled) {
		t.Fatalf("first leg: %v", err)
	}
	for _, c := range []struct {
		s    shard.Shard
		want string
	}{{shard.Shard{Index: 1, Count: 3}, "Shard 2/3 there, 1/3 here"}, {shard.Shard{}, "Shard 2/3 there, none here"}} {
		b := opt
		b.Shard = c.s
		if _, err := retrain.Resume(dir, r, b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("resume of shard 2/3 as %v: %v, want %q", c.s, err, c.want)
		}
	}
	var log bytes.Buffer
	o.Progress, o.Log = nil, &log
	res, err := retrain.Run(context.Background(), r, o)
	if err != nil || res.Reused != 1 || !slices.Equal(res.Rows, want.Rows) || !strings.Contains(log.String(), "resuming: 1 of 4 retrainings already done of shard 2/3") {
		t.Errorf("resumed shard: %v, reused %d, rows equal %v, log %q", err, res.Reused, slices.Equal(res.Rows, want.Rows), &log)
	}

	many := opt
	many.Shard, many.Out = shard.Shard{Index: 0, Count: 13}, filepath.Join(root, "many")
	many.Progress = func(int, int) { t.Error("a retraining ran for 13 shards of 12") }
	if _, err := retrain.Run(context.Background(), r, many); err == nil || !strings.Contains(err.Error(), "the job has 12 retrainings (3 checkpoints × 2 parts × 2 seeds)") || !strings.Contains(err.Error(), "use at most 12 shards") {
		t.Errorf("13 shards of 12: %v", err)
	}
	if _, err := os.Stat(many.Out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("13 shards of 12: %s created", many.Out)
	}
	bad := opt
	bad.Shard = shard.Shard{Index: 3, Count: 3}
	if err := bad.Check(); err == nil || !strings.Contains(err.Error(), "Shard") {
		t.Errorf("Check of shard 3/3: %v", err)
	}
}
