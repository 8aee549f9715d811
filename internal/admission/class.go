package admission

import (
	"fmt"
	"strings"
)

// Class orders starts. Critical bypasses the gate; the others queue, high
// before normal before low before background, with aging so that no class
// starves.
type Class int8

const (
	Critical Class = iota
	High
	Normal
	Low
	Background
	numClasses
)

// Classes lists every class in priority order.
var Classes = []Class{Critical, High, Normal, Low, Background}

var classNames = [numClasses]string{"critical", "high", "normal", "low", "background"}

func (c Class) String() string {
	if c < 0 || c >= numClasses {
		return fmt.Sprintf("class(%d)", int8(c))
	}
	return classNames[c]
}

// ParseClass accepts a class name, case-insensitively. The empty string is
// Normal.
func ParseClass(s string) (Class, error) {
	if s == "" {
		return Normal, nil
	}
	for i, n := range classNames {
		if strings.EqualFold(s, n) {
			return Class(i), nil
		}
	}
	return 0, fmt.Errorf("admission: unknown class %q (want one of %s)", s, strings.Join(classNames[:], ", "))
}

// Valid reports whether c is one of the defined classes.
func (c Class) Valid() bool { return c >= 0 && c < numClasses }
