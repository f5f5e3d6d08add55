package progress

import (
	"bytes"
	"strings"
	"testing"

	"github.com/schollz/progressbar/v3"
)

func TestFuncDrawsOnceTheTotalIsKnown(t *testing.T) {
	if f := Func(nil, "nothing"); f != nil {
		t.Error("Func(nil, …) must return a nil callback")
	}
	var w bytes.Buffer
	f := Func(&w, "counting")
	if w.Len() != 0 {
		t.Fatalf("a bar was drawn before the first call: %q", w.String())
	}
	f(1, 4)
	if s := w.String(); !strings.Contains(s, "counting") || !strings.Contains(s, "1/4") {
		t.Errorf("after 1 of 4: %q; want the description and the count", s)
	}
}

func TestNewTakesExtraOptions(t *testing.T) {
	var w bytes.Buffer
	bar := New(&w, 10, "training", progressbar.OptionSetItsString("steps"), progressbar.OptionShowIts())
	bar.Set(3)
	if s := w.String(); !strings.Contains(s, "training") || !strings.Contains(s, "3/10") || !strings.Contains(s, "steps/s") {
		t.Errorf("after 3 of 10: %q", s)
	}
	if bar.GetMax() != 10 {
		t.Errorf("max %d, want 10", bar.GetMax())
	}
}
