package setting

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// flagLike matches a command-line flag, or a format that makes one
// ("--%s"), in a string.
var flagLike = regexp.MustCompile(`(^|[^-\w])--[a-z%]`)

// flagExceptions are the error messages outside cmd/ that may name flags:
// file (from the module root) and a part of the literal, with the reason.
var flagExceptions = []struct{ file, literal, reason string }{
	{"epkfile/epkfile.go", "create one with `explaind epk --run RUN --out %s`",
		"names the command that creates the explaind epk output directory this package reads; the tool's own files"},
	{"epkfile/epkfile.go", "compute it with `explaind epk --run %s --out DIR --preset %s`",
		"names the command that adds the missing preset to the explaind epk output directory; the tool's own files"},
}

// isErrorConstructor reports whether call makes an error from a message:
// fmt.Errorf, errors.New, or this package's Invalid and Errorf.
func isErrorConstructor(call *ast.CallExpr) bool {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	if !ok {
		return false
	}
	switch pkg.Name + "." + sel.Sel.Name {
	case "fmt.Errorf", "errors.New", "setting.Invalid", "setting.Errorf":
		return true
	}
	return false
}

// TestNoFlagsInLibraries fails when a non-test Go file outside cmd/ makes
// an error whose message names a command-line flag: libraries name their
// settings through this package (see the package comment), and
// cmd/explaind renames them to its flags.
func TestNoFlagsInLibraries(t *testing.T) {
	root := ".."
	used := make([]bool, len(flagExceptions))
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "cmd" || rel == "testdata" || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		files++
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || !isErrorConstructor(call) {
				return true
			}
			for _, arg := range call.Args {
				ast.Inspect(arg, func(n ast.Node) bool {
					lit, ok := n.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						return true
					}
					s, err := strconv.Unquote(lit.Value)
					if err != nil || !flagLike.MatchString(s) {
						return true
					}
					for i, e := range flagExceptions {
						if e.file == rel && strings.Contains(s, e.literal) {
							used[i] = true
							return true
						}
					}
					t.Errorf("%s: an error names a flag: %s; name the setting with setting.Invalid or a setting.Name argument",
						fset.Position(lit.Pos()), lit.Value)
					return true
				})
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("read %d Go files: not the module's", files)
	}
	for i, e := range flagExceptions {
		if !used[i] {
			t.Errorf("the exception %q of %s is no longer needed: remove it", e.literal, e.file)
		}
	}
}

func TestFlagLike(t *testing.T) {
	for s, want := range map[string]bool{"choose another --out": true, "invalid --%s: %s": true, "--run DIR": true,
		"a -- b": false, "x--y": false, "---": false, "%s: %w": false, "choose another Out": false} {
		if flagLike.MatchString(s) != want {
			t.Errorf("flagLike(%q) = %v, want %v", s, !want, want)
		}
	}
}
