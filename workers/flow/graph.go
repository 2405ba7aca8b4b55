package flow

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/weftdev/weft/events"
)

// Graph is a compiled workflow version: what the engine needs to schedule nodes and evaluate their configs.
type Graph struct {
	Definition *Definition              // the definition compiled; treat as read-only
	Nodes      map[string]*CompiledNode // by node id
	Order      []string                 // a topological order, ties broken by definition order
	Entries    []string                 // nodes without predecessors, in definition order

	inputs     map[string]InputField // the definition's Inputs, and their names sorted
	inputNames []string
}

// CompiledNode is one node with its place in the graph, its run policy and its compiled expressions.
type CompiledNode struct {
	ID    string
	Type  string // upper case
	Index int    // position in Definition.Nodes
	// Config is the node's config as defined; Params is a copy in which every string holding {{ }} is a
	// *Template, ready for Render (for INPUT, TRANSFORM and CONDITION it is Config itself).
	Config map[string]any
	Params map[string]any
	// Expression is CONDITION's compiled expression; Set holds TRANSFORM's compiled expressions by output name.
	Expression *Expr
	Set        map[string]*Expr
	// Refs are the ids of the nodes whose results this node's expressions read, sorted; the engine loads only those.
	Refs         []string
	Predecessors []Edge // edges into the node
	Successors   []Edge // edges out of the node
	Retry        RetryPolicy
	Timeout      time.Duration // zero when the config sets none
	OnError      string        // "fail" (default) or "continue"
}

// RetryPolicy is a node's retry setting: MaxAttempts runs in all (1 = no retry) with Backoff between them.
type RetryPolicy struct {
	MaxAttempts int
	Backoff     time.Duration
}

// Compile validates def and turns it into a Graph, compiling every expression and template once; an invalid
// definition yields an events.Error with code validation_failed listing every problem. def is not modified.
func Compile(def *Definition) (*Graph, error) {
	if def == nil {
		return nil, events.Invalid([]events.FieldError{{Path: "", Message: "definition is missing"}})
	}
	g, errs := build(def)
	if len(errs) > 0 {
		return nil, events.Invalid(errs)
	}
	return g, nil
}

