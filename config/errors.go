package config

import (
	"errors"
	"reflect"
	"strings"
	"time"
)

// ErrInvalid is matched (errors.Is) by every error Load and Validate return.
var ErrInvalid = errors.New("config: invalid")

// FieldError is one problem with one key (a dotted YAML path such as
// "targets.default.pathling.url") or environment variable.
type FieldError struct {
	Path    string
	Message string
}

// Error returns "<path>: <message>".
func (e *FieldError) Error() string { return e.Path + ": " + e.Message }

// Is reports whether target is ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// Errors lists every problem found, in a stable order. It is never empty
// when returned; errors.As finds its first *FieldError.
type Errors []*FieldError

// Error joins the problems with "; ".
func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap returns the problems, so errors.Is and errors.As see each of them.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

func (es *Errors) add(path, msg string) {
	*es = append(*es, &FieldError{Path: path, Message: msg})
}

var (
	durationType  = reflect.TypeFor[time.Duration]()
	secretType    = reflect.TypeFor[Secret]()
	secretURLType = reflect.TypeFor[SecretURL]()
)

func isSecret(t reflect.Type) bool { return t == secretType || t == secretURLType }

// describe names what a value of type t must look like, for messages.
func describe(t reflect.Type) string {
	switch {
	case t == durationType:
		return `a duration (e.g. "90s", "5m", "2h")`
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "an integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Slice:
		return "a list"
	default:
		return "a " + t.Kind().String()
	}
}
