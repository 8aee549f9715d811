// Package ctl is startgatectl, the operator's and script's client of
// startgated.
//
// Scripts parse what startgatectl prints, so -o json and -o yaml render
// explicit structs with json tags (output.go) rather than protojson of the
// API messages: the API can grow fields and rename enums without breaking
// a script, and durations and classes come out as the words an operator
// types ("1.5s", "high"). YAML is the JSON converted, so both always agree.
//
// Exit codes are part of that interface: 0 success, 1 the daemon said no
// or could not be reached, 2 a usage error; hold exits with its command's
// code. Errors carry their class (usageError, exitError) up to Run, the one
// place that prints them and chooses the code.
//
// hold is the reason the Acquire API is a stream: the slot is tied to the
// open stream, so when startgatectl is killed the daemon takes the slot
// back without waiting for a hold cap.
package ctl