// build runs every semantic check on def and returns the Graph when there is no problem.
func build(def *Definition) (*Graph, []events.FieldError) {
	var c collector
	name := strings.TrimSpace(def.Name)
	switch {
	case name == "":
		c.add("name", "is required")
	case utf8.RuneCountInString(def.Name) > MaxNameLen:
		c.add("name", "must be at most %d characters", MaxNameLen)
	}
	if utf8.RuneCountInString(def.Description) > MaxDescriptionLen {
		c.add("description", "must be at most %d characters", MaxDescriptionLen)
	}
	switch {
	case len(def.Nodes) == 0:
		c.add("nodes", "at least one node is required")
		return nil, c.errs
	case len(def.Nodes) > MaxNodes:
		c.add("nodes", "at most %d nodes are allowed, got %d", MaxNodes, len(def.Nodes))
		return nil, c.errs
	}
	if len(def.Edges) > MaxEdges {
		c.add("edges", "at most %d edges are allowed, got %d", MaxEdges, len(def.Edges))
		return nil, c.errs
	}

	g := &Graph{Definition: def, Nodes: make(map[string]*CompiledNode, len(def.Nodes)), inputs: def.Inputs()}
	g.inputNames = sortedKeys(g.inputs)
	nodes := make([]*CompiledNode, len(def.Nodes)) // by index; nil for a node whose id is unusable
	refs := make([][]ref, len(def.Nodes))
	firstAt := map[string]int{}
	for i, n := range def.Nodes {
		p := index("nodes", i)
		idOK := true
		switch {
		case n.ID == "":
			c.add(at(p, "id"), "is required")
			idOK = false
		case !idPattern.MatchString(n.ID):
			c.add(at(p, "id"), "must start with a letter or underscore and hold at most 64 letters, digits and underscores")
			idOK = false
		default:
			if j, dup := firstAt[n.ID]; dup {
				c.add(at(p, "id"), "duplicate id %q, also used by nodes[%d]", n.ID, j)
				idOK = false
			} else {
				firstAt[n.ID] = i
			}
		}
		typ := strings.ToUpper(n.Type)
		cn := &CompiledNode{ID: n.ID, Type: typ, Index: i, Config: n.Config}
		switch {
		case n.Type == "":
			c.add(at(p, "type"), "is required; one of %s", strings.Join(NodeTypes, ", "))
		case !slices.Contains(NodeTypes, typ):
			c.add(at(p, "type"), "must be one of %s, got %q", strings.Join(NodeTypes, ", "), truncate(n.Type, 64))
		default:
			cc := &configChecker{collector: &c, node: cn}
			cc.check(at(p, "config"), n.Config)
			refs[i] = cc.refs
		}
		if idOK {
			nodes[i] = cn
			g.Nodes[n.ID] = cn
		}
	}
	checkInputConflicts(&c, def)

	edgesOK := true
	seen := map[[2]string]int{}
	for i, e := range def.Edges {
		p := index("edges", i)
		from, to := g.Nodes[e.From], g.Nodes[e.To]
		ok := true
		for _, end := range []struct {
			key, id string
			node    *CompiledNode
		}{{"from", e.From, from}, {"to", e.To, to}} {
			switch {
			case end.id == "":
				c.add(at(p, end.key), "is required")
				ok = false
			case end.node == nil:
				c.add(at(p, end.key), "names no node: %q", truncate(end.id, 64))
				ok = false
			}
		}
		if ok && e.From == e.To {
			c.add(at(p, "to"), "an edge cannot lead from a node to itself")
			ok = false
		}
		if ok {
			key := [2]string{e.From, e.To}
			if j, dup := seen[key]; dup {
				c.add(p, "duplicate of edges[%d] (%s -> %s)", j, e.From, e.To)
				ok = false
			} else {
				seen[key] = i
			}
		}
		if from != nil {
			switch {
			case from.Type == TypeCondition && e.Branch == "":
				c.add(at(p, "branch"), `is required on an edge out of a CONDITION: "true" or "false"`)
				ok = false
			case from.Type == TypeCondition && e.Branch != "true" && e.Branch != "false":
				c.add(at(p, "branch"), `must be "true" or "false", got %q`, truncate(e.Branch, 64))
				ok = false
			case from.Type != TypeCondition && slices.Contains(NodeTypes, from.Type) && e.Branch != "":
				c.add(at(p, "branch"), "only edges out of a CONDITION carry a branch")
				ok = false
			}
		}
		if !ok {
			edgesOK = false
			continue
		}
		from.Successors = append(from.Successors, e)
		to.Predecessors = append(to.Predecessors, e)
	}
	if len(c.errs) > 0 && (!edgesOK || len(g.Nodes) != len(def.Nodes)) {
		// Without every node and edge the order and ancestry would be guesses; report what we have.
		return nil, c.errs
	}

	order, cycles := topoSort(def, g)
	for _, cyc := range cycles {
		c.add(index("edges", cyc.edge), "closes a cycle: %s", strings.Join(cyc.path, " -> "))
	}
	if len(cycles) > 0 {
		return nil, c.errs
	}
	g.Order = order
	for _, n := range def.Nodes {
		if len(g.Nodes[n.ID].Predecessors) == 0 {
			g.Entries = append(g.Entries, n.ID)
		}
	}

	// Every node an expression reads must be upstream of it, or it could never have run.
	ancestors := ancestry(def, g)
	for i, rs := range refs {
		cn := nodes[i]
		var ids []string
		for _, r := range rs {
			target, exists := g.Nodes[r.id]
			switch {
			case !exists:
				c.add(r.path, "nodes.%s names no node of this workflow", r.id)
			case target.Index == i:
				c.add(r.path, "a node cannot read its own result (nodes.%s)", r.id)
			case !ancestors[i][target.Index]:
				c.add(r.path, "nodes.%s is not upstream of %s, so it can never have run when %s runs", r.id, cn.ID, cn.ID)
			default:
				if !slices.Contains(ids, r.id) {
					ids = append(ids, r.id)
				}
			}
		}
		slices.Sort(ids)
		cn.Refs = ids
	}
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	return g, nil
}

