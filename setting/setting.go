// Package setting reports bad settings in the terms of the API that has
// them, so that each front end can name them its own way.
//
// A library names a setting by its API name: the field of its options or
// configuration struct ("TestSize", "Out", "Optimizer.LR"), never by a
// command-line flag. An error about one setting is an *Error made by
// Invalid: "invalid TestSize 400: the val split has 370 samples". A
// message that only mentions settings (advice such as "choose another Out")
// is made by Errorf with each mentioned setting given as a Name argument.
// Both print with API names; Rename prints them as a front end calls them
// (cmd/explaind: its flags, "invalid --test-size 400: …").
//
// The rule: a library message that names a setting does so through this
// package. A library message may name a command of the command-line tool
// (`explaind epk --run RUN …`) only when it is about that tool's own files
// and the API has no way to say it; such exceptions are listed, with their
// reasons, in this package's TestNoFlagsInLibraries.
package setting

import (
	"fmt"
	"strings"
)

// Name is the API name of a setting used as an argument of Invalid's or
// Errorf's format: it prints as itself, and as the namer says under Rename.
type Name string

// Error is a setting with a bad value, or (Name empty) a message that
// mentions settings.
type Error struct {
	// Name is the API name of the setting at fault: a field of the
	// options or configuration ("TestSize", "Out", "Optimizer.LR").
	Name string
	// Value is the value given, printed with %v; nil prints none.
	Value any
	// Problem says what is wrong, with API names.
	Problem string

	// format and args make Problem; Rename reformats them.
	format string
	args   []any
	// wrapped are the errors that the format's %w verbs wrap.
	wrapped []error
}

// Invalid returns the error "invalid NAME VALUE: PROBLEM" (without VALUE
// when value is nil), the problem formatted like fmt.Errorf's message: %w
// wraps an error, and an argument of type Name is a setting.
func Invalid(name string, value any, format string, args ...any) *Error {
	e := Errorf(format, args...)
	e.Name, e.Value = name, value
	return e
}

// Errorf returns an error formatted like fmt.Errorf (%w wraps), whose
// arguments of type Name are settings: it mentions settings without one
// being at fault.
func Errorf(format string, args ...any) *Error {
	e := &Error{format: format, args: args}
	w := fmt.Errorf(format, args...)
	e.Problem = w.Error()
	switch u := w.(type) {
	case interface{ Unwrap() error }:
		e.wrapped = []error{u.Unwrap()}
	case interface{ Unwrap() []error }:
		e.wrapped = u.Unwrap()
	}
	return e
}

func (e *Error) Error() string { return e.render(e.Problem, e.Name) }

// Unwrap returns the errors wrapped by %w verbs of the problem.
func (e *Error) Unwrap() []error { return e.wrapped }

func (e *Error) render(problem, name string) string {
	if e.Name == "" {
		return problem
	}
	if e.Value == nil {
		return fmt.Sprintf("invalid %s: %s", name, problem)
	}
	return fmt.Sprintf("invalid %s %v: %s", name, e.Value, problem)
}

// Rename returns err's message with every setting named by namer(API
// name): those of each *Error in err's tree, the Name arguments of their
// formats included. The text around them is err's own.
func Rename(err error, namer func(name string) string) string {
	if err == nil {
		return ""
	}
	if e, ok := err.(*Error); ok {
		if e.format == "" { // made as a literal: Problem is all there is
			return e.render(e.Problem, namer(e.Name))
		}
		args := make([]any, len(e.args))
		for i, a := range e.args {
			switch a := a.(type) {
			case Name:
				args[i] = namer(string(a))
			case error:
				args[i] = renamed(Rename(a, namer))
			default:
				args[i] = a
			}
		}
		return e.render(fmt.Errorf(e.format, args...).Error(), namer(e.Name))
	}
	msg := err.Error()
	var children []error
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		children = []error{u.Unwrap()}
	case interface{ Unwrap() []error }:
		children = u.Unwrap()
	}
	for _, c := range children {
		if c == nil {
			continue
		}
		if plain, r := c.Error(), Rename(c, namer); r != plain {
			msg = strings.Replace(msg, plain, r, 1)
		}
	}
	return msg
}

// renamed is an error argument printed renamed: it prints under %v, %s
// and %w alike.
type renamed string

func (r renamed) Error() string { return string(r) }
