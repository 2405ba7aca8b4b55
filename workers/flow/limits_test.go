package flow

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// limitOf returns the bound err reports, failing the test if it reports none.
func limitOf(t *testing.T, err error) *LimitError {
	t.Helper()
	var limit *LimitError
	require.True(t, errors.As(err, &limit), "want a *LimitError, got %v", err)
	return limit
}

const nestedBomb = `let a = 1..1000; all(a, {all(a, {all(a, {true})})})`

// doublingBomb doubles a 500,000-byte string ten times: 512 MB from under
// 200 bytes of source.
var doublingBomb = func() string {
	src := `let a=repeat("a",500000);`
	for _, v := range "bcdefghijk" {
		prev := string(v - 1)
		src += "let " + string(v) + "=" + prev + "+" + prev + ";"
	}
	return src + "len(k)"
}()

func TestBombsStopAtTheirDeadline(t *testing.T) {
	t.Parallel()
	e, err := CompileExpr(nestedBomb)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Eval(e, Scope{}.Bounded(ctx, 0))
	took := time.Since(start)
	require.Equal(t, CodeExpressionTimeout, limitOf(t, err).Code)
	require.Less(t, took, 300*time.Millisecond+100*time.Millisecond, "stopped %s after its deadline", took-300*time.Millisecond)

	// A timeout shorter than the context's deadline wins.
	start = time.Now()
	_, err = Eval(e, Scope{}.Bounded(context.Background(), 50*time.Millisecond))
	require.Equal(t, CodeExpressionTimeout, limitOf(t, err).Code)
	require.Less(t, time.Since(start), 150*time.Millisecond)
}

func TestBombsStopOnCancel(t *testing.T) {
	t.Parallel()
	e, err := CompileExpr(nestedBomb)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var cancelled time.Time
	time.AfterFunc(50*time.Millisecond, func() { cancelled = time.Now(); cancel() })
	_, err = Eval(e, Scope{}.Bounded(ctx, 3*time.Second))
	require.Equal(t, CodeCancelled, limitOf(t, err).Code)
	require.Less(t, time.Since(cancelled), 100*time.Millisecond)
}

func TestBombsRunOutOfSteps(t *testing.T) {
	t.Parallel()
	// With time to spare, the step limit ends it: 10^9 predicate bodies
	// are never run.
	e, err := CompileExpr(nestedBomb)
	require.NoError(t, err)
	_, err = Eval(e, Scope{}.Bounded(context.Background(), time.Hour))
	limit := limitOf(t, err)
	require.Equal(t, CodeExpressionTimeout, limit.Code)
	require.Contains(t, limit.Message, "steps")
}

func TestBombsRunOutOfMemory(t *testing.T) {
	t.Parallel()
	require.Less(t, len(doublingBomb), 200)
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	cases := map[string]string{
		"doubling":     doublingBomb,
		"concat":       `let s = repeat("a", 1000000); len(s + s + s + s + s + s + s + s + s + s + s + s + s + s + s + s + s)`,
		"repeat":       `len(repeat("ab", 100000000))`,
		"join":         `let a = map(1..100000, repeat("x", 200)); len(join(a, ","))`,
		"replace":      `let s = repeat("a", 100000); len(replace(s, "a", repeat("b", 200)))`,
		"toJSON":       `let s = repeat("a", 1000000); let a = map(1..100, s); len(toJSON(a))`,
		"string":       `let s = repeat("a", 1000000); let a = map(1..100, s); len(string(a))`,
		"split":        `len(split(repeat("a,", 4000000), ","))`,
		"upper":        `let s = repeat("a", 1000000); len(reduce(1..100, #acc + upper(s), ""))`,
		"nested map":   `len(map(1..1000, map(1..1000, #)))`,
		"template set": `map(1..100, repeat("z", 1000000))`,
	}
	for name, src := range cases {
		e, err := CompileExpr(src)
		require.NoError(t, err, name)
		_, err = Eval(e, Scope{}.Bounded(context.Background(), 10*time.Second))
		require.Equal(t, CodeExpressionTooLarge, limitOf(t, err).Code, name)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	// What they allocated in all, not what is live: well under the 512 MB
	// the first one alone would build.
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(400<<20))
}

func TestTemplatesAreBounded(t *testing.T) {
	t.Parallel()
	tpl, err := CompileTemplate(`{{ ` + nestedBomb + ` }}`)
	require.NoError(t, err)
	_, err = tpl.Render(Scope{}.Bounded(context.Background(), 50*time.Millisecond))
	require.Equal(t, CodeExpressionTimeout, limitOf(t, err).Code)

	// The bounds of one scope are shared by every template rendered with it.
	v, err := Compile2Render(t, map[string]any{"a": `{{ repeat("a", 10000000) }}`, "b": `{{ repeat("b", 10000000) }}`})
	require.Nil(t, v)
	require.Equal(t, CodeExpressionTooLarge, limitOf(t, err).Code)

	// An unbounded scope still gets DefaultEvalTimeout.
	start := time.Now()
	_, err = tpl.Render(Scope{})
	require.Equal(t, CodeExpressionTimeout, limitOf(t, err).Code)
	require.Less(t, time.Since(start), DefaultEvalTimeout+100*time.Millisecond)
}

// Compile2Render compiles a params map of templates and renders it with one
// bounded scope.
func Compile2Render(t *testing.T, params map[string]any) (any, error) {
	t.Helper()
	c := &collector{}
	compiled := compileValue(c, "params", params)
	return Render(compiled, Scope{}.Bounded(context.Background(), time.Second))
}

func TestOrdinaryExpressionsStillWork(t *testing.T) {
	t.Parallel()
	for src, want := range map[string]any{
		`"a" + "b"`:                        "ab",
		`1 + 2`:                            3,
		`len(repeat("a", 1000))`:           1000,
		`join(map(1..3, string(#)), "-")`:  "1-2-3",
		`replace("aXa", "X", "yy")`:        "ayya",
		`upper("x") + lower("Y")`:          "Xy",
		`len(filter(1..1000, # % 2 == 0))`: 500,
		`all(1..10, {# > 0})`:              true,
		`input.s + "!"`:                    "hi!",
		`reduce(1..4, #acc + #, 0)`:        10,
	} {
		e, err := CompileExpr(src)
		require.NoError(t, err, src)
		got, err := Eval(e, Scope{Input: map[string]any{"s": "hi"}}.Bounded(context.Background(), time.Second))
		require.NoError(t, err, src)
		require.EqualValues(t, want, got, src)
	}
	_, err := CompileExpr(`__weft`)
	require.Error(t, err)
}
