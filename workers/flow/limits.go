package flow

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/vm/runtime"
)

// Bounds of one node's evaluations: every expression and template a node
// evaluates with one Scope shares them.
const (
	// DefaultEvalTimeout bounds evaluations whose scope carries no context
	// deadline (Scope.Bounded with a context without one, or no Bounded
	// at all).
	DefaultEvalTimeout = time.Second
	// MaxEvalSteps is how many predicate bodies (one per element that all,
	// map, filter, reduce... look at) the evaluations of one scope may run.
	MaxEvalSteps = 10_000_000
	// MaxEvalBytes is how many bytes the evaluations of one scope may build:
	// strings made by +, repeat, join, replace, split, toJSON, string,
	// upper, lower, toBase64, and 16 bytes per element that map, filter,
	// groupBy, sortBy, reverse, uniq, keys, values or toPairs produce.
	// Counted as built, not as kept.
	MaxEvalBytes = 16 << 20
	// pollEvery is how many steps pass between looks at the deadline and
	// the context: small, as one step may itself scan a large array.
	pollEvery = 16
	// elemBytes is what one element of a built array is counted as.
	elemBytes = 16
)

// Codes of LimitError.
const (
	CodeExpressionTimeout  = "expression_timeout"
	CodeExpressionTooLarge = "expression_too_large"
	CodeCancelled          = "cancelled"
)

// LimitError is an evaluation stopped by a bound: its deadline or step
// limit (expression_timeout), its memory (expression_too_large), or a
// cancel of its context (cancelled).
type LimitError struct {
	Code    string
	Message string
}

func (e *LimitError) Error() string { return e.Code + ": " + e.Message }

// budget is what the evaluations of one scope may still spend. Expressions
// reach it through the hidden name budgetName, which compileExpr adds to
// the calls it bounds; users cannot write it.
type budget struct {
	ctx      context.Context
	deadline time.Time
	timeout  time.Duration
	steps    int
	bytes    int // left
	limit    *LimitError
}

const budgetName = "__weft"

var budgetType = reflect.TypeOf((*budget)(nil))

func newBudget(ctx context.Context, timeout time.Duration) *budget {
	if timeout <= 0 {
		timeout = DefaultEvalTimeout
		if d, ok := ctx.Deadline(); ok {
			timeout = time.Until(d)
		}
	} else if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = time.Until(d)
	}
	return &budget{ctx: ctx, deadline: time.Now().Add(timeout), timeout: timeout, bytes: MaxEvalBytes}
}

// Bounded returns s with fresh bounds for the evaluations made with it:
// they stop within milliseconds of ctx's cancel, of timeout from now or
// ctx's deadline, whichever comes first (a timeout of 0 means ctx's
// deadline, or DefaultEvalTimeout without one), after MaxEvalSteps steps,
// or when they have built MaxEvalBytes, failing with a *LimitError.
// Evaluations with a scope that is not Bounded get fresh bounds each,
// with DefaultEvalTimeout.
func (s Scope) Bounded(ctx context.Context, timeout time.Duration) Scope {
	s.budget = newBudget(ctx, timeout)
	if s.vars != nil {
		s.vars[budgetName] = s.budget
	}
	return s
}

// Limit returns the bound an evaluation with s ran into, or nil.
func (s Scope) Limit() *LimitError {
	if s.budget == nil {
		return nil
	}
	return s.budget.limit
}

// trip records the bound hit and stops the evaluation; run turns the panic
// into the error.
func (b *budget) trip(code, format string, args ...any) {
	if b.limit == nil {
		b.limit = &LimitError{Code: code, Message: fmt.Sprintf(format, args...)}
	}
	panic(b.limit)
}

// check fails once a bound is hit, and polls the context and the clock.
func (b *budget) check() {
	if b.limit != nil {
		panic(b.limit)
	}
	select {
	case <-b.ctx.Done():
		if errors.Is(b.ctx.Err(), context.DeadlineExceeded) {
			b.trip(CodeExpressionTimeout, "the expression did not finish within %s", b.timeout.Round(time.Millisecond))
		}
		b.trip(CodeCancelled, "the evaluation was cancelled")
	default:
	}
	if time.Now().After(b.deadline) {
		b.trip(CodeExpressionTimeout, "the expression did not finish within %s", b.timeout.Round(time.Millisecond))
	}
}

func (b *budget) tick() {
	b.steps++
	if b.steps > MaxEvalSteps {
		b.trip(CodeExpressionTimeout, "the expression took more than %d steps", MaxEvalSteps)
	}
	if b.steps%pollEvery == 0 {
		b.check()
	}
}

func (b *budget) charge(n int) {
	if n < 0 || n > b.bytes {
		b.trip(CodeExpressionTooLarge, "the expression built more than %d bytes", MaxEvalBytes)
	}
	b.bytes -= n
}

