package providers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// call is one request to one provider.
type call struct {
	system      string
	prompt      string
	temperature *float64
	maxTokens   int
	// classify asks a classification backend for sentiment instead of chat.
	classify bool
	onToken  func(string)
}

// reply is one provider's answer.
type reply struct {
	text             string
	promptTokens     int
	completionTokens int
	// scores is a classification's label → score, before normalisation.
	scores []LabelScore
}

// backend talks one provider's wire format.
type backend interface {
	do(ctx context.Context, c call) (reply, error)
}

// meta collects what the transport saw of a response that the client
// libraries do not pass on: the Retry-After of a refusal.
type meta struct {
	mu         sync.Mutex
	retryAfter time.Duration
}

type metaKey struct{}

func withMeta(ctx context.Context) (context.Context, *meta) {
	m := &meta{}
	return context.WithValue(ctx, metaKey{}, m), m
}

func (m *meta) get() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.retryAfter
}

// metaTransport records Retry-After into the request context's meta, since
// go-openai's errors carry the status but not the headers, and caps the
// body of every response but a stream's at maxBody bytes (a stream's text
// is capped as it is read). Whether it is a stream is the request's word,
// not the server's.
type metaTransport struct {
	base    http.RoundTripper
	now     func() time.Time
	maxBody int64
}

func (t *metaTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		if m, ok := req.Context().Value(metaKey{}).(*meta); ok {
			m.mu.Lock()
			m.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), t.now())
			m.mu.Unlock()
		}
	}
	if req.Header.Get("Accept") != "text/event-stream" {
		resp.Body = &cappedBody{ReadCloser: resp.Body, limit: t.maxBody}
	}
	return resp, nil
}

// cappedBody fails a read past limit bytes with tooLarge.
type cappedBody struct {
	io.ReadCloser
	limit, read int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.read += int64(n); b.read > b.limit {
		return 0, tooLarge(b.limit)
	}
	return n, err
}

// tooLarge is the failure of an answer past Config.MaxAnswerBytes.
func tooLarge(limit int64) *callError {
	return &callError{kind: KindMalformed, msg: fmt.Sprintf("the answer is larger than %d bytes", limit)}
}

// chatBackend speaks the OpenAI chat-completions API, which every provider
// here offers (Gemini, Groq and OpenRouter natively, Hugging Face through
// its router).
type chatBackend struct {
	client *openai.Client
	model  string
	// maxText caps a streamed answer's text.
	maxText int64
}

func newChatBackend(baseURL, model string, key Secret, hc *http.Client, maxText int64) *chatBackend {
	cfg := openai.DefaultConfig(string(key))
	cfg.BaseURL = strings.TrimRight(baseURL, "/")
	cfg.HTTPClient = hc
	return &chatBackend{client: openai.NewClientWithConfig(cfg), model: model, maxText: maxText}
}

func (b *chatBackend) request(c call) openai.ChatCompletionRequest {
	req := openai.ChatCompletionRequest{Model: b.model, MaxTokens: c.maxTokens}
	if c.system != "" {
		req.Messages = append(req.Messages, openai.ChatCompletionMessage{Role: openai.ChatMessageRoleSystem, Content: c.system})
	}
	req.Messages = append(req.Messages, openai.ChatCompletionMessage{Role: openai.ChatMessageRoleUser, Content: c.prompt})
	if c.temperature != nil {
		req.Temperature = float32(*c.temperature)
		if req.Temperature == 0 {
			// go-openai omits a zero temperature, which providers read as
			// their default (often 1); the smallest float is 0 to them.
			req.Temperature = math.SmallestNonzeroFloat32
		}
	}
	return req
}

func (b *chatBackend) do(ctx context.Context, c call) (reply, error) {
	req := b.request(c)
	if c.onToken != nil {
		return b.stream(ctx, req, c.onToken)
	}
	resp, err := b.client.CreateChatCompletion(ctx, req)
	if err != nil {
		return reply{}, err
	}
	if len(resp.Choices) == 0 {
		return reply{}, &callError{kind: KindMalformed, msg: "the answer holds no choices"}
	}
	return reply{
		text:             resp.Choices[0].Message.Content,
		promptTokens:     resp.Usage.PromptTokens,
		completionTokens: resp.Usage.CompletionTokens,
	}, nil
}

