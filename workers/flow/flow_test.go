package flow

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
)

// contractExample is the definition from CONTRACT.md, verbatim.
const contractExample = `{
  "name": "Triage a ticket",
  "description": "optional",
  "nodes": [
    {"id": "in",    "type": "INPUT",        "config": {"fields": {"text": {"type": "string", "required": true}, "n": {"type": "number"}}}},
    {"id": "mood",  "type": "AI_PROCESSOR", "config": {"taskType": "sentiment_analysis", "prompt": "{{ input.text }}"}},
    {"id": "shape", "type": "TRANSFORM",    "config": {"set": {"upper": "upper(input.text)", "long": "len(input.text) > 20"}}},
    {"id": "bad",   "type": "CONDITION",    "config": {"expression": "nodes.mood.output.label == 'negative'"}},
    {"id": "page",  "type": "HTTP_REQUEST", "config": {"method": "POST", "url": "https://hooks.example.com/page", "body": {"text": "{{ input.text }}"}}},
    {"id": "save",  "type": "DATABASE",     "config": {"operation": "insertOne", "collection": "tickets", "document": {"text": "{{ input.text }}"}}},
    {"id": "out",   "type": "OUTPUT",       "config": {"value": {"upper": "{{ nodes.shape.output.upper }}", "mood": "{{ nodes.mood.output.label }}"}}}
  ],
  "edges": [
    {"from": "in", "to": "mood"}, {"from": "in", "to": "shape"},
    {"from": "mood", "to": "bad"},
    {"from": "bad", "to": "page", "branch": "true"}, {"from": "bad", "to": "save", "branch": "false"},
    {"from": "shape", "to": "out"}, {"from": "page", "to": "out"}, {"from": "save", "to": "out"}
  ]
}`

func paths(errs []events.FieldError) []string {
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		out = append(out, e.Path)
	}
	sort.Strings(out)
	return out
}

// wf builds a definition body from node and edge JSON fragments.
func wf(nodes string, edges ...string) string {
	return fmt.Sprintf(`{"name":"t","nodes":[%s],"edges":[%s]}`, nodes, strings.Join(edges, ","))
}

// node builds one node's JSON.
func node(id, typ, config string) string {
	return fmt.Sprintf(`{"id":%q,"type":%q,"config":%s}`, id, typ, config)
}

func edge(from, to string) string { return fmt.Sprintf(`{"from":%q,"to":%q}`, from, to) }

const (
	inputNode = `{"id":"in","type":"INPUT"}`
	outNode   = `{"id":"out","type":"OUTPUT","config":{"value":1}}`
)

func TestParseContractExample(t *testing.T) {
	t.Parallel()
	def, errs := Parse([]byte(contractExample))
	require.Empty(t, errs)
	require.Equal(t, "Triage a ticket", def.Name)
	require.Len(t, def.Nodes, 7)

	g, err := Compile(def)
	require.NoError(t, err)
	require.Equal(t, []string{"in"}, g.Entries)
	require.Equal(t, []string{"in", "mood", "shape", "bad", "page", "save", "out"}, g.Order)
	require.Equal(t, []string{"mood"}, g.Nodes["bad"].Refs)
	require.Equal(t, []string{"mood", "shape"}, g.Nodes["out"].Refs)
	require.Empty(t, g.Nodes["page"].Refs)
	require.Len(t, g.Nodes["out"].Predecessors, 3)
	require.Equal(t, []Edge{{From: "bad", To: "page", Branch: "true"}, {From: "bad", To: "save", Branch: "false"}}, g.Nodes["bad"].Successors)
	require.NotNil(t, g.Nodes["bad"].Expression)
	require.Len(t, g.Nodes["shape"].Set, 2)
	require.Equal(t, RetryPolicy{MaxAttempts: 1}, g.Nodes["page"].Retry)
	require.Equal(t, "fail", g.Nodes["page"].OnError)

	// Rendering the OUTPUT value against results.
	scope := Scope{
		Input: map[string]any{"text": "this is awful"},
		Nodes: map[string]NodeResult{
			"shape": {Output: map[string]any{"upper": "THIS IS AWFUL"}, Status: "completed"},
			"mood":  {Output: map[string]any{"label": "negative"}, Status: "completed"},
		},
	}
	v, err := Render(g.Nodes["out"].Params["value"], scope)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"upper": "THIS IS AWFUL", "mood": "negative"}, v)
	ok, err := EvalBool(g.Nodes["bad"].Expression, scope)
	require.NoError(t, err)
	require.True(t, ok)

	// The normalised definition round-trips through JSON.
	raw, err := json.Marshal(def)
	require.NoError(t, err)
	again, errs := Parse(raw)
	require.Empty(t, errs)
	require.Equal(t, def, again)
}

func TestParseNormalises(t *testing.T) {
	t.Parallel()
	def, errs := Parse([]byte(`{"name":"n","nodes":[{"id":"a","type":"http_request","config":{"url":"https://x.example/","method":"post"}},
		{"id":"c","type":"Condition","config":{"expression":"true"}}],"edges":[{"from":"c","to":"a","branch":true}]}`))
	require.Empty(t, errs)
	require.Equal(t, TypeHTTPRequest, def.Nodes[0].Type)
	require.Equal(t, "POST", def.Nodes[0].Config["method"])
	require.Equal(t, TypeCondition, def.Nodes[1].Type)
	require.Equal(t, "true", def.Edges[0].Branch)

	def, errs = Parse([]byte(`{"name":"n","nodes":[` + outNode + `]}`))
	require.Empty(t, errs)
	require.NotNil(t, def.Edges, "absent edges become an empty list")
}

func TestParseInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want []string
	}{
		// Shape.
		{"malformed JSON", `{"name": "x",`, []string{""}},
		{"empty body", ``, []string{""}},
		{"trailing data", `{"name":"x","nodes":[` + outNode + `]} {}`, []string{""}},
		{"not an object", `[1,2]`, []string{""}},
		{"unknown top-level field", `{"name":"x","nodes":[` + outNode + `],"owner":"me"}`, []string{"owner"}},
		{"name wrong type", `{"name":5,"nodes":[` + outNode + `]}`, []string{"name"}},
		{"name missing", `{"nodes":[` + outNode + `]}`, []string{"name"}},
		{"name blank", `{"name":"  ","nodes":[` + outNode + `]}`, []string{"name"}},
		{"name too long", `{"name":"` + strings.Repeat("é", 201) + `","nodes":[` + outNode + `]}`, []string{"name"}},
		{"description too long", `{"name":"x","description":"` + strings.Repeat("d", 2001) + `","nodes":[` + outNode + `]}`, []string{"description"}},
		{"no nodes", `{"name":"x"}`, []string{"nodes"}},
		{"empty nodes", `{"name":"x","nodes":[]}`, []string{"nodes"}},
		{"nodes not array", `{"name":"x","nodes":{}}`, []string{"nodes"}},
		{"edges not array", `{"name":"x","nodes":[` + outNode + `],"edges":"a"}`, []string{"edges"}},
		{"node not object", wf(`7`), []string{"nodes[0]"}},
		{"config not object", wf(`{"id":"a","type":"OUTPUT","config":"x"}`), []string{"nodes[0].config"}},
		{"id wrong type", wf(`{"id":1,"type":"OUTPUT","config":{"value":1}}`), []string{"nodes[0].id"}},
		{"unknown node field", wf(`{"id":"a","type":"OUTPUT","config":{"value":1},"name":"x"}`), []string{"nodes[0].name"}},

		// Nodes.
		{"id missing", wf(`{"type":"OUTPUT","config":{"value":1}}`), []string{"nodes[0].id"}},
		{"id bad chars", wf(node("a-b", "OUTPUT", `{"value":1}`)), []string{"nodes[0].id"}},
		{"id starts with digit", wf(node("1a", "OUTPUT", `{"value":1}`)), []string{"nodes[0].id"}},
		{"id too long", wf(node(strings.Repeat("a", 65), "OUTPUT", `{"value":1}`)), []string{"nodes[0].id"}},
		{"duplicate id", wf(node("a", "OUTPUT", `{"value":1}`) + "," + node("a", "OUTPUT", `{"value":2}`)), []string{"nodes[1].id"}},
		{"type missing", wf(`{"id":"a"}`), []string{"nodes[0].type"}},
		{"type unknown", wf(node("a", "SLEEP", `{}`)), []string{"nodes[0].type"}},
		{"several problems at once", wf(node("a", "SLEEP", `{}`)+","+node("b", "OUTPUT", `{}`)+","+node("b", "OUTPUT", `{"value":1}`), edge("a", "zz")),
			[]string{"edges[0].to", "nodes[0].type", "nodes[1].config.value", "nodes[2].id"}},

		// Edges.
		{"edge from unknown", wf(outNode, edge("nope", "out")), []string{"edges[0].from"}},
		{"edge to missing", wf(outNode, `{"from":"out"}`), []string{"edges[0].to"}},
		{"edge unknown field", wf(inputNode+","+outNode, `{"from":"in","to":"out","when":"x"}`), []string{"edges[0].when"}},
		{"self loop", wf(outNode, edge("out", "out")), []string{"edges[0].to"}},
		{"duplicate edge", wf(inputNode+","+outNode, edge("in", "out"), edge("in", "out")), []string{"edges[1]"}},
		{"cycle", wf(inputNode+","+node("a", "OUTPUT", `{"value":1}`)+","+node("b", "OUTPUT", `{"value":1}`),
			edge("in", "a"), edge("a", "b"), edge("b", "a")), []string{"edges[2]"}},
		{"condition edge without branch", wf(node("c", "CONDITION", `{"expression":"true"}`)+","+outNode, edge("c", "out")), []string{"edges[0].branch"}},
		{"condition edge bad branch", wf(node("c", "CONDITION", `{"expression":"true"}`)+","+outNode, `{"from":"c","to":"out","branch":"yes"}`), []string{"edges[0].branch"}},
		{"branch on plain edge", wf(inputNode+","+outNode, `{"from":"in","to":"out","branch":"true"}`), []string{"edges[0].branch"}},
		{"branch wrong type", wf(inputNode+","+outNode, `{"from":"in","to":"out","branch":1}`), []string{"edges[0].branch"}},

		// Common config.
		{"retry attempts too many", wf(node("a", "OUTPUT", `{"value":1,"retry":{"maxAttempts":11}}`)), []string{"nodes[0].config.retry.maxAttempts"}},
		{"retry backoff fractional", wf(node("a", "OUTPUT", `{"value":1,"retry":{"backoffMs":1.5}}`)), []string{"nodes[0].config.retry.backoffMs"}},
		{"retry unknown key", wf(node("a", "OUTPUT", `{"value":1,"retry":{"max":2}}`)), []string{"nodes[0].config.retry.max"}},
		{"retry not object", wf(node("a", "OUTPUT", `{"value":1,"retry":3}`)), []string{"nodes[0].config.retry"}},
		{"timeout zero", wf(node("a", "OUTPUT", `{"value":1,"timeoutMs":0}`)), []string{"nodes[0].config.timeoutMs"}},
		{"timeout string", wf(node("a", "OUTPUT", `{"value":1,"timeoutMs":"5s"}`)), []string{"nodes[0].config.timeoutMs"}},
		{"onError bad", wf(node("a", "OUTPUT", `{"value":1,"onError":"ignore"}`)), []string{"nodes[0].config.onError"}},
		{"unknown config key", wf(node("a", "OUTPUT", `{"value":1,"valeu":2}`)), []string{"nodes[0].config.valeu"}},

		// INPUT.
		{"input field type missing", wf(node("in", "INPUT", `{"fields":{"x":{}}}`)), []string{"nodes[0].config.fields.x.type"}},
		{"input field type bad", wf(node("in", "INPUT", `{"fields":{"x":{"type":"int"}}}`)), []string{"nodes[0].config.fields.x.type"}},
		{"input default wrong type", wf(node("in", "INPUT", `{"fields":{"x":{"type":"number","default":"3"}}}`)), []string{"nodes[0].config.fields.x.default"}},
		{"input required not bool", wf(node("in", "INPUT", `{"fields":{"x":{"type":"number","required":"yes"}}}`)), []string{"nodes[0].config.fields.x.required"}},
		{"input spec unknown key", wf(node("in", "INPUT", `{"fields":{"x":{"type":"number","min":1}}}`)), []string{"nodes[0].config.fields.x.min"}},
		{"input fields not object", wf(node("in", "INPUT", `{"fields":[]}`)), []string{"nodes[0].config.fields"}},
		{"input conflicting declarations", wf(node("a", "INPUT", `{"fields":{"x":{"type":"number"}}}`) + "," + node("b", "INPUT", `{"fields":{"x":{"type":"string"}}}`)),
			[]string{"nodes[1].config.fields.x.type"}},

		// TRANSFORM.
		{"transform set missing", wf(node("t", "TRANSFORM", `{}`)), []string{"nodes[0].config.set"}},
		{"transform set empty", wf(node("t", "TRANSFORM", `{"set":{}}`)), []string{"nodes[0].config.set"}},
		{"transform bad expression", wf(node("t", "TRANSFORM", `{"set":{"a":"1 +","b":"2"}}`)), []string{"nodes[0].config.set.a"}},
		{"transform unknown name", wf(node("t", "TRANSFORM", `{"set":{"a":"env.HOME"}}`)), []string{"nodes[0].config.set.a"}},
		{"transform value not string", wf(node("t", "TRANSFORM", `{"set":{"a":1}}`)), []string{"nodes[0].config.set.a"}},
		{"transform dynamic nodes index", wf(node("t", "TRANSFORM", `{"set":{"a":"nodes[input.which].output"}}`)), []string{"nodes[0].config.set.a"}},
		{"transform $env", wf(node("t", "TRANSFORM", `{"set":{"a":"$env"}}`)), []string{"nodes[0].config.set.a"}},

		// CONDITION.
		{"condition missing", wf(node("c", "CONDITION", `{}`)), []string{"nodes[0].config.expression"}},
		{"condition not bool", wf(node("c", "CONDITION", `{"expression":"1 + 2"}`)), []string{"nodes[0].config.expression"}},
		{"condition string type", wf(node("c", "CONDITION", `{"expression":"upper('a')"}`)), []string{"nodes[0].config.expression"}},
		{"condition bad field of node", wf(inputNode+","+node("c", "CONDITION", `{"expression":"nodes.in.outptu == 1"}`), edge("in", "c")), []string{"nodes[1].config.expression"}},

		// HTTP_REQUEST.
		{"http url missing", wf(node("h", "HTTP_REQUEST", `{}`)), []string{"nodes[0].config.url"}},
		{"http url relative", wf(node("h", "HTTP_REQUEST", `{"url":"/hooks"}`)), []string{"nodes[0].config.url"}},
		{"http url ftp", wf(node("h", "HTTP_REQUEST", `{"url":"ftp://x.example/"}`)), []string{"nodes[0].config.url"}},
		{"http url no host", wf(node("h", "HTTP_REQUEST", `{"url":"https:///path"}`)), []string{"nodes[0].config.url"}},
		{"http method bad", wf(node("h", "HTTP_REQUEST", `{"url":"https://x.example","method":"FETCH"}`)), []string{"nodes[0].config.method"}},
		{"http header value number", wf(node("h", "HTTP_REQUEST", `{"url":"https://x.example","headers":{"X-N":1}}`)), []string{"nodes[0].config.headers.X-N"}},
		{"http header bad name", wf(node("h", "HTTP_REQUEST", `{"url":"https://x.example","headers":{"X N":"1"}}`)), []string{"nodes[0].config.headers.X N"}},
		{"http query not object", wf(node("h", "HTTP_REQUEST", `{"url":"https://x.example","query":"a=1"}`)), []string{"nodes[0].config.query"}},
		{"http failOnStatus not bool", wf(node("h", "HTTP_REQUEST", `{"url":"https://x.example","failOnStatus":"no"}`)), []string{"nodes[0].config.failOnStatus"}},
		{"http maxResponseBytes zero", wf(node("h", "HTTP_REQUEST", `{"url":"https://x.example","maxResponseBytes":0}`)), []string{"nodes[0].config.maxResponseBytes"}},
		{"http unknown key", wf(node("h", "HTTP_REQUEST", `{"uri":"https://x.example"}`)), []string{"nodes[0].config.uri", "nodes[0].config.url"}},
		{"http unclosed template", wf(node("h", "HTTP_REQUEST", `{"url":"https://x.example","body":{"text":"hi {{ input.name"}}`)), []string{"nodes[0].config.body.text"}},
		{"http bad template in array", wf(node("h", "HTTP_REQUEST", `{"url":"https://x.example","body":["ok","{{ nope }}"]}`)), []string{"nodes[0].config.body[1]"}},
		{"http templated url with ftp scheme", wf(node("h", "HTTP_REQUEST", `{"url":"ftp://{{ input.host }}/x"}`)), []string{"nodes[0].config.url"}},
		{"http bad template in url", wf(node("h", "HTTP_REQUEST", `{"url":"https://x.example/{{ }}"}`)), []string{"nodes[0].config.url"}},

		// DATABASE.
		{"db operation missing", wf(node("d", "DATABASE", `{"collection":"c"}`)), []string{"nodes[0].config.operation"}},
		{"db operation bad", wf(node("d", "DATABASE", `{"operation":"drop","collection":"c"}`)), []string{"nodes[0].config.operation"}},
		{"db collection bad", wf(node("d", "DATABASE", `{"operation":"find","collection":"1c"}`)), []string{"nodes[0].config.collection"}},
		{"db collection missing", wf(node("d", "DATABASE", `{"operation":"find"}`)), []string{"nodes[0].config.collection"}},
		{"db insertOne without document", wf(node("d", "DATABASE", `{"operation":"insertOne","collection":"c"}`)), []string{"nodes[0].config.document"}},
		{"db document operator key", wf(node("d", "DATABASE", `{"operation":"insertOne","collection":"c","document":{"a":{"$x":1}}}`)), []string{"nodes[0].config.document.a.$x"}},
		{"db document not object", wf(node("d", "DATABASE", `{"operation":"insertOne","collection":"c","document":"text {{ input.x }}"}`)), []string{"nodes[0].config.document"}},
		{"db insertMany without documents", wf(node("d", "DATABASE", `{"operation":"insertMany","collection":"c"}`)), []string{"nodes[0].config.documents"}},
		{"db documents item not object", wf(node("d", "DATABASE", `{"operation":"insertMany","collection":"c","documents":[{},1]}`)), []string{"nodes[0].config.documents[1]"}},
		{"db documents too many", wf(node("d", "DATABASE", `{"operation":"insertMany","collection":"c","documents":[`+strings.TrimSuffix(strings.Repeat(`{},`, 1001), ",")+`]}`)), []string{"nodes[0].config.documents"}},
		{"db key not used by operation", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","document":{}}`)), []string{"nodes[0].config.document"}},
		{"db $where under field", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","filter":{"age":{"$gt":1,"$where":"x"}}}`)), []string{"nodes[0].config.filter.age.$where"}},
		{"db $where top level", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","filter":{"$where":"x"}}`)), []string{"nodes[0].config.filter.$where"}},
		{"db $eq top level", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","filter":{"$eq":1}}`)), []string{"nodes[0].config.filter.$eq"}},
		{"db $regex in $or", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","filter":{"$or":[{"a":1},{"b":{"$regex":"x"}}]}}`)), []string{"nodes[0].config.filter.$or[1].b.$regex"}},
		{"db $and not array", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","filter":{"$and":{"a":1}}}`)), []string{"nodes[0].config.filter.$and"}},
		{"db $in not array", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","filter":{"a":{"$in":1}}}`)), []string{"nodes[0].config.filter.a.$in"}},
		{"db $exists not bool", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","filter":{"a":{"$exists":1}}}`)), []string{"nodes[0].config.filter.a.$exists"}},
		{"db $not plain value", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","filter":{"a":{"$not":{"b":1}}}}`)), []string{"nodes[0].config.filter.a.$not"}},
		{"db $not bad operator", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","filter":{"a":{"$not":{"$size":1}}}}`)), []string{"nodes[0].config.filter.a.$not.$size"}},
		{"db mixed operator and field", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","filter":{"a":{"$gt":1,"b":2}}}`)), []string{"nodes[0].config.filter.a.b"}},
		{"db empty path segment", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","filter":{"a..b":1}}`)), []string{"nodes[0].config.filter.a..b"}},
		{"db update missing", wf(node("d", "DATABASE", `{"operation":"updateOne","collection":"c","filter":{}}`)), []string{"nodes[0].config.update"}},
		{"db update bad operator", wf(node("d", "DATABASE", `{"operation":"updateMany","collection":"c","update":{"$rename":{"a":"b"}}}`)), []string{"nodes[0].config.update.$rename"}},
		{"db update plain field", wf(node("d", "DATABASE", `{"operation":"updateOne","collection":"c","update":{"a":1}}`)), []string{"nodes[0].config.update.a"}},
		{"db update $inc not number", wf(node("d", "DATABASE", `{"operation":"updateOne","collection":"c","update":{"$inc":{"n":"1"}}}`)), []string{"nodes[0].config.update.$inc.n"}},
		{"db update $set not object", wf(node("d", "DATABASE", `{"operation":"updateOne","collection":"c","update":{"$set":1}}`)), []string{"nodes[0].config.update.$set"}},
		{"db sort bad", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","sort":{"a":2}}`)), []string{"nodes[0].config.sort.a"}},
		{"db limit too big", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","limit":1001}`)), []string{"nodes[0].config.limit"}},
		{"db projection bad", wf(node("d", "DATABASE", `{"operation":"find","collection":"c","projection":{"a":5}}`)), []string{"nodes[0].config.projection.a"}},

		// AI_PROCESSOR.
		{"ai missing everything", wf(node("a", "AI_PROCESSOR", `{}`)), []string{"nodes[0].config.prompt", "nodes[0].config.taskType"}},
		{"ai bad task", wf(node("a", "AI_PROCESSOR", `{"taskType":"poetry","prompt":"x"}`)), []string{"nodes[0].config.taskType"}},
		{"ai bad provider", wf(node("a", "AI_PROCESSOR", `{"taskType":"quick_decision","prompt":"x","provider":"openai"}`)), []string{"nodes[0].config.provider"}},
		{"ai temperature range", wf(node("a", "AI_PROCESSOR", `{"taskType":"quick_decision","prompt":"x","temperature":2.5}`)), []string{"nodes[0].config.temperature"}},
		{"ai maxTokens zero", wf(node("a", "AI_PROCESSOR", `{"taskType":"quick_decision","prompt":"x","maxTokens":0}`)), []string{"nodes[0].config.maxTokens"}},
		{"ai cache not bool", wf(node("a", "AI_PROCESSOR", `{"taskType":"quick_decision","prompt":"x","cache":1}`)), []string{"nodes[0].config.cache"}},
		{"ai system not string", wf(node("a", "AI_PROCESSOR", `{"taskType":"quick_decision","prompt":"x","system":[]}`)), []string{"nodes[0].config.system"}},

		// OUTPUT.
		{"output value missing", wf(node("o", "OUTPUT", `{}`)), []string{"nodes[0].config.value"}},
		{"output template unknown node", wf(node("o", "OUTPUT", `{"value":"{{ nodes.ghost.output }}"}`)), []string{"nodes[0].config.value"}},

		// References to nodes that are not upstream.
		{"reference to sibling", wf(inputNode+","+node("a", "TRANSFORM", `{"set":{"x":"1"}}`)+","+node("b", "TRANSFORM", `{"set":{"y":"nodes.a.output.x"}}`),
			edge("in", "a"), edge("in", "b")), []string{"nodes[2].config.set.y"}},
		{"reference to downstream", wf(inputNode+","+node("o", "OUTPUT", `{"value":{"deep":["{{ nodes.later.output }}"]}}`)+","+node("later", "TRANSFORM", `{"set":{"y":"1"}}`),
			edge("in", "o"), edge("o", "later")), []string{"nodes[1].config.value.deep[0]"}},
		{"reference to itself", wf(node("a", "TRANSFORM", `{"set":{"y":"nodes.a.output"}}`)), []string{"nodes[0].config.set.y"}},

		// Sizes.
		{"too many nodes", `{"name":"x","nodes":[` + strings.TrimSuffix(strings.Repeat(`{"id":"a","type":"OUTPUT"},`, MaxNodes+1), ",") + `]}`, []string{"nodes"}},
		{"too many edges", `{"name":"x","nodes":[` + outNode + `],"edges":[` + strings.TrimSuffix(strings.Repeat(`{},`, MaxEdges+1), ",") + `]}`, []string{"edges"}},
		{"expression too long", wf(node("t", "TRANSFORM", `{"set":{"a":"`+strings.Repeat("1+", MaxExpressionBytes/2)+`1"}}`)), []string{"nodes[0].config.set.a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			def, errs := Parse([]byte(tt.body))
			require.Nil(t, def)
			require.Equal(t, tt.want, paths(errs), "errors: %v", errs)
			for _, e := range errs {
				require.NotEmpty(t, e.Message)
			}
		})
	}
}

func TestParseMessages(t *testing.T) {
	t.Parallel()
	_, errs := Parse([]byte(`{"name": "x", "nodes": [}`))
	require.Len(t, errs, 1)
	require.Contains(t, errs[0].Message, "byte offset 24")

	_, errs = Parse([]byte(wf(inputNode+","+node("a", "OUTPUT", `{"value":1}`)+","+node("b", "OUTPUT", `{"value":1}`),
		edge("in", "a"), edge("a", "b"), edge("b", "a"))))
	require.Len(t, errs, 1)
	require.Contains(t, errs[0].Message, "a -> b -> a")

	_, errs = Parse([]byte(wf(node("c", "CONDITION", `{"expression":"nodes.x.output"}`))))
	require.Len(t, errs, 1)
	require.Contains(t, errs[0].Message, "nodes.x names no node")
}

func TestParseValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
	}{
		{"single output, no edges", `{"name":"x","nodes":[` + outNode + `]}`},
		{"null description and config", `{"name":"x","description":null,"nodes":[{"id":"o","type":"output","config":{"value":null}}],"edges":null}`},
		{"db filter with every operator", wf(node("d", "DATABASE", `{"operation":"find","collection":"users","limit":10,"sort":{"age":-1},"projection":{"name":1,"_id":0},
			"filter":{"address.city":"Paris","age":{"$gte":18,"$lt":{"x":1},"$ne":null},"tags":{"$in":["a"],"$nin":[]},"email":{"$exists":true},
			"score":{"$not":{"$gt":5}},"$and":[{"a":1},{"$or":[{"b":{"$eq":"{{ input.b }}"}},{"c":2}]}]}}`))},
		{"db update and templates", wf(inputNode+","+node("d", "DATABASE", `{"operation":"updateMany","collection":"c","filter":{"id":"{{ input.id }}"},
			"update":{"$set":{"a.b":"{{ input.x }}"},"$unset":{"z":""},"$inc":{"n":1},"$push":{"log":{"at":"{{ execution.id }}"}}}}`), edge("in", "d"))},
		{"db documents as lone template", wf(inputNode+","+node("d", "DATABASE", `{"operation":"insertMany","collection":"c","documents":"{{ input.rows }}"}`), edge("in", "d"))},
		{"http templated url", wf(node("h", "HTTP_REQUEST", `{"url":"{{ input.base }}/x","method":"delete","headers":{"Authorization":"Bearer {{ input.token }}"},"query":{"q":"1"},"failOnStatus":false,"maxResponseBytes":1024,"timeoutMs":5000,"retry":{"maxAttempts":3,"backoffMs":200},"onError":"continue"}`))},
		{"template with braces in literal", wf(node("o", "OUTPUT", `{"value":"{{ {\"a\": {\"b\": \"}}\"}} }}"}`))},
		{"ai full config", wf(node("a", "AI_PROCESSOR", `{"taskType":"code_generation","prompt":"write {{ input.lang }}","system":"be terse","temperature":0,"maxTokens":32768,"provider":"qwen","cache":true}`))},
		{"condition unknown type accepted", wf(inputNode+","+node("c", "CONDITION", `{"expression":"input.flag"}`), edge("in", "c"))},
		{"reference via index and optional chaining", wf(inputNode+","+node("a", "TRANSFORM", `{"set":{"x":"nodes[\"in\"]?.output ?? 1","s":"nodes.in.status == 'completed'"}}`), edge("in", "a"))},
		{"reference to grand ancestor through branch", wf(inputNode+","+node("c", "CONDITION", `{"expression":"true"}`)+","+node("o", "OUTPUT", `{"value":"{{ nodes.in.output }}"}`),
			edge("in", "c"), `{"from":"c","to":"o","branch":"false"}`)},
		{"input fields with defaults", wf(node("in", "INPUT", `{"fields":{"s":{"type":"string","default":"x","description":"d"},"o":{"type":"object","default":{}},"a":{"type":"array","required":false}}}`))},
		{"max nodes", `{"name":"x","nodes":[` + manyNodes(MaxNodes) + `]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			def, errs := Parse([]byte(tt.body))
			require.Empty(t, errs)
			_, err := Compile(def)
			require.NoError(t, err)
		})
	}
}

func manyNodes(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = node(fmt.Sprintf("n%d", i), "OUTPUT", `{"value":1}`)
	}
	return strings.Join(parts, ",")
}

func TestCompileInvalid(t *testing.T) {
	t.Parallel()
	_, err := Compile(&Definition{Name: "x", Nodes: []Node{{ID: "a", Type: "output"}}})
	require.Error(t, err)
	var coded *events.Error
	require.True(t, errors.As(err, &coded))
	require.Equal(t, events.CodeInvalid, coded.Code)
	require.Equal(t, []string{"nodes[0].config.value"}, paths(coded.Details))

	// A definition built in Go, with Go int values and a lower-case type, compiles.
	g, err := Compile(&Definition{Name: "x", Nodes: []Node{
		{ID: "a", Type: "transform", Config: map[string]any{"set": map[string]any{"v": "1"}, "timeoutMs": 250, "retry": map[string]any{"maxAttempts": int64(2)}}},
	}})
	require.NoError(t, err)
	require.Equal(t, TypeTransform, g.Nodes["a"].Type)
	require.Equal(t, 2, g.Nodes["a"].Retry.MaxAttempts)
	require.Equal(t, int64(250), g.Nodes["a"].Timeout.Milliseconds())
}

func TestTemplates(t *testing.T) {
	t.Parallel()
	scope := Scope{
		Input:     map[string]any{"n": 3.0, "name": "Ada", "list": []any{1.0, "b"}, "obj": map[string]any{"k": true}},
		Nodes:     map[string]NodeResult{"prev": {Output: map[string]any{"count": 2}, Status: "completed"}},
		Execution: ExecutionInfo{ID: "ex1", WorkflowID: "wf1"},
	}
	tests := []struct {
		name string
		src  string
		want any
		lone bool
	}{
		{"no template", "plain", "plain", false},
		{"lone number keeps type", "{{ input.n }}", 3.0, true},
		{"lone with spaces keeps type", "  {{input.list}}\n", []any{1.0, "b"}, true},
		{"lone object", "{{ input.obj }}", map[string]any{"k": true}, true},
		{"lone nil", "{{ input.missing }}", nil, true},
		{"lone arithmetic", "{{ nodes.prev.output.count * 2 }}", 4, true},
		{"concatenated string", "Hello {{ input.name }}!", "Hello Ada!", false},
		{"concatenated number", "n={{ input.n }}", "n=3", false},
		{"concatenated array as JSON", "l={{ input.list }}", `l=[1,"b"]`, false},
		{"concatenated nil as null", "x={{ input.missing }}", "x=null", false},
		{"two expressions", "{{ execution.id }}/{{ execution.workflowId }}", "ex1/wf1", false},
		{"braces in string literal", `{{ "}}" + input.name }}`, "}}Ada", true},
		{"map literal", `{{ {"a": {"b": input.n}} }}`, map[string]any{"a": map[string]any{"b": 3.0}}, true},
		{"stray closing braces are text", "a }} b", "a }} b", false},
		{"status", "{{ nodes.prev.status }}", "completed", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tpl, err := CompileTemplate(tt.src)
			require.NoError(t, err)
			require.Equal(t, tt.lone, tpl.Lone())
			got, err := tpl.Render(scope)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}

	for _, bad := range []string{"{{", "a {{ input.x", "{{ }}", "{{ 'unterminated }}", "{{ nodes }}", "{{ env }}", "{{ 1 + }}"} {
		_, err := CompileTemplate(bad)
		require.Error(t, err, bad)
	}
}

func TestRender(t *testing.T) {
	t.Parallel()
	compiled, err := CompileValue(map[string]any{
		"url":   "https://x.example/{{ input.id }}",
		"body":  map[string]any{"n": "{{ input.n }}", "raw": 5.0, "list": []any{"{{ input.n + 1 }}", true}},
		"plain": "text",
	})
	require.NoError(t, err)
	scope := Scope{Input: map[string]any{"id": "42", "n": 7}}
	got, err := Render(compiled, scope)
	require.NoError(t, err)
	require.Equal(t, map[string]any{
		"url":   "https://x.example/42",
		"body":  map[string]any{"n": 7, "raw": 5.0, "list": []any{8, true}},
		"plain": "text",
	}, got)

	// Rendering twice gives independent copies.
	again, err := Render(compiled, scope)
	require.NoError(t, err)
	again.(map[string]any)["plain"] = "changed"
	require.Equal(t, "text", got.(map[string]any)["plain"])

	_, err = CompileValue(map[string]any{"a": []any{"{{ x }}"}})
	require.ErrorContains(t, err, "a[0]")

	// Runtime errors name the expression.
	tpl, err := CompileTemplate("{{ input.a.b.c }}")
	require.NoError(t, err)
	_, err = tpl.Render(Scope{Input: map[string]any{"a": 1}})
	require.ErrorContains(t, err, "input.a.b.c")
}

func TestEval(t *testing.T) {
	t.Parallel()
	scope := Scope{
		Input:     map[string]any{"text": "a long enough sentence here", "n": 2.0},
		Nodes:     map[string]NodeResult{"ai": {Output: map[string]any{"label": "negative", "score": 0.9}, Status: "completed"}},
		Execution: ExecutionInfo{ID: "e", WorkflowID: "w"},
	}
	tests := []struct {
		src  string
		want any
	}{
		{"upper(input.text)", "A LONG ENOUGH SENTENCE HERE"},
		{"len(input.text) > 20", true},
		{"nodes.ai.output.label == 'negative' && nodes.ai.output.score > 0.5", true},
		{`nodes["ai"].status`, "completed"},
		{"input.n * 3", 6.0},
		{"execution.workflowId + ':' + execution.id", "w:e"},
		{"map(1..3, # * input.n)", []any{2.0, 4.0, 6.0}},
		{"nodes.ai?.output?.missing ?? 'none'", "none"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			t.Parallel()
			e, err := CompileExpr(tt.src)
			require.NoError(t, err)
			got, err := Eval(e, scope)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}

	e, err := compileExpr("input.flag", true)
	require.NoError(t, err)
	_, err = EvalBool(e, Scope{Input: map[string]any{"flag": "yes"}})
	require.ErrorContains(t, err, "input.flag")
	b, err := EvalBool(e, Scope{}) // a missing value is false, as expr casts nil
	require.NoError(t, err)
	require.False(t, b)
	b, err = EvalBool(e, Scope{Input: map[string]any{"flag": true}})
	require.NoError(t, err)
	require.True(t, b)
}

func TestLimits(t *testing.T) {
	t.Parallel()

	_, err := CompileExpr(strings.Repeat("1+", MaxExpressionBytes/2) + "1")
	require.ErrorContains(t, err, "bytes long")

	// The memory budget stops large ranges and allocations at run time.
	e, err := CompileExpr("map(1..10000000, #)")
	require.NoError(t, err)
	_, err = Eval(e, Scope{})
	require.ErrorContains(t, err, "more than 1000000 elements")

	// Concatenated text is capped per Render.
	tpl, err := CompileTemplate("x{{ repeat('a', 600000) }}{{ repeat('b', 600000) }}")
	require.NoError(t, err)
	_, err = tpl.Render(Scope{})
	require.ErrorContains(t, err, "exceeds")

	// Non-JSON results cannot be concatenated.
	tpl, err = CompileTemplate("x{{ 1.0 / 0 }}")
	require.NoError(t, err)
	_, err = tpl.Render(Scope{})
	require.ErrorContains(t, err, "JSON")
}

func TestValidateInputs(t *testing.T) {
	t.Parallel()
	def, errs := Parse([]byte(wf(node("in", "INPUT", `{"fields":{
		"text":{"type":"string","required":true},
		"n":{"type":"number","default":5},
		"flag":{"type":"boolean"},
		"tags":{"type":"array","default":["a"]},
		"meta":{"type":"object"}}}`))))
	require.Empty(t, errs)

	tests := []struct {
		name   string
		inputs map[string]any
		want   map[string]any
		paths  []string
	}{
		{"defaults filled", map[string]any{"text": "hi"}, map[string]any{"text": "hi", "n": 5.0, "tags": []any{"a"}}, nil},
		{"null takes default", map[string]any{"text": "hi", "n": nil}, map[string]any{"text": "hi", "n": 5.0, "tags": []any{"a"}}, nil},
		{"undeclared pass through", map[string]any{"text": "hi", "extra": map[string]any{"x": 1.0}, "n": 1.0},
			map[string]any{"text": "hi", "extra": map[string]any{"x": 1.0}, "n": 1.0, "tags": []any{"a"}}, nil},
		{"Go ints are numbers", map[string]any{"text": "hi", "n": 3}, map[string]any{"text": "hi", "n": 3, "tags": []any{"a"}}, nil},
		{"required missing", map[string]any{}, nil, []string{"inputs.text"}},
		{"required null", map[string]any{"text": nil}, nil, []string{"inputs.text"}},
		{"nil inputs", nil, nil, []string{"inputs.text"}},
		{"wrong types", map[string]any{"text": 1.0, "n": "5", "flag": "true", "tags": "a", "meta": []any{}}, nil,
			[]string{"inputs.flag", "inputs.meta", "inputs.n", "inputs.tags", "inputs.text"}},
	}
	g, err := Compile(def)
	require.NoError(t, err)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, errs := ValidateInputs(def, tt.inputs)
			require.Equal(t, tt.paths, nilIfEmpty(paths(errs)))
			require.Equal(t, tt.want, got)
			// The compiled graph, with its fields read once, says the same.
			got, errs = g.ValidateInputs(tt.inputs)
			require.Equal(t, tt.paths, nilIfEmpty(paths(errs)))
			require.Equal(t, tt.want, got)
		})
	}

	// Defaults are copies: changing the result leaves the definition alone.
	got, errs := ValidateInputs(def, map[string]any{"text": "x"})
	require.Empty(t, errs)
	got["tags"].([]any)[0] = "changed"
	require.Equal(t, []any{"a"}, def.Inputs()["tags"].Default)

	// Without an INPUT node, or without fields, any object is accepted as is.
	for _, body := range []string{wf(outNode), wf(inputNode)} {
		def, errs := Parse([]byte(body))
		require.Empty(t, errs)
		in := map[string]any{"anything": []any{1.0}}
		got, errs := ValidateInputs(def, in)
		require.Empty(t, errs)
		require.Equal(t, in, got)
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(contractExample))
	f.Add([]byte(wf(inputNode+","+outNode, edge("in", "out"))))
	f.Add([]byte(wf(node("d", "DATABASE", `{"operation":"find","collection":"c","filter":{"$or":[{"a":{"$not":{"$in":[1]}}}]}}`))))
	f.Add([]byte(wf(node("c", "CONDITION", `{"expression":"nodes.a.output > 1"}`)+","+node("a", "TRANSFORM", `{"set":{"x":"1"}}`), `{"from":"c","to":"a","branch":"true"}`)))
	f.Add([]byte(`{"name":"x","nodes":[{"id":"a","type":"http_request","config":{"url":"{{ input.u }}","method":"get"}}]}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, body []byte) {
		def, errs := Parse(body)
		if len(errs) > 0 {
			require.Nil(t, def)
			return
		}
		// What parses compiles, and its JSON parses again to the same definition.
		g, err := Compile(def)
		require.NoError(t, err)
		require.Len(t, g.Order, len(def.Nodes))
		raw, err := json.Marshal(def)
		require.NoError(t, err)
		again, errs := Parse(raw)
		require.Empty(t, errs)
		require.Equal(t, def, again)
	})
}

func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"plain", "{{ input.a }}", "x {{ input.a + 1 }} y", `{{ "}}" }}`, `{{ {"a": {"b": 1}} }}`, "{{", "}}{{}}", "{{ nodes.n.output }}", "{{ 'a\\'b' }}"} {
		f.Add(s)
	}
	scope := Scope{Input: map[string]any{"a": 1.0, "s": "str"}, Nodes: map[string]NodeResult{"n": {Output: []any{1.0}}}}
	f.Fuzz(func(t *testing.T, s string) {
		tpl, err := CompileTemplate(s)
		if err != nil {
			return
		}
		if !HasTemplate(s) {
			got, err := tpl.Render(scope)
			require.NoError(t, err)
			require.Equal(t, s, got)
			return
		}
		_, _ = tpl.Render(scope) // must not panic; runtime errors are fine
	})
}
