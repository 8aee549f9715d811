// Package structdiff names the fields in which two values of one struct
// type differ, for the log lines that say what an operator's action or a
// config reload changed ("Targets.CPU: 0.2 -> 0.1").
package structdiff

import (
	"fmt"
	"reflect"
	"strings"
)

// Fields lists the exported fields of before and after (structs of the
// same type) whose values differ, as "name: old -> new", in field order.
// Nested structs are walked and their fields named "Outer.Inner"; a struct
// with a String method counts as one value. With tag set (e.g. "toml") a
// field is named by that tag's name, and fields tagged "-" are skipped.
// Values are compared by their fmt.Sprint form, so slices and maps
// compare by content.
func Fields(before, after any, tag string) []string {
	b, a := reflect.ValueOf(before), reflect.ValueOf(after)
	if b.Type() != a.Type() || b.Kind() != reflect.Struct {
		panic(fmt.Sprintf("structdiff: %T and %T are not one struct type", before, after))
	}
	var out []string
	walk("", b, a, tag, &out)
	return out
}

var stringer = reflect.TypeFor[fmt.Stringer]()

func walk(prefix string, b, a reflect.Value, tag string, out *[]string) {
	for i := range b.NumField() {
		f := b.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		name := f.Name
		if tag != "" {
			if t, _, _ := strings.Cut(f.Tag.Get(tag), ","); t == "-" {
				continue
			} else if t != "" {
				name = t
			}
		}
		bv, av := b.Field(i), a.Field(i)
		if bv.Kind() == reflect.Struct && bv.Type().NumField() > 0 && !bv.Type().Implements(stringer) {
			walk(prefix+name+".", bv, av, tag, out)
			continue
		}
		if bs, as := fmt.Sprint(bv.Interface()), fmt.Sprint(av.Interface()); bs != as {
			*out = append(*out, prefix+name+": "+bs+" -> "+as)
		}
	}
}
