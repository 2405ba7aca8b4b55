package nodes

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/sqlite"
	"github.com/weftdev/weft/workers/flow"
)

// dbBundle is a DATABASE runner on a real embedded store.
type dbBundle struct {
	store *sqlite.Store
	node  *dbNode
}

func setupDB(t *testing.T, cfg DatabaseConfig) *dbBundle {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "weft.db"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	cfg.Store = s
	return &dbBundle{store: s, node: newDBNode(cfg)}
}

// compileDB compiles a workflow holding one DATABASE node "db" after an
// INPUT and an upstream TRANSFORM "up", so templates can read both.
func compileDB(t *testing.T, config string) (*flow.CompiledNode, []string) {
	t.Helper()
	def, problems := flow.Parse([]byte(`{"name":"t","nodes":[{"id":"in","type":"INPUT"},` +
		`{"id":"up","type":"TRANSFORM","config":{"set":{"x":"1"}}},` +
		`{"id":"db","type":"DATABASE","config":` + config + `}],` +
		`"edges":[{"from":"in","to":"up"},{"from":"up","to":"db"}]}`))
	if len(problems) > 0 {
		msgs := make([]string, len(problems))
		for i, p := range problems {
			msgs[i] = p.Path + ": " + p.Message
		}
		return nil, msgs
	}
	g, err := flow.Compile(def)
	require.NoError(t, err)
	return g.Nodes["db"], nil
}

func (b *dbBundle) run(t *testing.T, user, key, config string, inputs map[string]any, up any) (any, error) {
	t.Helper()
	n, problems := compileDB(t, config)
	require.Empty(t, problems)
	return b.node.Run(t.Context(), Input{
		Node: n,
		Scope: flow.Scope{Input: inputs, Execution: flow.ExecutionInfo{ID: "ex1", WorkflowID: "wf1"},
			Nodes: map[string]flow.NodeResult{"up": {Output: up, Status: "completed"}}},
		ExecutionID: "ex1", UserID: user, Attempt: 1, IdempotencyKey: key,
	})
}

func TestDatabaseOperations(t *testing.T) {
	t.Parallel()
	b := setupDB(t, DatabaseConfig{})
	in := map[string]any{"name": "Ann", "min": 2}
	up := map[string]any{
		"order": map[string]any{"_id": "o1", "total": 3, "lines": []any{map[string]any{"sku": "a"}}},
		"more":  []any{map[string]any{"_id": "o2", "total": 1}, map[string]any{"_id": "o3", "total": 7}},
	}
	steps := []struct {
		name, config string
		want         any
	}{
		{"insertOne lone template keeps the object", `{"operation":"insertOne","collection":"orders","document":"{{ nodes.up.output.order }}"}`,
			map[string]any{"insertedIds": []string{"o1"}}},
		{"insertMany lone template keeps the list", `{"operation":"insertMany","collection":"orders","documents":"{{ nodes.up.output.more }}"}`,
			map[string]any{"insertedIds": []string{"o2", "o3"}}},
		{"insertOne with rendered fields", `{"operation":"insertOne","collection":"people","document":{"_id":"p1","name":"{{ input.name }}","greeting":"hi {{ input.name }}"}}`,
			map[string]any{"insertedIds": []string{"p1"}}},
		{"find with typed template filter, sort and projection", `{"operation":"find","collection":"orders","filter":{"total":{"$gte":"{{ input.min }}"}},"sort":{"total":-1},"projection":{"total":1,"_id":0}}`,
			map[string]any{"documents": []map[string]any{{"total": 7.0}, {"total": 3.0}}}},
		{"find sorted by a list", `{"operation":"find","collection":"orders","sort":[{"missing":1},{"total":1}],"limit":2}`,
			map[string]any{"documents": []map[string]any{{"_id": "o2", "total": 1.0}, {"_id": "o1", "total": 3.0, "lines": []any{map[string]any{"sku": "a"}}}}}},
		{"findOne", `{"operation":"findOne","collection":"people","filter":{"name":"{{ input.name }}"}}`,
			map[string]any{"document": map[string]any{"_id": "p1", "name": "Ann", "greeting": "hi Ann"}}},
		{"findOne none", `{"operation":"findOne","collection":"people","filter":{"name":"Bob"}}`,
			map[string]any{"document": nil}},
		{"updateMany", `{"operation":"updateMany","collection":"orders","filter":{"total":{"$lt":5}},"update":{"$inc":{"total":10},"$set":{"by":"{{ input.name }}"}}}`,
			map[string]any{"matched": int64(2), "modified": int64(2)}},
		{"count", `{"operation":"count","collection":"orders","filter":{"by":"Ann"}}`,
			map[string]any{"count": int64(2)}},
		{"deleteOne", `{"operation":"deleteOne","collection":"orders","filter":{"_id":"o3"}}`,
			map[string]any{"deleted": int64(1)}},
		{"deleteMany", `{"operation":"deleteMany","collection":"orders","filter":{"$or":[{"by":"Ann"},{"total":{"$gt":100}}]}}`,
			map[string]any{"deleted": int64(2)}},
		{"find empty", `{"operation":"find","collection":"orders"}`,
			map[string]any{"documents": []map[string]any{}}},
	}
	// Each step runs as its own node of its own execution.
	for i, st := range steps {
		out, err := b.run(t, "u1", "ex"+string(rune('a'+i))+":db", st.config, in, up)
		require.NoError(t, err, st.name)
		require.Equal(t, st.want, out, st.name)
	}
}

