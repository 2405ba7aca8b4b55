package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/weftdev/weft/providers"
	"github.com/weftdev/weft/workers/flow"
)

// AI_PROCESSOR asks an AI provider through the providers router: the task
// type picks a primary and a backup, or the config pins one provider. The
// prompt and system message are {{ }} templates rendered against the
// node's scope; the answer becomes {"text","provider","model","fallback",
// "usage","latencyMs"} (plus "label" and "score" for sentiment_analysis).
//
// The router retries and falls back within the node's deadline, so the
// node makes one router call per attempt; the engine's retry policy then
// applies to the codes the router gives: ai_unavailable, ai_timeout and
// ai_stream_interrupted are transient, ai_bad_request, ai_not_configured
// and ai_quota_exceeded are permanent.

// DefaultAIKeepAliveEvery is how often a waiting AI call tells JetStream it
// is still running, well inside any sensible AckWait.
const DefaultAIKeepAliveEvery = 10 * time.Second

// AIRouter answers AI requests; *providers.Router is the one cmd wires.
type AIRouter interface {
	Complete(ctx context.Context, req providers.Request) (*providers.Result, error)
}

// AIConfig is how an AI_PROCESSOR runner works; cmd builds it, as this
// package reads no environment.
type AIConfig struct {
	// Router answers the requests; nil fails every AI_PROCESSOR node with
	// ai_not_configured.
	Router AIRouter
	// KeepAliveEvery is how often a waiting call calls Input.KeepAlive;
	// zero means DefaultAIKeepAliveEvery.
	KeepAliveEvery time.Duration
	// OnToken, when set, streams answers: the router uses the provider's
	// streaming API and OnToken receives every delta in order, with the
	// execution and node it belongs to (for the execution's SSE stream).
	// It runs on the node's goroutine, so it must not block for long.
	OnToken func(executionID, nodeID, token string)
}

type aiNode struct{ cfg AIConfig }

// The registered AI_PROCESSOR runner has no router: an engine runs the
// type with its own (workers.Config.Runners, from NewAI), built on its
// Redis.
func init() { Register(flow.TypeAIProcessor, NewAI(AIConfig{})) }

// NewAI returns an AI_PROCESSOR spec for cfg.
func NewAI(cfg AIConfig) Spec { return Spec{Runner: newAINode(cfg)} }

func newAINode(cfg AIConfig) *aiNode {
	if cfg.KeepAliveEvery <= 0 {
		cfg.KeepAliveEvery = DefaultAIKeepAliveEvery
	}
	return &aiNode{cfg: cfg}
}

// Run makes one router call; the router has already retried and fallen
// back inside it.
func (a *aiNode) Run(ctx context.Context, in Input) (any, error) {
	if a.cfg.Router == nil {
		return nil, Permanent(providers.CodeNotConfigured, "AI is not configured in this worker")
	}
	req, err := aiRequest(in)
	if err != nil {
		return nil, err
	}
	if on := a.cfg.OnToken; on != nil {
		execID, nodeID := in.ExecutionID, in.Node.ID
		req.OnToken = func(tok string) { on(execID, nodeID, tok) }
	}
	stop := keepAliveEvery(in.KeepAlive, a.cfg.KeepAliveEvery)
	res, err := a.cfg.Router.Complete(ctx, req)
	stop()
	if err != nil {
		return nil, aiError(err)
	}
	return res.Output(), nil
}

// aiRequest renders the node's params into a router request.
func aiRequest(in Input) (providers.Request, error) {
	p := in.Node.Params
	req := providers.Request{UserID: in.UserID}
	render := func(key string) (any, error) {
		v, err := flow.Render(p[key], in.Scope)
		if err != nil {
			return nil, exprFailure("template_error", key, err)
		}
		return v, nil
	}
	text := func(key string) (string, error) {
		v, err := render(key)
		if err != nil || v == nil {
			return "", err
		}
		return stringify(v), nil // a template may render an object: the model reads it as JSON
	}
	var err error
	if req.TaskType, err = text("taskType"); err != nil {
		return req, err
	}
	if req.Provider, err = text("provider"); err != nil {
		return req, err
	}
	if req.Prompt, err = text("prompt"); err != nil {
		return req, err
	}
	if strings.TrimSpace(req.Prompt) == "" {
		return req, Permanent(providers.CodeBadRequest, "prompt rendered to an empty text")
	}
	if req.System, err = text("system"); err != nil {
		return req, err
	}
	if v, err := render("temperature"); err != nil {
		return req, err
	} else if v != nil {
		f, ok := aiNumber(v)
		if !ok || f < 0 || f > 2 {
			return req, Permanent(providers.CodeBadRequest, "temperature must be a number between 0 and 2")
		}
		req.Temperature = &f
	}
	if v, err := render("maxTokens"); err != nil {
		return req, err
	} else if v != nil {
		n, ok := positiveInt(v)
		if !ok || n > flow.MaxAITokens {
			return req, Permanent(providers.CodeBadRequest, "maxTokens must be a whole number between 1 and %d", flow.MaxAITokens)
		}
		req.MaxTokens = int(n)
	}
	if v, err := render("cache"); err != nil {
		return req, err
	} else if b, ok := v.(bool); ok {
		req.Cache = b
	}
	return req, nil
}

func aiNumber(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

// aiError turns the router's error into the node's: same code, same
// verdict on retrying.
func aiError(err error) error {
	var pe *providers.Error
	if errors.As(err, &pe) {
		return &Error{Code: pe.Code, Message: pe.Message, Retryable: pe.Retryable, RetryAfter: pe.RetryAfter}
	}
	return Classify(err)
}

// keepAliveEvery calls ka every interval until the returned stop is
// called, so a slow model does not get the task redelivered to another
// worker meanwhile.
func keepAliveEvery(ka func(), every time.Duration) (stop func()) {
	if ka == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ka()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
