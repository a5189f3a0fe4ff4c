// Command flux-health judges Kubernetes objects the way Flux's kustomize-controller judges them
// with a Kustomization's healthCheckExprs, so that the expressions Pomona documents can be
// tested against the status Pomona really writes (tests/kube_safety.rs).
//
// Input on stdin, one JSON document: {"exprs": {"current": …, "failed": …, "inProgress": …},
// "object": {…}}. Output on stdout, one line: Current, Failed, InProgress, or
// "Unknown: <error>" when an expression cannot be evaluated (Flux then keeps polling until the
// Kustomization's timeout). Exit status 2 when an expression does not parse (Flux refuses the
// Kustomization as Stalled with reason InvalidCELExpression).
//
// What Flux does, and this program therefore does (fluxcd/pkg runtime/cel, v0.110 to v0.123):
// the CEL environment is the standard library with homogeneous aggregate literals, eager
// declaration checks, UTC as default time zone, cross-type numeric comparisons, optional types
// and the strings, sets and encoders extensions; expressions are parsed, not type-checked, and
// evaluated with every top-level field of the object as a variable. An object whose
// status.observedGeneration (an integer) differs from metadata.generation is InProgress without
// evaluating anything; otherwise inProgress, failed and current are tried in that order and the
// first that is true decides; none true is InProgress; the first evaluation error ends it.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
)

type input struct {
	Exprs struct {
		Current    string `json:"current"`
		Failed     string `json:"failed"`
		InProgress string `json:"inProgress"`
	} `json:"exprs"`
	Object json.RawMessage `json:"object"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(1, "reading stdin: %v", err)
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		fail(1, "stdin is not {\"exprs\": …, \"object\": …}: %v", err)
	}
	object, err := decodeLikeTheAPIServer(in.Object)
	if err != nil {
		fail(1, "object: %v", err)
	}
	env, err := cel.NewEnv(
		cel.HomogeneousAggregateLiterals(),
		cel.EagerlyValidateDeclarations(true),
		cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Sets(),
		ext.Encoders(),
	)
	if err != nil {
		fail(1, "CEL environment: %v", err)
	}
	if in.Exprs.Current == "" {
		fail(2, "expression current not specified")
	}
	type named struct{ result, expr string }
	var ordered []named
	for _, e := range []named{{"InProgress", in.Exprs.InProgress}, {"Failed", in.Exprs.Failed}, {"Current", in.Exprs.Current}} {
		if e.expr != "" {
			ordered = append(ordered, e)
		}
	}
	programs := make([]cel.Program, len(ordered))
	for i, e := range ordered {
		ast, issues := env.Parse(e.expr)
		if issues != nil && issues.Err() != nil {
			fail(2, "%s expression %q does not parse: %v", e.result, e.expr, issues.Err())
		}
		programs[i], err = env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.InterruptCheckFrequency(100))
		if err != nil {
			fail(2, "%s expression %q: %v", e.result, e.expr, err)
		}
	}
	if generationBehind(object) {
		fmt.Println("InProgress")
		return
	}
	for i, e := range ordered {
		value, _, err := programs[i].ContextEval(context.Background(), object)
		if err != nil {
			fmt.Printf("Unknown: failed to evaluate the CEL expression '%s': %v\n", e.expr, err)
			return
		}
		judged, ok := value.(types.Bool)
		if !ok {
			fmt.Printf("Unknown: failed to evaluate CEL expression as boolean: '%s'\n", e.expr)
			return
		}
		if judged {
			fmt.Println(e.result)
			return
		}
	}
	fmt.Println("InProgress")
}

// generationBehind is Flux's check before any expression: an integer status.observedGeneration
// other than metadata.generation means the controller has not judged this generation yet.
func generationBehind(object map[string]any) bool {
	status, _ := object["status"].(map[string]any)
	observed, ok := status["observedGeneration"].(int64)
	if !ok {
		return false
	}
	metadata, _ := object["metadata"].(map[string]any)
	generation, _ := metadata["generation"].(int64)
	return observed != generation
}

// decodeLikeTheAPIServer decodes JSON as Kubernetes' unstructured objects are: integers as
// int64, other numbers as float64.
func decodeLikeTheAPIServer(raw []byte) (map[string]any, error) {
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber()
	var object map[string]any
	if err := decoder.Decode(&object); err != nil {
		return nil, err
	}
	return convertNumbers(object).(map[string]any), nil
}

func convertNumbers(value any) any {
	switch v := value.(type) {
	case map[string]any:
		for key, item := range v {
			v[key] = convertNumbers(item)
		}
		return v
	case []any:
		for i, item := range v {
			v[i] = convertNumbers(item)
		}
		return v
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	default:
		return v
	}
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "flux-health: "+format+"\n", args...)
	os.Exit(code)
}
