package swap_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/experiments/swap"
)

// FuzzParseKeptSet parses arbitrary --kept values and asks whether the
// set keeps an arbitrary parameter. No input may panic; a set that parses
// keeps at least one group, each a group of the model, once, in the
// model's order, under the name as written, and keeps a parameter exactly
// when "all-but-" the same groups does not. The seeds in
// testdata/fuzz/FuzzParseKeptSet are the default sets and malformed ones.
func FuzzParseKeptSet(f *testing.F) {
	groups := swap.Groups()
	f.Fuzz(func(t *testing.T, s, param string) {
		k, err := swap.ParseKeptSet(s)
		if err != nil {
			return
		}
		if k.Name != s || len(k.Groups) == 0 {
			t.Errorf("ParseKeptSet(%q) = %+v", s, k)
		}
		last := -1
		for _, g := range k.Groups {
			i := slices.Index(groups, g)
			if i <= last {
				t.Errorf("ParseKeptSet(%q): groups %v, not distinct groups of %v in order", s, k.Groups, groups)
				break
			}
			last = i
		}
		// The set and the set of every other group keep complementary
		// parameters.
		other, err := swap.ParseKeptSet("all-but-" + s)
		keeps, err1 := k.Keeps(param)
		if err == nil && !strings.HasPrefix(s, "all-but-") {
			if keeps2, err2 := other.Keeps(param); (err1 == nil) != (err2 == nil) || err1 == nil && keeps == keeps2 {
				t.Errorf("%q keeps %s: %v (%v); %q keeps it: %v (%v)", s, param, keeps, err1, other.Name, keeps2, err2)
			}
		}
	})
}
