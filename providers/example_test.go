package providers_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/weftdev/weft/providers"
)

// A router over two OpenAI-compatible servers: the primary for
// content_generation is down, so the backup answers.
func ExampleRouter() {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":{"message":"overloaded"}}`, http.StatusServiceUnavailable)
	}))
	defer down.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"1","object":"chat.completion","model":"qwen","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`)
	}))
	defer up.Close()

	// cmd builds this with providers.ConfigFromEnv(os.LookupEnv).
	cfg := providers.ConfigFromEnv(func(name string) (string, bool) {
		return map[string]string{
			"GEMINI_API_KEY":           "gemini-key",
			"OPENROUTER_API_KEY":       "openrouter-key",
			"WEFT_GEMINI_BASE_URL":     down.URL,
			"WEFT_OPENROUTER_BASE_URL": up.URL,
		}[name], true
	})
	cfg.RetryInitial = time.Millisecond
	router, err := providers.New(cfg, providers.Options{}) // Options.Redis shares state between processes
	if err != nil {
		panic(err)
	}
	defer router.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := router.Complete(ctx, providers.Request{TaskType: providers.TaskContentGeneration, Prompt: "Say hello"})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Text, res.Provider, res.Model, res.Fallback, res.Usage.TotalTokens)
	fmt.Println(res.Attempts[0].Provider, res.Attempts[0].Kind)
	// Output:
	// Hello! qwen qwen/qwen-2.5-72b-instruct true 7
	// gemini server_error
}