// TestDatabaseRedelivery runs each write twice under one key, as a
// redelivered task does: it is applied once and answers the same.
func TestDatabaseRedelivery(t *testing.T) {
	t.Parallel()
	b := setupDB(t, DatabaseConfig{})
	for _, config := range []string{
		`{"operation":"insertMany","collection":"c","documents":[{"n":1},{"n":2}]}`,
		`{"operation":"updateMany","collection":"c","filter":{},"update":{"$inc":{"n":1}}}`,
		`{"operation":"deleteOne","collection":"c","filter":{"n":3}}`,
	} {
		key := "ex1:" + strings.Split(config, `"`)[3]
		first, err := b.run(t, "u1", key, config, nil, nil)
		require.NoError(t, err)
		again, err := b.run(t, "u1", key, config, nil, nil)
		require.NoError(t, err)
		require.Equal(t, first, again, config)
	}
	out, err := b.run(t, "u1", "ex1:find", `{"operation":"find","collection":"c","projection":{"_id":0}}`, nil, nil)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"documents": []map[string]any{{"n": 2.0}}}, out, "two inserted, each incremented once, one deleted")
}

func TestDatabaseIsolation(t *testing.T) {
	t.Parallel()
	b := setupDB(t, DatabaseConfig{})
	_, err := b.run(t, "ann", "ex1:db", `{"operation":"insertOne","collection":"orders","document":{"_id":"a","who":"ann"}}`, nil, nil)
	require.NoError(t, err)
	out, err := b.run(t, "bob", "ex2:db", `{"operation":"find","collection":"orders","filter":{"$or":[{},{"_id":"a"}]}}`, nil, nil)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"documents": []map[string]any{}}, out)
	// The same key under another user is another write.
	out, err = b.run(t, "bob", "ex1:db", `{"operation":"insertOne","collection":"orders","document":{"_id":"a","who":"bob"}}`, nil, nil)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"insertedIds": []string{"a"}}, out)
}

func TestDatabaseErrors(t *testing.T) {
	t.Parallel()
	b := setupDB(t, DatabaseConfig{MaxDocumentBytes: 64})
	_, err := b.run(t, "u1", "ex1:a", `{"operation":"insertOne","collection":"c","document":{"_id":"x"}}`, nil, nil)
	require.NoError(t, err)
	for _, tc := range []struct {
		name, config string
		up           any
		code         string
		retryable    bool
	}{
		{"conflict", `{"operation":"insertOne","collection":"c","document":{"_id":"x"}}`, nil, persistence.CodeDataConflict, false},
		{"too large", `{"operation":"insertOne","collection":"c","document":{"s":"{{ nodes.up.output }}"}}`, strings.Repeat("x", 100), persistence.CodeDataTooLarge, false},
		{"document not an object", `{"operation":"insertOne","collection":"c","document":"{{ nodes.up.output }}"}`, 5, persistence.CodeDataInvalid, false},
		{"documents not a list", `{"operation":"insertMany","collection":"c","documents":"{{ nodes.up.output }}"}`, "x", persistence.CodeDataInvalid, false},
		{"rendered collection", `{"operation":"find","collection":"{{ nodes.up.output }}"}`, "../etc", persistence.CodeDataInvalid, false},
		{"rendered filter operator", `{"operation":"find","collection":"c","filter":"{{ nodes.up.output }}"}`, map[string]any{"$where": "1"}, persistence.CodeDataInvalid, false},
		{"rendered sort of two fields", `{"operation":"find","collection":"c","sort":"{{ nodes.up.output }}"}`, map[string]any{"a": 1, "b": 1}, persistence.CodeDataInvalid, false},
		{"rendered limit", `{"operation":"find","collection":"c","limit":"{{ nodes.up.output }}"}`, 5000, persistence.CodeDataInvalid, false},
		{"$inc a string", `{"operation":"updateOne","collection":"c","filter":{},"update":{"$set":{"s":"a"}}}`, nil, "", false},
		{"$inc then", `{"operation":"updateOne","collection":"c","filter":{},"update":{"$inc":{"s":1}}}`, nil, persistence.CodeDataInvalid, false},
		{"template error", `{"operation":"find","collection":"c","filter":{"a":"{{ nodes.up.output.x.y }}"}}`, nil, "template_error", false},
	} {
		_, err := b.run(t, "u1", "ex2:"+tc.name, tc.config, nil, tc.up)
		if tc.code == "" {
			require.NoError(t, err, tc.name)
			continue
		}
		requireNodeError(t, err, tc.code, tc.retryable)
	}
}

