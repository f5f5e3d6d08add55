package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// field is one row of a key-value table.
type field struct {
	key, value string
}

// flatFields flattens a JSON object into rows with dotted keys
// ("optimizer.lr"), in the order the file has them. Arrays of scalars stay
// one value ("[1, 2]"); other arrays get indexed keys ("a[0].b").
func flatFields(raw []byte) ([]field, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var out []field
	if err := flatten(d, "", &out); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the JSON value")
	}
	return out, nil
}

// flatten reads one JSON value from d and appends its rows under prefix.
func flatten(d *json.Decoder, prefix string, out *[]field) error {
	t, err := d.Token()
	if err != nil {
		return err
	}
	delim, ok := t.(json.Delim)
	if !ok {
		*out = append(*out, field{prefix, scalar(t)})
		return nil
	}
	switch delim {
	case '{':
		n := 0
		for d.More() {
			k, err := d.Token()
			if err != nil {
				return err
			}
			key := k.(string)
			if prefix != "" {
				key = prefix + "." + key
			}
			if err := flatten(d, key, out); err != nil {
				return err
			}
			n++
		}
		if n == 0 && prefix != "" {
			*out = append(*out, field{prefix, "{}"})
		}
	case '[':
		var elems [][]field
		simple := true
		for d.More() {
			var sub []field
			if err := flatten(d, "", &sub); err != nil {
				return err
			}
			if len(sub) != 1 || sub[0].key != "" {
				simple = false
			}
			elems = append(elems, sub)
		}
		if simple {
			vals := make([]string, len(elems))
			for i, e := range elems {
				vals[i] = e[0].value
			}
			*out = append(*out, field{prefix, "[" + strings.Join(vals, ", ") + "]"})
		} else {
			for i, e := range elems {
				for _, f := range e {
					key := fmt.Sprintf("%s[%d]", prefix, i)
					if f.key != "" {
						key += "." + f.key
					}
					*out = append(*out, field{key, f.value})
				}
			}
		}
	}
	_, err = d.Token() // the closing delimiter
	return err
}

// scalar formats a JSON scalar token.
func scalar(t json.Token) string {
	switch v := t.(type) {
	case nil:
		return "null"
	case string:
		return v
	case bool:
		return strconv.FormatBool(v)
	case json.Number:
		return v.String()
	}
	return fmt.Sprint(t)
}

// readable adds a human-readable form to values whose key says what they
// are: byte counts and seconds.
func readable(f field) string {
	x, err := strconv.ParseFloat(f.value, 64)
	if err != nil {
		return f.value
	}
	switch {
	case strings.Contains(f.key, "bytes"):
		return fmt.Sprintf("%s (%s)", f.value, byteSize(x))
	case strings.HasSuffix(f.key, "seconds") && x >= 120:
		return fmt.Sprintf("%s (%.1f min)", f.value, x/60)
	}
	return f.value
}

// byteSize formats a byte count in kB, MB or GB (powers of 1000).
func byteSize(x float64) string {
	switch {
	case x >= 1e9:
		return fmt.Sprintf("%.2f GB", x/1e9)
	case x >= 1e6:
		return fmt.Sprintf("%.1f MB", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.1f kB", x/1e3)
	}
	return fmt.Sprintf("%.0f B", x)
}

// reorder puts the fields named in first at the front, in that order,
// followed by the rest in their own order.
func reorder(fs []field, first []string) []field {
	var out []field
	used := make([]bool, len(fs))
	for _, k := range first {
		for i, f := range fs {
			if !used[i] && f.key == k {
				out = append(out, f)
				used[i] = true
			}
		}
	}
	for i, f := range fs {
		if !used[i] {
			out = append(out, f)
		}
	}
	return out
}
