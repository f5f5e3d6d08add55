package setting

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
)

// flag is a namer like cmd/explaind's: a few names have flags.
func flag(name string) string {
	switch name {
	case "TestSize":
		return "--test-size"
	case "Out":
		return "--out"
	case "Seeds":
		return "--seeds"
	}
	return name
}

func TestRender(t *testing.T) {
	cause := fmt.Errorf("open x: %w", fs.ErrNotExist)
	for _, c := range []struct {
		err          error
		plain, flags string
	}{
		{Invalid("TestSize", 400, "the %s split has %d samples", "val", 370),
			"invalid TestSize 400: the val split has 370 samples",
			"invalid --test-size 400: the val split has 370 samples"},
		{Invalid("Parts", nil, "%q named twice", "outer"),
			`invalid Parts: "outer" named twice`, `invalid Parts: "outer" named twice`},
		{Invalid("Quadrature", `"simpson"`, "want adaptive"),
			`invalid Quadrature "simpson": want adaptive`, `invalid Quadrature "simpson": want adaptive`},
		{Invalid("Out", "/d", "%w", cause),
			"invalid Out /d: open x: file does not exist", "invalid --out /d: open x: file does not exist"},
		{Errorf("%s is full; choose another %v", "/d", Name("Out")),
			"/d is full; choose another Out", "/d is full; choose another --out"},
		{&Error{Name: "TestSize", Value: 3, Problem: "too many"},
			"invalid TestSize 3: too many", "invalid --test-size 3: too many"},
		// Settings inside a wrapped error, and behind a plain wrapper.
		{fmt.Errorf("job: %w", Errorf("%v %d there, %d here: choose another %v",
			Name("Seeds"), 2, 3, Invalid("Out", "/d", "taken"))),
			"job: Seeds 2 there, 3 here: choose another invalid Out /d: taken",
			"job: --seeds 2 there, 3 here: choose another invalid --out /d: taken"},
		{errors.Join(errors.New("first"), Invalid("TestSize", 1, "odd")),
			"first\ninvalid TestSize 1: odd", "first\ninvalid --test-size 1: odd"},
		{errors.New("no settings"), "no settings", "no settings"},
	} {
		if got := c.err.Error(); got != c.plain {
			t.Errorf("Error() = %q, want %q", got, c.plain)
		}
		if got := Rename(c.err, flag); got != c.flags {
			t.Errorf("Rename = %q, want %q", got, c.flags)
		}
	}
	if Rename(nil, flag) != "" {
		t.Error("Rename(nil) is not empty")
	}
}

func TestUnwrapAndAs(t *testing.T) {
	err := fmt.Errorf("job: %w", Invalid("Out", "/d", "%w", fs.ErrExist))
	if !errors.Is(err, fs.ErrExist) {
		t.Error("the cause is lost")
	}
	var e *Error
	if !errors.As(err, &e) || e.Name != "Out" || e.Value != "/d" || e.Problem != "file already exists" {
		t.Errorf("errors.As: %+v", e)
	}
	if !strings.HasPrefix(err.Error(), "job: invalid Out /d") {
		t.Error(err)
	}
}
