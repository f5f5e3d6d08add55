package job

import (
	"reflect"
	"testing"

	"github.com/explaind/explaind/epk"
)

// TestJobKeyCoversQuadrature checks that every field of the filled
// quadrature enters the job key: a build whose defaults differ (Adaptive
// started from 4 intervals before it started from 1) must not resume a
// job another build saved.
func TestJobKeyCoversQuadrature(t *testing.T) {
	for _, name := range []string{"adaptive", "exact:3", "midpoint:10", "gauss:4"} {
		q, err := ParseQuadrature(name, 1e-4, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, f32 := range []bool{false, true} {
			var filled epk.Quadrature
			if f32 {
				filled, err = epk.Filled[float32](q)
			} else {
				filled, err = epk.Filled[float64](q)
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			o := Options{Presets: []string{"validation"}, From: 0, To: 10, Precision: "float64"}
			base := jobKey(o, "fp", []int{0, 1}, filled)
			v := reflect.ValueOf(&filled).Elem()
			for i := 0; i < v.NumField(); i++ {
				changed := filled
				f := reflect.ValueOf(&changed).Elem().Field(i)
				switch f.Kind() {
				case reflect.Int:
					f.SetInt(f.Int() + 1)
				case reflect.Float64:
					f.SetFloat(f.Float() * 2)
				case reflect.Bool:
					f.SetBool(!f.Bool())
				default:
					t.Fatalf("field %s of kind %v: extend the test", v.Type().Field(i).Name, f.Kind())
				}
				if jobKey(o, "fp", []int{0, 1}, changed) == base {
					t.Errorf("%s (float32 %v): changing Quadrature.%s leaves the job key %s", name, f32, v.Type().Field(i).Name, base)
				}
			}
		}
	}
	// A default the evaluator fills in is in the key: the adaptive rule's
	// starting intervals.
	q, _ := ParseQuadrature("adaptive", 1e-4, false)
	one, err := epk.Filled[float32](q)
	if err != nil {
		t.Fatal(err)
	}
	if one.Start != 1 {
		t.Fatalf("Filled left Start %d, want the default 1", one.Start)
	}
	four := one
	four.Start = 4
	o := Options{Presets: []string{"validation"}, To: 10}
	if jobKey(o, "fp", nil, one) == jobKey(o, "fp", nil, four) {
		t.Error("starting from 1 and from 4 intervals give one job key")
	}
}