func TestDatabaseTimeout(t *testing.T) {
	t.Parallel()
	b := setupDB(t, DatabaseConfig{QueryTimeout: time.Nanosecond})
	_, err := b.run(t, "u1", "ex1:db", `{"operation":"find","collection":"c"}`, nil, nil)
	requireNodeError(t, err, persistence.CodeDataTimeout, true)

	// A cancelled node is reported as cancelled, not as a slow query.
	b = setupDB(t, DatabaseConfig{})
	n, _ := compileDB(t, `{"operation":"find","collection":"c"}`)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = b.node.Run(ctx, Input{Node: n, UserID: "u1", IdempotencyKey: "ex1:db"})
	require.Equal(t, "cancelled", Classify(err).Code)
}

// TestDatabaseRegistered checks the registered spec: without a store it
// fails every run permanently; NewDatabase makes one with a store.
func TestDatabaseRegistered(t *testing.T) {
	t.Parallel()
	spec, ok := Lookup(flow.TypeDatabase)
	require.True(t, ok)
	require.False(t, spec.Pure, "DATABASE has side effects and runs from a task")
	n, _ := compileDB(t, `{"operation":"count","collection":"c"}`)
	in := Input{Node: n, UserID: "u1", IdempotencyKey: "ex1:db"}

	_, err := spec.Runner.Run(t.Context(), in)
	requireNodeError(t, err, "db_unconfigured", false)

	b := setupDB(t, DatabaseConfig{})
	out, err := NewDatabase(DatabaseConfig{Store: b.store}).Runner.Run(t.Context(), in)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"count": int64(0)}, out)
}

// TestDatabaseValidation checks what a DATABASE config must satisfy at save
// time; templates defer the check to the run.
func TestDatabaseValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		config string
		bad    string // a fragment of the expected problem, "" when valid
	}{
		{`{"operation":"find","collection":"{{ input.coll }}"}`, ""},
		{`{"operation":"find","collection":"c","filter":"{{ nodes.up.output }}","sort":"{{ nodes.up.output }}","limit":"{{ nodes.up.output }}","projection":"{{ nodes.up.output }}"}`, ""},
		{`{"operation":"find","collection":"c","sort":[{"a":1},{"b":-1}]}`, ""},
		{`{"operation":"find","collection":"c","sort":{"a":1,"b":-1}}`, "must be a list"},
		{`{"operation":"find","collection":"c","sort":[{"a":1,"b":1}]}`, "exactly one field"},
		{`{"operation":"find","collection":"c","sort":[{"a":2}]}`, "1 (ascending)"},
		{`{"operation":"find","collection":"c","filter":{"a.0":1}}`, "array indexes"},
		{`{"operation":"insertOne","collection":"c","document":{"a.b":1}}`, "no '.'"},
		{`{"operation":"updateOne","collection":"c","filter":{},"update":"{{ nodes.up.output }}"}`, ""},
		{`{"operation":"find","collection":"bad name"}`, "must start with a letter"},
		{`{"operation":"find","collection":"c","filter":{"a":{"$regex":"x"}}}`, "unsupported operator"},
		{`{"operation":"find","collection":"c","limit":1001}`, "between 1 and 1000"},
	} {
		_, problems := compileDB(t, tc.config)
		if tc.bad == "" {
			require.Empty(t, problems, tc.config)
			continue
		}
		require.NotEmpty(t, problems, tc.config)
		require.Contains(t, strings.Join(problems, "; "), tc.bad, tc.config)
	}
}
