package providers

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Provider names, as workflows pin them and the dashboard lists them.
const (
	Gemini      = "gemini"
	Groq        = "groq"
	HuggingFace = "huggingface"
	GLM         = "glm"
	Kimi        = "kimi"
	Qwen        = "qwen"
)

// Task types an AI_PROCESSOR node may name.
const (
	TaskContentGeneration = "content_generation"
	TaskQuickDecision     = "quick_decision"
	TaskSentiment         = "sentiment_analysis"
	TaskMathReasoning     = "math_reasoning"
	TaskLongContext       = "long_context"
	TaskCodeGeneration    = "code_generation"
)

// Names lists every provider in the order the dashboard shows them.
var Names = []string{Gemini, Groq, HuggingFace, GLM, Kimi, Qwen}

// TaskTypes lists every task type in the order the dashboard shows them.
var TaskTypes = []string{TaskContentGeneration, TaskQuickDecision, TaskSentiment, TaskMathReasoning, TaskLongContext, TaskCodeGeneration}

// Default endpoints. Each speaks the OpenAI chat-completions API except
// DefaultHFInferenceURL, the Hugging Face inference API for classification.
const (
	DefaultGeminiBaseURL     = "https://generativelanguage.googleapis.com/v1beta/openai"
	DefaultGroqBaseURL       = "https://api.groq.com/openai/v1"
	DefaultOpenRouterBaseURL = "https://openrouter.ai/api/v1"
	DefaultHFChatBaseURL     = "https://router.huggingface.co/v1"
	DefaultHFInferenceURL    = "https://router.huggingface.co/hf-inference"
)

// Default models, as the contract names them. Hugging Face classifies
// sentiment with a three-way (negative, neutral, positive) model and chats
// through its router with a small instruct model.
const (
	DefaultGeminiModel  = "gemini-2.5-flash"
	DefaultGroqModel    = "llama-3.1-8b-instant"
	DefaultHFModel      = "cardiffnlp/twitter-roberta-base-sentiment-latest"
	DefaultHFChatModel  = "meta-llama/Llama-3.1-8B-Instruct"
	DefaultGLMModel     = "z-ai/glm-4.5-air"
	DefaultKimiModel    = "moonshotai/kimi-dev-72b"
	DefaultQwenModel    = "qwen/qwen-2.5-72b-instruct"
	defaultTestPrompt   = "Reply with the single word: pong"
	defaultTestSentence = "I love this product."
)

// Secret is a credential. It prints, logs and marshals as "[redacted]" so a
// config dumped for debugging never shows a key.
type Secret string

// String hides the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString hides the secret from %#v.
func (s Secret) GoString() string { return s.String() }

// MarshalText hides the secret from JSON and other encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Price is what a provider charges, in US dollars per million tokens.
type Price struct {
	InputPerMTok  float64
	OutputPerMTok float64
}

// Cost is the price of a call's tokens in US dollars.
func (p Price) Cost(promptTokens, completionTokens int) float64 {
	return (float64(promptTokens)*p.InputPerMTok + float64(completionTokens)*p.OutputPerMTok) / 1e6
}

// ProviderConfig is one provider's endpoint, credential, model, daily
// quota and prices.
type ProviderConfig struct {
	// APIKey authenticates calls; empty means the provider is not
	// configured and is never called.
	APIKey Secret
	// BaseURL is the OpenAI-compatible API root (for huggingface, the
	// inference API root, under which {BaseURL}/models/{Model} classifies).
	BaseURL string
	// Model is the model asked for; for huggingface, the classification model.
	Model string
	// ChatBaseURL and ChatModel are huggingface's chat endpoint and model,
	// used for every task but sentiment_analysis. Other providers ignore them.
	ChatBaseURL string
	ChatModel   string
	// DailyRequests and DailyTokens cap use per UTC day across every
	// process; zero means no cap.
	DailyRequests int64
	DailyTokens   int64
	// Price gives the estimated cost recorded per call and per user.
	Price Price
}

// Route is the provider tried first for a task type and the one tried when
// it fails. Backup may be empty.
type Route struct {
	Primary string
	Backup  string
}

// BreakerConfig tunes the per-provider circuit breaker.
type BreakerConfig struct {
	// Failures is how many consecutive failed calls in one process open the
	// circuit for every process. Default 5.
	Failures uint32
	// OpenFor is how long an open circuit refuses calls before one probe is
	// let through (half-open). Default 30 s.
	OpenFor time.Duration
	// StateCacheFor is how long a process trusts what it last read of the
	// shared state, so the check costs Redis one read a second, not one a
	// call. Default 1 s.
	StateCacheFor time.Duration
}

