// Package providers talks to the AI providers behind the AI_PROCESSOR node
// and decides which one answers.
//
//	Request{TaskType, Prompt, ...}
//	   │
//	   ├─ cache (per user, opt-in) ──────────────────────────────► Result{cached}
//	   │
//	   ├─ route: task type → primary → backup   (a pinned provider: alone)
//	   │     for each provider with a key:
//	   │       circuit closed? (shared through Redis)   no → skip
//	   │       quota left today? (INCR in Redis)         no → skip
//	   │       call (own timeout; SSE when streaming) ──► answer ──► Result
//	   │       429 / 5xx / timeout / network / garbage → backoff + jitter,
//	   │           honouring Retry-After, then the backup
//	   │       400-class → stop: the backup would refuse it too
//	   │
//	   └─ everything inside the caller's one deadline
//
// Gemini, Groq and the OpenRouter models (glm, kimi, qwen) are reached
// through their OpenAI-compatible chat-completions endpoints with
// github.com/sashabaranov/go-openai; Hugging Face classifies sentiment
// through its inference API and chats through its OpenAI-compatible
// router. A base URL may point any of them at a server speaking the same
// API, such as a local model server.
//
// Health is a circuit breaker per provider (github.com/sony/gobreaker/v2)
// whose open state is shared in Redis, so every worker skips a provider one
// of them found down, and a single probe (SET NX) closes it again for all.
// Quotas (requests and tokens per provider per UTC day), calls, failures,
// recent latencies, and per-user usage and estimated cost live in Redis
// too, exact across processes. Status and TestAll feed the dashboard.
//
// The package reads no environment: cmd calls ConfigFromEnv(os.LookupEnv).
package providers
