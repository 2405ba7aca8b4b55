package flow_test

import (
	"fmt"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/workers/flow"
)

func Example() {
	body := []byte(`{
	  "name": "Greet",
	  "nodes": [
	    {"id": "in",  "type": "input",     "config": {"fields": {"name": {"type": "string", "required": true}}}},
	    {"id": "fmt", "type": "TRANSFORM", "config": {"set": {"greeting": "'Hello, ' + input.name"}}},
	    {"id": "out", "type": "OUTPUT",    "config": {"value": {"text": "{{ nodes.fmt.output.greeting }}!", "len": "{{ len(input.name) }}"}}}
	  ],
	  "edges": [{"from": "in", "to": "fmt"}, {"from": "fmt", "to": "out"}]
	}`)
	def, problems := flow.Parse(body)
	if problems != nil {
		fmt.Println(events.Invalid(problems), problems)
		return
	}
	graph, err := flow.Compile(def)
	if err != nil {
		fmt.Println(err)
		return
	}
	inputs, problems := flow.ValidateInputs(def, map[string]any{"name": "Ada"})
	if problems != nil {
		fmt.Println(problems)
		return
	}

	// The engine evaluates TRANSFORM's expressions, then renders OUTPUT's value.
	scope := flow.Scope{Input: inputs, Nodes: map[string]flow.NodeResult{}}
	greeting, _ := flow.Eval(graph.Nodes["fmt"].Set["greeting"], scope)
	scope.Nodes["fmt"] = flow.NodeResult{Output: map[string]any{"greeting": greeting}, Status: "completed"}
	out, _ := flow.Render(graph.Nodes["out"].Params["value"], scope)

	fmt.Println(graph.Order, graph.Nodes["out"].Refs)
	fmt.Printf("%#v\n", out)

	_, problems = flow.Parse([]byte(`{"name": "Bad", "nodes": [{"id": "x", "type": "HTTP_REQUEST", "config": {"url": "/relative"}}]}`))
	fmt.Println(problems)
	// Output:
	// [in fmt out] [fmt]
	// map[string]interface {}{"len":3, "text":"Hello, Ada!"}
	// [{nodes[0].config.url must be an absolute http or https URL}]
}