// Config is the router's configuration. The zero value of every field
// means its documented default; DefaultConfig spells them out.
type Config struct {
	// Providers by name; a name missing here is not configured.
	Providers map[string]ProviderConfig
	// Routes by task type.
	Routes map[string]Route
	// AttemptTimeout bounds one call to one provider. Default 60 s. The
	// caller's context bounds everything, retries and backup included.
	AttemptTimeout time.Duration
	// MaxAttempts is how many times one provider is tried within one
	// request before its backup is. Default 2.
	MaxAttempts int
	// RetryInitial and RetryMax shape the exponential backoff (with ±50 %
	// jitter) between attempts on one provider. Defaults 250 ms and 4 s.
	RetryInitial time.Duration
	RetryMax     time.Duration
	// MaxRetryAfter is the longest Retry-After worth waiting for; a provider
	// asking for longer is left for the backup. Default 10 s.
	MaxRetryAfter time.Duration
	// Breaker tunes the circuit breakers.
	Breaker BreakerConfig
	// CacheTTL is how long an answer is kept for nodes with cache: true.
	// Default 1 h.
	CacheTTL time.Duration
	// UsageRetention is how long per-user daily usage is kept. Default 90 days.
	UsageRetention time.Duration
	// LatencyWindow is how many recent calls per provider the p50 is taken
	// over. Default 100.
	LatencyWindow int
	// KeyPrefix starts every Redis key the router writes. Default "weft:".
	KeyPrefix string
	// MaxAnswerBytes caps a provider's answer: the text of a streamed
	// answer, and the body of every other response. A larger answer is
	// malformed, so the backup is asked; a stream that outgrows it after
	// its first tokens is interrupted. Default 1 MiB.
	MaxAnswerBytes int64

	// envErrs are the environment's values ConfigFromEnv could not read;
	// Validate reports them.
	envErrs []error
}

// DefaultRoutes is the contract's routing table.
func DefaultRoutes() map[string]Route {
	return map[string]Route{
		TaskContentGeneration: {Primary: Gemini, Backup: Qwen},
		TaskQuickDecision:     {Primary: Groq, Backup: Gemini},
		TaskSentiment:         {Primary: HuggingFace, Backup: Gemini},
		TaskMathReasoning:     {Primary: GLM, Backup: Qwen},
		TaskLongContext:       {Primary: Kimi, Backup: Gemini},
		TaskCodeGeneration:    {Primary: Qwen, Backup: Gemini},
	}
}

// DefaultProviders returns every provider with its default endpoint, model
// and list prices (approximate, at the time of writing: set your own), and
// no key.
func DefaultProviders() map[string]ProviderConfig {
	return map[string]ProviderConfig{
		Gemini: {BaseURL: DefaultGeminiBaseURL, Model: DefaultGeminiModel, Price: Price{0.30, 2.50}},
		Groq:   {BaseURL: DefaultGroqBaseURL, Model: DefaultGroqModel, Price: Price{0.05, 0.08}},
		HuggingFace: {BaseURL: DefaultHFInferenceURL, Model: DefaultHFModel,
			ChatBaseURL: DefaultHFChatBaseURL, ChatModel: DefaultHFChatModel},
		GLM:  {BaseURL: DefaultOpenRouterBaseURL, Model: DefaultGLMModel, Price: Price{0.20, 1.10}},
		Kimi: {BaseURL: DefaultOpenRouterBaseURL, Model: DefaultKimiModel, Price: Price{0.29, 1.15}},
		Qwen: {BaseURL: DefaultOpenRouterBaseURL, Model: DefaultQwenModel, Price: Price{0.12, 0.39}},
	}
}

// DefaultConfig is the configuration with every default filled in and no
// keys.
func DefaultConfig() Config {
	return Config{
		Providers:      DefaultProviders(),
		Routes:         DefaultRoutes(),
		AttemptTimeout: 60 * time.Second,
		MaxAttempts:    2,
		RetryInitial:   250 * time.Millisecond,
		RetryMax:       4 * time.Second,
		MaxRetryAfter:  10 * time.Second,
		Breaker:        BreakerConfig{Failures: 5, OpenFor: 30 * time.Second, StateCacheFor: time.Second},
		CacheTTL:       time.Hour,
		UsageRetention: 90 * 24 * time.Hour,
		LatencyWindow:  100,
		KeyPrefix:      "weft:",
		MaxAnswerBytes: 1 << 20,
	}
}

