package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// client talks to the engine's HTTP API over keep-alive connections:
// net/http for the setup, fasthttp for the load, so that the generator,
// which shares the machine with the engine, spends as little of it as it
// can (about half of net/http's CPU per request).
type client struct {
	base string
	hc   *http.Client
	fast *fasthttp.HostClient
}

func newClient(base string) *client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	base = strings.TrimRight(base, "/")
	return &client{base: base, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		fast: &fasthttp.HostClient{Addr: strings.TrimPrefix(base, "http://"), MaxConns: 1024,
			ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}}
}

// post sends one POST with a JSON body and one extra header through the
// fast client; it returns the status and the answer, copied into answer's
// room (which the caller may then reuse).
func (c *client) post(path string, body []byte, header, value string, answer []byte) (int, []byte, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(c.base + path)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.Set(header, value)
	req.SetBodyRaw(body)
	if err := c.fast.Do(req, resp); err != nil {
		return 0, nil, err
	}
	return resp.StatusCode(), append(answer[:0], resp.Body()...), nil
}

// do sends one request and reads the whole answer.
func (c *client) do(ctx context.Context, method, path string, body []byte, header http.Header) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// call sends v as JSON, expects status want and decodes the answer into out.
func (c *client) call(ctx context.Context, method, path, bearer string, v any, want int, out any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	h := http.Header{}
	if bearer != "" {
		h.Set("Authorization", "Bearer "+bearer)
	}
	status, b, err := c.do(ctx, method, path, body, h)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if status != want {
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, path, status, want, clip(b, 400))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode %q: %w", method, path, clip(b, 200), err)
		}
	}
	return nil
}

// setup registers a user, creates an API key and saves the two workflows.
type setup struct {
	token   string
	apiKey  string
	seedID  string
	diamond string
}

func prepare(ctx context.Context, c *client, runID string) (setup, error) {
	var s setup
	var reg struct {
		Token string `json:"token"`
	}
	err := c.call(ctx, "POST", "/api/auth/register", "", map[string]string{
		"email":    "bench-" + runID + "@example.com",
		"password": "bench-password-" + runID,
		"name":     "weft-bench",
	}, http.StatusCreated, &reg)
	if err != nil {
		return s, err
	}
	s.token = reg.Token
	var key struct {
		Key string `json:"key"`
	}
	if err := c.call(ctx, "POST", "/api/auth/api-keys", s.token, map[string]string{"name": "weft-bench"}, http.StatusCreated, &key); err != nil {
		return s, err
	}
	s.apiKey = key.Key
	var wf struct {
		ID string `json:"id"`
	}
	if err := c.call(ctx, "POST", "/api/workflows", s.token, seedWorkflow(), http.StatusCreated, &wf); err != nil {
		return s, fmt.Errorf("seed workflow: %w", err)
	}
	s.seedID = wf.ID
	if err := c.call(ctx, "POST", "/api/workflows", s.token, diamondWorkflow(), http.StatusCreated, &wf); err != nil {
		return s, fmt.Errorf("diamond workflow: %w", err)
	}
	s.diamond = wf.ID
	return s, nil
}

type obj = map[string]any

func node(id, typ string, config obj) obj { return obj{"id": id, "type": typ, "config": config} }
func edge(from, to string) obj            { return obj{"from": from, "to": to} }

// seedNodesRun is how many of the seed workflow's nodes run per execution
// (one of the two branches is skipped).
const seedNodesRun = 5

// seedWorkflow is the shape of the seed example, without the nodes that
// leave the process: INPUT → TRANSFORM → CONDITION → yes|no → OUTPUT.
func seedWorkflow() obj {
	return obj{
		"name":        "bench: seed shape",
		"description": "weft-bench: INPUT, TRANSFORM, CONDITION, one branch of two, OUTPUT",
		"nodes": []obj{
			node("in", "INPUT", obj{"fields": obj{
				"text": obj{"type": "string", "required": true},
				"n":    obj{"type": "number", "default": 2},
			}}),
			node("shape", "TRANSFORM", obj{"set": obj{"upper": "upper(input.text)", "double": "input.n * 2"}}),
			node("big", "CONDITION", obj{"expression": "nodes.shape.output.double > 10"}),
			node("yes", "TRANSFORM", obj{"set": obj{"verdict": "'big'"}}),
			node("no", "TRANSFORM", obj{"set": obj{"verdict": "'small'"}}),
			node("out", "OUTPUT", obj{"value": obj{
				"upper":   "{{ nodes.shape.output.upper }}",
				"double":  "{{ nodes.shape.output.double }}",
				"verdict": "{{ nodes.yes?.output?.verdict ?? nodes.no?.output?.verdict }}",
				"summary": "{{ input.text }} x{{ input.n }}",
			}}),
		},
		"edges": []obj{
			edge("in", "shape"), edge("shape", "big"),
			{"from": "big", "to": "yes", "branch": "true"},
			{"from": "big", "to": "no", "branch": "false"},
			edge("yes", "out"), edge("no", "out"),
		},
	}
}

// diamondNodes is how many nodes of the diamond run per execution.
const diamondNodes = 10

// diamondWorkflow is INPUT → eight TRANSFORMs in parallel → OUTPUT.
func diamondWorkflow() obj {
	nodes := []obj{node("in", "INPUT", obj{"fields": obj{
		"x": obj{"type": "number", "required": true},
		"s": obj{"type": "string", "default": "weft"},
	}})}
	var edges []obj
	value := obj{}
	for i := 1; i <= 8; i++ {
		id := fmt.Sprintf("t%d", i)
		nodes = append(nodes, node(id, "TRANSFORM", obj{"set": obj{"v": fmt.Sprintf("input.x * %d + len(input.s)", i)}}))
		edges = append(edges, edge("in", id), edge(id, "out"))
		value[id] = "{{ nodes." + id + ".output.v }}"
	}
	nodes = append(nodes, node("out", "OUTPUT", obj{"value": value}))
	return obj{
		"name":        "bench: diamond",
		"description": "weft-bench: INPUT, eight TRANSFORMs in parallel, OUTPUT joining them",
		"nodes":       nodes,
		"edges":       edges,
	}
}

// clip shortens b for an error message.
func clip(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