// stream reads server-sent deltas, handing each to onToken in order.
func (b *chatBackend) stream(ctx context.Context, req openai.ChatCompletionRequest, onToken func(string)) (reply, error) {
	req.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
	s, err := b.client.CreateChatCompletionStream(ctx, req)
	if err != nil {
		return reply{}, err
	}
	defer s.Close()
	var (
		out     strings.Builder
		r       reply
		emitted bool
		chunks  int
	)
	for {
		resp, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if emitted {
				return reply{}, &streamBroken{err: err}
			}
			return reply{}, err
		}
		chunks++
		for _, ch := range resp.Choices {
			if d := ch.Delta.Content; d != "" {
				if int64(out.Len()+len(d)) > b.maxText {
					if emitted {
						return reply{}, &streamBroken{err: tooLarge(b.maxText)}
					}
					return reply{}, tooLarge(b.maxText)
				}
				out.WriteString(d)
				emitted = true
				onToken(d)
			}
		}
		if resp.Usage != nil {
			r.promptTokens, r.completionTokens = resp.Usage.PromptTokens, resp.Usage.CompletionTokens
		}
	}
	if chunks == 0 {
		return reply{}, &callError{kind: KindMalformed, msg: "the stream ended without an answer"}
	}
	r.text = out.String()
	return r, nil
}

// streamBroken is a stream that failed after tokens reached the caller.
type streamBroken struct{ err error }

func (e *streamBroken) Error() string { return "the stream broke off: " + e.err.Error() }
func (e *streamBroken) Unwrap() error { return e.err }

// hfBackend classifies through the Hugging Face inference API and chats
// through the Hugging Face router.
type hfBackend struct {
	chat    *chatBackend
	baseURL string
	model   string
	key     Secret
	hc      *http.Client
	// redact takes keys out of the answer's text before it is quoted (and
	// cut) in a message: the server may echo the key it was sent.
	redact func(string) string
}

func (b *hfBackend) do(ctx context.Context, c call) (reply, error) {
	if !c.classify {
		return b.chat.do(ctx, c)
	}
	body, _ := json.Marshal(map[string]any{"inputs": c.prompt})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.baseURL+"/models/"+b.model, bytes.NewReader(body))
	if err != nil {
		return reply{}, &callError{kind: KindBadRequest, msg: "the classification URL is not valid"}
	}
	req.Header.Set("Authorization", "Bearer "+string(b.key))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := b.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body) // the transport caps it
	if err != nil {
		return reply{}, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e struct {
			Error any `json:"error"`
		}
		text := string(raw)
		if json.Unmarshal(raw, &e) == nil && e.Error != nil {
			text = fmt.Sprint(e.Error)
		}
		return reply{}, statusError(resp.StatusCode, snippet([]byte(b.redact(text))), parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()))
	}
	scores, err := parseClassification(raw)
	if err != nil {
		return reply{}, &callError{kind: KindMalformed, msg: err.Error() + ": " + snippet([]byte(b.redact(string(raw))))}
	}
	return reply{scores: scores}, nil
}

// LabelScore is one class of a classification answer, as the Hugging Face
// inference API writes it.
type LabelScore struct {
	Label string  `json:"label"`
	Score float64 `json:"score"`
}

// parseClassification reads [[{"label","score"},...]] (one list per input)
// or the flat [{"label","score"},...] some deployments answer.
func parseClassification(raw []byte) ([]LabelScore, error) {
	var nested [][]LabelScore
	if err := json.Unmarshal(raw, &nested); err == nil && len(nested) > 0 && len(nested[0]) > 0 {
		return nested[0], nil
	}
	var flat []LabelScore
	if err := json.Unmarshal(raw, &flat); err == nil && len(flat) > 0 && flat[0].Label != "" {
		return flat, nil
	}
	return nil, errors.New("the classification answer is not a list of labels and scores")
}
