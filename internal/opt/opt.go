// Package opt reads option fields whose zero value means "the default".
package opt

import "cmp"

// Or is v when it is positive, else def: zero (or a negative value) means
// the default.
func Or[T cmp.Ordered](v, def T) T {
	var zero T
	if v > zero {
		return v
	}
	return def
}

// OrNone is v when it is positive, def when it is zero, and zero ("none")
// when it is negative.
func OrNone[T cmp.Ordered](v, def T) T {
	var zero T
	if v < zero {
		return zero
	}
	return Or(v, def)
}
