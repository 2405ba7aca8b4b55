package providers

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"GEMINI_API_KEY":            "g-secret",
		"OPENROUTER_API_KEY":        "or-secret",
		"HF_TOKEN":                  "hf-secret",
		"WEFT_GROQ_BASE_URL":        "http://127.0.0.1:11434/v1/",
		"WEFT_GROQ_MODEL":           "llama3.2",
		"WEFT_HUGGINGFACE_BASE_URL": "http://localhost:8081",
	}
	cfg := ConfigFromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.NoError(t, cfg.Validate())
	require.Equal(t, Secret("g-secret"), cfg.Providers[Gemini].APIKey)
	require.Equal(t, DefaultGeminiBaseURL, cfg.Providers[Gemini].BaseURL)
	for _, n := range []string{GLM, Kimi, Qwen} {
		require.Equal(t, Secret("or-secret"), cfg.Providers[n].APIKey)
		require.Equal(t, DefaultOpenRouterBaseURL, cfg.Providers[n].BaseURL)
	}
	require.Empty(t, cfg.Providers[Groq].APIKey, "no key: not configured")
	require.Equal(t, "http://127.0.0.1:11434/v1", cfg.Providers[Groq].BaseURL)
	require.Equal(t, "llama3.2", cfg.Providers[Groq].Model)
	require.Equal(t, "http://localhost:8081", cfg.Providers[HuggingFace].BaseURL)
	require.Equal(t, "http://localhost:8081/v1", cfg.Providers[HuggingFace].ChatBaseURL)
	require.Equal(t, DefaultRoutes(), cfg.Routes)

	raw, err := json.Marshal(cfg)
	require.NoError(t, err)
	require.NotContains(t, string(raw), "secret")
	require.NotContains(t, fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), "secret")
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, DefaultConfig().Validate())
	require.NoError(t, Config{}.Validate(), "zero means defaults")

	bad := DefaultConfig()
	bad.Providers["openai"] = ProviderConfig{BaseURL: "https://x", Model: "m"}
	p := bad.Providers[Groq]
	p.BaseURL = "ftp://x"
	p.DailyRequests = -1
	bad.Providers[Groq] = p
	bad.Routes[TaskQuickDecision] = Route{Primary: Groq, Backup: Groq}
	bad.Routes["poetry"] = Route{Primary: "openai"}
	bad.AttemptTimeout = -time.Second
	err := bad.Validate()
	require.Error(t, err)
	for _, s := range []string{"providers.openai", "providers.groq.baseURL", "daily limits", "routes.quick_decision", "routes.poetry.primary", "durations"} {
		require.ErrorContains(t, err, s)
	}
	_, err = New(bad, Options{})
	require.Error(t, err)
}

func TestConfigFromEnvRoutesQuotasPrices(t *testing.T) {
	t.Parallel()
	lookup := func(env map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	}
	cfg := ConfigFromEnv(lookup(map[string]string{
		"WEFT_AI_ROUTES":            " code_generation = qwen:groq , long_context=kimi",
		"WEFT_GROQ_DAILY_REQUESTS":  "1000",
		"WEFT_GROQ_DAILY_TOKENS":    "500000",
		"WEFT_GEMINI_PRICE":         "0.1, 0.4",
		"WEFT_HUGGINGFACE_BASE_URL": "",
	}))
	require.NoError(t, cfg.Validate())
	require.Equal(t, Route{Primary: Qwen, Backup: Groq}, cfg.Routes[TaskCodeGeneration])
	require.Equal(t, Route{Primary: Kimi}, cfg.Routes[TaskLongContext], "no backup")
	require.Equal(t, DefaultRoutes()[TaskSentiment], cfg.Routes[TaskSentiment], "others keep theirs")
	require.EqualValues(t, 1000, cfg.Providers[Groq].DailyRequests)
	require.EqualValues(t, 500000, cfg.Providers[Groq].DailyTokens)
	require.Equal(t, Price{InputPerMTok: 0.1, OutputPerMTok: 0.4}, cfg.Providers[Gemini].Price)

	bad := ConfigFromEnv(lookup(map[string]string{
		"WEFT_AI_ROUTES":          "poetry=gemini,math_reasoning=openai,nonsense",
		"WEFT_KIMI_DAILY_TOKENS":  "lots",
		"WEFT_QWEN_PRICE":         "cheap",
		"WEFT_GLM_DAILY_REQUESTS": "-3",
	}))
	err := bad.Validate()
	for _, s := range []string{`"poetry=gemini"`, `"nonsense"`, `routes.math_reasoning.primary: unknown provider "openai"`,
		"WEFT_KIMI_DAILY_TOKENS", "WEFT_QWEN_PRICE", "WEFT_GLM_DAILY_REQUESTS"} {
		require.ErrorContains(t, err, s)
	}
}