// cycle is one cycle found by topoSort: the edge closing it and the node ids along it.
type cycle struct {
	edge int
	path []string
}

// topoSort returns a topological order of g (ties broken by definition order), or the cycles it found.
func topoSort(def *Definition, g *Graph) ([]string, []cycle) {
	indeg := make([]int, len(def.Nodes))
	for i, n := range def.Nodes {
		indeg[i] = len(g.Nodes[n.ID].Predecessors)
	}
	order := make([]string, 0, len(def.Nodes))
	done := make([]bool, len(def.Nodes))
	for len(order) < len(def.Nodes) {
		next := -1
		for i := range def.Nodes {
			if !done[i] && indeg[i] == 0 {
				next = i
				break
			}
		}
		if next < 0 {
			return nil, findCycles(def, g)
		}
		done[next] = true
		order = append(order, def.Nodes[next].ID)
		for _, e := range g.Nodes[def.Nodes[next].ID].Successors {
			indeg[g.Nodes[e.To].Index]--
		}
	}
	return order, nil
}

// findCycles reports each back edge of a depth-first search as a cycle.
func findCycles(def *Definition, g *Graph) []cycle {
	edgeIndex := map[[2]string]int{}
	for i, e := range def.Edges {
		edgeIndex[[2]string{e.From, e.To}] = i
	}
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(def.Nodes))
	var stack []string
	var cycles []cycle
	var visit func(i int)
	visit = func(i int) {
		color[i] = grey
		id := def.Nodes[i].ID
		stack = append(stack, id)
		for _, e := range g.Nodes[id].Successors {
			j := g.Nodes[e.To].Index
			switch color[j] {
			case white:
				visit(j)
			case grey:
				start := slices.Index(stack, e.To)
				path := append(slices.Clone(stack[start:]), e.To)
				cycles = append(cycles, cycle{edge: edgeIndex[[2]string{e.From, e.To}], path: path})
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
	}
	for i := range def.Nodes {
		if color[i] == white {
			visit(i)
		}
	}
	slices.SortFunc(cycles, func(a, b cycle) int { return a.edge - b.edge })
	return cycles
}

// ancestry returns, for each node index, the set of node indexes upstream of it.
func ancestry(def *Definition, g *Graph) [][]bool {
	anc := make([][]bool, len(def.Nodes))
	for _, id := range g.Order {
		n := g.Nodes[id]
		set := make([]bool, len(def.Nodes))
		for _, e := range n.Predecessors {
			p := g.Nodes[e.From].Index
			set[p] = true
			for k, up := range anc[p] {
				if up {
					set[k] = true
				}
			}
		}
		anc[n.Index] = set
	}
	return anc
}

// checkInputConflicts refuses an input field declared by two INPUT nodes with different types.
func checkInputConflicts(c *collector, def *Definition) {
	declared := map[string]string{}
	for i, n := range def.Nodes {
		if strings.ToUpper(n.Type) != TypeInput {
			continue
		}
		fields, _ := n.Config["fields"].(map[string]any)
		for _, name := range sortedKeys(fields) {
			spec, _ := fields[name].(map[string]any)
			t, _ := spec["type"].(string)
			if t == "" {
				continue
			}
			if prev, ok := declared[name]; ok && prev != t {
				c.add(fmt.Sprintf("nodes[%d].config.fields.%s.type", i, name), "input %q is declared by another INPUT node as %s", name, prev)
				continue
			}
			declared[name] = t
		}
	}
}