// SizeAtLeast returns a lower bound of the size of v encoded as JSON (or
// printed), counting up to a little past limit and no further: a value
// that holds one large string many times is not walked whole.
func SizeAtLeast(v any, limit int) int {
	n := 0
	sizeAtLeast(v, limit, &n)
	return n
}

func sizeAtLeast(v any, limit int, n *int) {
	if *n > limit {
		return
	}
	switch x := v.(type) {
	case string:
		*n += len(x) + 2
	case []any:
		*n += 1 + len(x)
		for _, e := range x {
			if sizeAtLeast(e, limit, n); *n > limit {
				return
			}
		}
	case map[string]any:
		*n += 1 + len(x)
		for k, e := range x {
			*n += len(k) + 3
			if sizeAtLeast(e, limit, n); *n > limit {
				return
			}
		}
	case []string:
		*n += 1 + len(x)
		for _, e := range x {
			if *n += len(e) + 2; *n > limit {
				return
			}
		}
	case NodeResult:
		sizeAtLeast(x.Output, limit, n)
	case []int, []float64, []bool:
		*n += 2 * reflect.ValueOf(x).Len()
	case map[string]NodeResult:
		for _, e := range x {
			sizeAtLeast(e.Output, limit, n)
		}
	default:
		rv := reflect.ValueOf(v)
		switch rv.Kind() {
		case reflect.Slice, reflect.Array:
			*n += 1 + rv.Len()
			for i := 0; i < rv.Len() && *n <= limit; i++ {
				sizeAtLeast(rv.Index(i).Interface(), limit, n)
			}
		case reflect.Map:
			*n += 1 + rv.Len()
			it := rv.MapRange()
			for it.Next() && *n <= limit {
				sizeAtLeast(it.Key().Interface(), limit, n)
				sizeAtLeast(it.Value().Interface(), limit, n)
			}
		default:
			*n++
		}
	}
}

// elements is how many elements a builtin's result holds, for the budget.
func elements(v any) int {
	switch x := v.(type) {
	case []any:
		return len(x)
	case map[string]any:
		return len(x)
	case nil:
		return 0
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map:
		return rv.Len()
	}
	return 0
}

// limiter is the patch compileExpr applies: it counts a step at the start
// of each predicate body, and hands the budget to + and to the builtins
// that build large values, which check their size before building.
type limiter struct{ err error }

// stepCounting builtins accumulate a result per element.
var accumulating = map[string]bool{"map": true, "filter": true, "groupBy": true, "sortBy": true}

func (l *limiter) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if strings.HasPrefix(n.Value, budgetName) && l.err == nil {
			l.err = fmt.Errorf("%s is not a name expressions may use", n.Value)
		}
	case *ast.BuiltinNode:
		tick := "__weft_tick"
		if accumulating[n.Name] {
			tick = "__weft_tick_elem"
		}
		for _, a := range n.Arguments {
			if p, ok := a.(*ast.PredicateNode); ok {
				call := &ast.CallNode{Callee: &ast.IdentifierNode{Value: tick}, Arguments: []ast.Node{&ast.IdentifierNode{Value: budgetName}}}
				seq := &ast.SequenceNode{Nodes: []ast.Node{call, p.Node}}
				seq.SetLocation(p.Node.Location())
				p.Node = seq
			}
		}
	case *ast.CallNode:
		if id, ok := n.Callee.(*ast.IdentifierNode); ok && guarded[id.Value] != nil {
			n.Arguments = append([]ast.Node{&ast.IdentifierNode{Value: budgetName}}, n.Arguments...)
		}
	case *ast.BinaryNode:
		if n.Operator != "+" {
			return
		}
		lt, rt := n.Left.Type(), n.Right.Type()
		if known(lt) && known(rt) && lt.Kind() != reflect.String && rt.Kind() != reflect.String {
			return // numbers, or a time and a duration: nothing grows
		}
		fn := "__weft_add"
		if known(lt) && known(rt) && lt.Kind() == reflect.String && rt.Kind() == reflect.String {
			fn = "__weft_concat"
		}
		call := &ast.CallNode{Callee: &ast.IdentifierNode{Value: fn},
			Arguments: []ast.Node{&ast.IdentifierNode{Value: budgetName}, n.Left, n.Right}}
		call.SetLocation(n.Location())
		*node = call
	}
}

func known(t reflect.Type) bool { return t != nil && t.Kind() != reflect.Interface }

// guard is a builtin replaced by a version that counts what it builds.
type guard struct {
	pre  func(b *budget, args []any) // checks the size before building
	post bool                        // counts the result's size after building
}