// envNames are each provider's key and base-URL variables, as the contract
// names them, and the model variable this package adds.
var envNames = map[string]struct{ key, baseURL, model string }{
	Gemini:      {"GEMINI_API_KEY", "WEFT_GEMINI_BASE_URL", "WEFT_GEMINI_MODEL"},
	Groq:        {"GROQ_API_KEY", "WEFT_GROQ_BASE_URL", "WEFT_GROQ_MODEL"},
	HuggingFace: {"HF_TOKEN", "WEFT_HUGGINGFACE_BASE_URL", "WEFT_HUGGINGFACE_MODEL"},
	GLM:         {"OPENROUTER_API_KEY", "WEFT_OPENROUTER_BASE_URL", "WEFT_GLM_MODEL"},
	Kimi:        {"OPENROUTER_API_KEY", "WEFT_OPENROUTER_BASE_URL", "WEFT_KIMI_MODEL"},
	Qwen:        {"OPENROUTER_API_KEY", "WEFT_OPENROUTER_BASE_URL", "WEFT_QWEN_MODEL"},
}

// ConfigFromEnv is DefaultConfig with keys, base URLs and models taken from
// the environment through lookup (cmd passes os.LookupEnv; this package
// reads no environment itself):
//
//	GEMINI_API_KEY, GROQ_API_KEY, HF_TOKEN, OPENROUTER_API_KEY (glm, kimi, qwen)
//	WEFT_GEMINI_BASE_URL, WEFT_GROQ_BASE_URL, WEFT_HUGGINGFACE_BASE_URL, WEFT_OPENROUTER_BASE_URL
//	WEFT_<PROVIDER>_MODEL (e.g. WEFT_GROQ_MODEL) to ask a local server for a model it has
//
// WEFT_HUGGINGFACE_BASE_URL=X classifies at X/models/{model} and chats at X/v1.
func ConfigFromEnv(lookup func(string) (string, bool)) Config {
	cfg := DefaultConfig()
	get := func(name string) string {
		v, _ := lookup(name)
		return strings.TrimSpace(v)
	}
	for name, env := range envNames {
		p := cfg.Providers[name]
		p.APIKey = Secret(get(env.key))
		if u := get(env.baseURL); u != "" {
			p.BaseURL = strings.TrimRight(u, "/")
			if name == HuggingFace {
				p.ChatBaseURL = p.BaseURL + "/v1"
			}
		}
		if m := get(env.model); m != "" {
			p.Model = m
		}
		prefix := "WEFT_" + strings.ToUpper(name) + "_"
		for _, lim := range []struct {
			env string
			to  *int64
		}{{prefix + "DAILY_REQUESTS", &p.DailyRequests}, {prefix + "DAILY_TOKENS", &p.DailyTokens}} {
			if v := get(lim.env); v != "" {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < 0 {
					cfg.envErrs = append(cfg.envErrs, fmt.Errorf("%s: must be a whole number of at least 0, got %q", lim.env, v))
				}
				*lim.to = n
			}
		}
		if v := get(prefix + "PRICE"); v != "" {
			in, out, ok := strings.Cut(v, ",")
			pin, err1 := strconv.ParseFloat(strings.TrimSpace(in), 64)
			pout, err2 := strconv.ParseFloat(strings.TrimSpace(out), 64)
			if !ok || err1 != nil || err2 != nil {
				cfg.envErrs = append(cfg.envErrs, fmt.Errorf("%sPRICE: must be \"<input>,<output>\" in USD per million tokens, got %q", prefix, v))
			}
			p.Price = Price{InputPerMTok: pin, OutputPerMTok: pout}
		}
		cfg.Providers[name] = p
	}
	if v := get("WEFT_AI_ROUTES"); v != "" {
		cfg.envErrs = append(cfg.envErrs, parseRoutes(v, cfg.Routes)...)
	}
	return cfg
}

// parseRoutes reads WEFT_AI_ROUTES, "task=primary[:backup],..." (say
// "code_generation=qwen:groq,long_context=kimi"), over routes; the task
// types it does not name keep their routes.
func parseRoutes(v string, routes map[string]Route) []error {
	var errs []error
	for _, entry := range strings.Split(v, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		task, pair, ok := strings.Cut(entry, "=")
		task = strings.TrimSpace(task)
		if !ok || !slices.Contains(TaskTypes, task) {
			errs = append(errs, fmt.Errorf("WEFT_AI_ROUTES: %q is not <task type>=<primary>[:<backup>]; task types: %s", entry, strings.Join(TaskTypes, ", ")))
			continue
		}
		primary, backup, _ := strings.Cut(pair, ":")
		routes[task] = Route{Primary: strings.TrimSpace(primary), Backup: strings.TrimSpace(backup)}
	}
	return errs
}

// withDefaults fills every zero field with its default.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Providers == nil {
		c.Providers = map[string]ProviderConfig{}
	}
	if c.Routes == nil {
		c.Routes = d.Routes
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = d.AttemptTimeout
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.RetryInitial <= 0 {
		c.RetryInitial = d.RetryInitial
	}
	if c.RetryMax <= 0 {
		c.RetryMax = d.RetryMax
	}
	if c.MaxRetryAfter <= 0 {
		c.MaxRetryAfter = d.MaxRetryAfter
	}
	if c.Breaker.Failures == 0 {
		c.Breaker.Failures = d.Breaker.Failures
	}
	if c.Breaker.OpenFor <= 0 {
		c.Breaker.OpenFor = d.Breaker.OpenFor
	}
	if c.Breaker.StateCacheFor <= 0 {
		c.Breaker.StateCacheFor = d.Breaker.StateCacheFor
	}
	if c.CacheTTL <= 0 {
		c.CacheTTL = d.CacheTTL
	}
	if c.UsageRetention <= 0 {
		c.UsageRetention = d.UsageRetention
	}
	if c.LatencyWindow <= 0 {
		c.LatencyWindow = d.LatencyWindow
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = d.KeyPrefix
	}
	if c.MaxAnswerBytes <= 0 {
		c.MaxAnswerBytes = d.MaxAnswerBytes
	}
	return c
}

// Validate reports every problem with the configuration: unknown provider
// names, routes to unknown providers, bad base URLs, negative limits.
// Zero durations and counts are fine: they mean the defaults.
func (c Config) Validate() error {
	errs := slices.Clone(c.envErrs)
	for _, name := range sortedNames(c.Providers) {
		p := c.Providers[name]
		if !slices.Contains(Names, name) {
			errs = append(errs, fmt.Errorf("providers.%s: unknown provider; known: %s", name, strings.Join(Names, ", ")))
			continue
		}
		for field, u := range map[string]string{"baseURL": p.BaseURL, "chatBaseURL": p.ChatBaseURL} {
			if u == "" {
				if field == "baseURL" || name == HuggingFace {
					errs = append(errs, fmt.Errorf("providers.%s.%s: is required", name, field))
				}
				continue
			}
			if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				errs = append(errs, fmt.Errorf("providers.%s.%s: must be an absolute http or https URL", name, field))
			}
		}
		if p.Model == "" {
			errs = append(errs, fmt.Errorf("providers.%s.model: is required", name))
		}
		if name == HuggingFace && p.ChatModel == "" {
			errs = append(errs, fmt.Errorf("providers.%s.chatModel: is required", name))
		}
		if p.DailyRequests < 0 || p.DailyTokens < 0 {
			errs = append(errs, fmt.Errorf("providers.%s: daily limits must not be negative", name))
		}
		if p.Price.InputPerMTok < 0 || p.Price.OutputPerMTok < 0 {
			errs = append(errs, fmt.Errorf("providers.%s.price: must not be negative", name))
		}
	}
	for _, task := range sortedNames(c.Routes) {
		r := c.Routes[task]
		if r.Primary == "" {
			errs = append(errs, fmt.Errorf("routes.%s.primary: is required", task))
		}
		for field, name := range map[string]string{"primary": r.Primary, "backup": r.Backup} {
			if name != "" && !slices.Contains(Names, name) {
				errs = append(errs, fmt.Errorf("routes.%s.%s: unknown provider %q", task, field, name))
			}
		}
		if r.Primary != "" && r.Primary == r.Backup {
			errs = append(errs, fmt.Errorf("routes.%s: the backup must differ from the primary", task))
		}
	}
	if c.AttemptTimeout < 0 || c.RetryInitial < 0 || c.RetryMax < 0 || c.MaxRetryAfter < 0 || c.CacheTTL < 0 ||
		c.UsageRetention < 0 || c.Breaker.OpenFor < 0 || c.Breaker.StateCacheFor < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if c.MaxAttempts < 0 || c.LatencyWindow < 0 || c.MaxAnswerBytes < 0 {
		errs = append(errs, errors.New("maxAttempts, latencyWindow and maxAnswerBytes must not be negative"))
	}
	return errors.Join(errs...)
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