var guarded = map[string]*guard{
	"repeat": {pre: func(b *budget, args []any) {
		s, _ := args[0].(string)
		n := runtime.ToInt(args[1])
		if n > 0 && len(s) > 0 {
			if len(s) > b.bytes/n {
				b.charge(b.bytes + 1)
			}
			b.charge(len(s) * n)
		}
	}},
	"join": {pre: func(b *budget, args []any) {
		sep := ""
		if len(args) > 1 {
			sep, _ = args[1].(string)
		}
		size, count := 0, elements(args[0])
		if count > 1 {
			if len(sep) > 0 && count-1 > b.bytes/len(sep) {
				b.charge(b.bytes + 1)
			}
			size = len(sep) * (count - 1)
		}
		b.charge(size + SizeAtLeast(args[0], b.bytes-size))
	}},
	"replace": {pre: func(b *budget, args []any) {
		s, _ := args[0].(string)
		old, _ := args[1].(string)
		repl, _ := args[2].(string)
		count := strings.Count(s, old)
		grow := len(repl) - len(old)
		if grow > 0 && count > b.bytes/grow {
			b.charge(b.bytes + 1)
		}
		b.charge(max(len(s)+count*grow, 0))
	}},
	"split":      {pre: chargeSplit},
	"splitAfter": {pre: chargeSplit},
	"toJSON":     {pre: chargePrinted, post: true},
	"string":     {pre: chargePrinted, post: true},
	"upper":      {post: true},
	"lower":      {post: true},
	"toBase64":   {post: true},
	"reverse":    {post: true},
	"uniq":       {post: true},
	"keys":       {post: true},
	"values":     {post: true},
	"toPairs":    {post: true},
}

func chargeSplit(b *budget, args []any) {
	s, _ := args[0].(string)
	sep, _ := args[1].(string)
	count := utf8.RuneCountInString(s)
	if sep != "" {
		count = strings.Count(s, sep) + 1
	}
	b.charge(len(s))
	if count > b.bytes/elemBytes {
		b.charge(b.bytes + 1)
	}
	b.charge(count * elemBytes)
}

// chargePrinted refuses to print a value whose text would pass the budget
// (a string of a value shares its strings; its text would not).
func chargePrinted(b *budget, args []any) {
	if SizeAtLeast(args[0], b.bytes) > b.bytes {
		b.charge(b.bytes + 1)
	}
}

// limitOptions are the functions the limiter's patch calls.
var limitOptions = func() []expr.Option {
	tick := func(elem bool) func(params ...any) (any, error) {
		return func(params ...any) (any, error) {
			b := params[0].(*budget)
			b.tick()
			if elem {
				b.charge(elemBytes)
			}
			return true, nil
		}
	}
	add := func(params ...any) (any, error) {
		b := params[0].(*budget)
		if l, ok := params[1].(string); ok {
			if r, ok := params[2].(string); ok {
				b.charge(len(l) + len(r))
				return l + r, nil
			}
		}
		return runtime.Add(params[1], params[2]), nil
	}
	opts := []expr.Option{
		expr.Function("__weft_tick", tick(false), new(func(*budget) bool)),
		expr.Function("__weft_tick_elem", tick(true), new(func(*budget) bool)),
		expr.Function("__weft_add", add, new(func(*budget, any, any) any)),
		expr.Function("__weft_concat", add, new(func(*budget, string, string) string)),
	}
	for _, f := range builtin.Builtins {
		g := guarded[f.Name]
		if g == nil {
			continue
		}
		f := f
		call := func(params ...any) (any, error) {
			b := params[0].(*budget)
			args := params[1:]
			if g.pre != nil && len(args) > 0 {
				g.pre(b, args)
			}
			out, err := callBuiltin(f, args)
			if err == nil && g.post {
				switch x := out.(type) {
				case string:
					b.charge(len(x))
				default:
					b.charge(elements(x) * elemBytes)
				}
			}
			return out, err
		}
		var types []any
		for _, t := range f.Types {
			in := []reflect.Type{budgetType}
			for i := 0; i < t.NumIn(); i++ {
				in = append(in, t.In(i))
			}
			out := make([]reflect.Type, t.NumOut())
			for i := range out {
				out[i] = t.Out(i)
			}
			types = append(types, reflect.Zero(reflect.FuncOf(in, out, t.IsVariadic())).Interface())
		}
		opts = append(opts, expr.Function(f.Name, call, types...))
	}
	return opts
}()

func callBuiltin(f *builtin.Function, args []any) (any, error) {
	switch {
	case f.Func != nil:
		return f.Func(args...)
	case f.Safe != nil:
		out, _, err := f.Safe(args...)
		return out, err
	case f.Fast != nil && len(args) == 1:
		return f.Fast(args[0]), nil
	}
	return nil, fmt.Errorf("%s cannot be called so", f.Name)
}
