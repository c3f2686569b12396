// types.go - request and response bodies with the JSON names, tags and Go
// types of Ollama's api package (api/types.go) and of its OpenAI and
// Anthropic middlewares, so that encoding/json decodes a body exactly as
// Ollama does: member names matched without regard to case (bytes.EqualFold:
// "Prompt", "PROMPT", "\u0050rompt"; U+017F folds to s and U+212A to k), the
// last of duplicate members wins, unknown members are ignored, and only the
// first JSON value of the body is read. Written for this test backend; the
// field set is what a request can carry, the behaviour is Go's.
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"
)

// ImageData is raw image bytes, base64 in JSON (as api.ImageData).
type ImageData []byte

// Duration is api.Duration: keep_alive as seconds (a number, negative means
// for ever) or a Go duration string ("5m", "0", "-1s"); any other JSON type
// is an error. A JSON null leaves the pointer holding it nil (encoding/json
// does that before any UnmarshalJSON), so "keep_alive": null is "not set".
type Duration struct {
	time.Duration
}

func (d Duration) MarshalJSON() ([]byte, error) {
	if d.Duration < 0 {
		return []byte("-1"), nil
	}
	return []byte("\"" + d.Duration.String() + "\""), nil
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	d.Duration = 5 * time.Minute
	switch t := v.(type) {
	case float64:
		if t < 0 {
			d.Duration = time.Duration(math.MaxInt64)
		} else {
			d.Duration = time.Duration(t * float64(time.Second))
		}
	case string:
		var err error
		if d.Duration, err = time.ParseDuration(t); err != nil {
			return err
		}
		if d.Duration < 0 {
			d.Duration = time.Duration(math.MaxInt64)
		}
	default:
		return fmt.Errorf("Unsupported type: '%s'", reflect.TypeOf(v))
	}
	return nil
}

// ThinkValue is api.ThinkValue: a bool, or one of "high", "medium", "low",
// "max"; anything else fails the decode (a 400 in Ollama).
type ThinkValue struct {
	Value any
}

func (t *ThinkValue) UnmarshalJSON(b []byte) error {
	var flag bool
	if err := json.Unmarshal(b, &flag); err == nil {
		t.Value = flag
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s != "high" && s != "medium" && s != "low" && s != "max" {
			return fmt.Errorf("invalid think value: %q (must be \"high\", \"medium\", \"low\", \"max\", true, or false)", s)
		}
		t.Value = s
		return nil
	}
	return fmt.Errorf("think must be a boolean or string (\"high\", \"medium\", \"low\", \"max\", true, or false)")
}

type ToolCallFunction struct {
	Index     int            `json:"index"`
	Name      string         `json:"name"`
	Arguments map[string]any `json:"arguments"`
}

type ToolCall struct {
	ID       string           `json:"id,omitempty"`
	Function ToolCallFunction `json:"function"`
}

type ToolFunction struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters"`
}

type Tool struct {
	Type     string       `json:"type"`
	Items    any          `json:"items,omitempty"`
	Function ToolFunction `json:"function"`
}

type Tools []Tool

// Message is api.Message; its decoder lowercases the role, as Ollama's.
type Message struct {
	Role       string      `json:"role"`
	Content    string      `json:"content"`
	Thinking   string      `json:"thinking,omitempty"`
	Images     []ImageData `json:"images,omitempty"`
	ToolCalls  []ToolCall  `json:"tool_calls,omitempty"`
	ToolName   string      `json:"tool_name,omitempty"`
	ToolCallID string      `json:"tool_call_id,omitempty"`
}

func (m *Message) UnmarshalJSON(b []byte) error {
	type plain Message
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*m = Message(p)
	m.Role = strings.ToLower(m.Role)
	return nil
}

type GenerateRequest struct {
	Model           string          `json:"model"`
	Prompt          string          `json:"prompt"`
	Suffix          string          `json:"suffix"`
	System          string          `json:"system"`
	Template        string          `json:"template"`
	Context         []int           `json:"context,omitempty"`
	Stream          *bool           `json:"stream,omitempty"`
	Raw             bool            `json:"raw,omitempty"`
	Format          json.RawMessage `json:"format,omitempty"`
	KeepAlive       *Duration       `json:"keep_alive,omitempty"`
	Images          []ImageData     `json:"images,omitempty"`
	Options         map[string]any  `json:"options"`
	Think           *ThinkValue     `json:"think,omitempty"`
	Truncate        *bool           `json:"truncate,omitempty"`
	Shift           *bool           `json:"shift,omitempty"`
	DebugRenderOnly bool            `json:"_debug_render_only,omitempty"`
	Logprobs        bool            `json:"logprobs,omitempty"`
	TopLogprobs     int             `json:"top_logprobs,omitempty"`
}

type ChatRequest struct {
	Model           string          `json:"model"`
	Messages        []Message       `json:"messages"`
	Stream          *bool           `json:"stream,omitempty"`
	Format          json.RawMessage `json:"format,omitempty"`
	KeepAlive       *Duration       `json:"keep_alive,omitempty"`
	Tools           `json:"tools,omitempty"`
	Options         map[string]any `json:"options"`
	Think           *ThinkValue    `json:"think,omitempty"`
	Truncate        *bool          `json:"truncate,omitempty"`
	Shift           *bool          `json:"shift,omitempty"`
	DebugRenderOnly bool           `json:"_debug_render_only,omitempty"`
	Logprobs        bool           `json:"logprobs,omitempty"`
	TopLogprobs     int            `json:"top_logprobs,omitempty"`
}

type EmbedRequest struct {
	Model      string         `json:"model"`
	Input      any            `json:"input"`
	KeepAlive  *Duration      `json:"keep_alive,omitempty"`
	Truncate   *bool          `json:"truncate,omitempty"`
	Dimensions int            `json:"dimensions,omitempty"`
	Options    map[string]any `json:"options"`
}

type EmbeddingRequest struct {
	Model     string         `json:"model"`
	Prompt    string         `json:"prompt"`
	KeepAlive *Duration      `json:"keep_alive,omitempty"`
	Options   map[string]any `json:"options"`
}

type ShowRequest struct {
	Model    string         `json:"model"`
	System   string         `json:"system"`
	Template string         `json:"template"`
	Verbose  bool           `json:"verbose"`
	Options  map[string]any `json:"options"`
	Name     string         `json:"name"`
}

type PullRequest struct {
	Model    string `json:"model"`
	Insecure bool   `json:"insecure,omitempty"`
	Username string `json:"username"`
	Password string `json:"password"`
	Stream   *bool  `json:"stream,omitempty"`
	Name     string `json:"name"`
}

// PushRequest has the fields of PullRequest (api.PushRequest).
type PushRequest PullRequest

type CreateRequest struct {
	Model        string            `json:"model"`
	Stream       *bool             `json:"stream,omitempty"`
	Quantize     string            `json:"quantize,omitempty"`
	From         string            `json:"from,omitempty"`
	Files        map[string]string `json:"files,omitempty"`
	Adapters     map[string]string `json:"adapters,omitempty"`
	Template     string            `json:"template,omitempty"`
	License      any               `json:"license,omitempty"`
	System       string            `json:"system,omitempty"`
	Parameters   map[string]any    `json:"parameters,omitempty"`
	Messages     []Message         `json:"messages,omitempty"`
	Name         string            `json:"name"`
	Quantization string            `json:"quantization,omitempty"`
}

type CopyRequest struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
}

type DeleteRequest struct {
	Model string `json:"model"`
	Name  string `json:"name"`
}

// OpenAI (openai/openai.go): what /v1/chat/completions, /v1/completions
// and /v1/embeddings decode before Ollama's middleware rewrites them.
type V1Message struct {
	Role    string `json:"role"`
	Content any    `json:"content"`
	Name    string `json:"name,omitempty"`
}

type V1ChatRequest struct {
	Model       string      `json:"model"`
	Messages    []V1Message `json:"messages"`
	Stream      bool        `json:"stream"`
	MaxTokens   *int        `json:"max_tokens"`
	Seed        *int        `json:"seed"`
	Stop        any         `json:"stop"`
	Temperature *float64    `json:"temperature"`
	TopP        *float64    `json:"top_p"`
	Tools       []Tool      `json:"tools"`
}

type V1CompletionRequest struct {
	Model       string   `json:"model"`
	Prompt      string   `json:"prompt"`
	MaxTokens   *int     `json:"max_tokens"`
	Seed        *int     `json:"seed"`
	Stop        any      `json:"stop"`
	Stream      bool     `json:"stream"`
	Temperature *float32 `json:"temperature"`
	Suffix      string   `json:"suffix"`
}

type V1EmbedRequest struct {
	Input          any    `json:"input"`
	Model          string `json:"model"`
	Dimensions     int    `json:"dimensions,omitempty"`
	EncodingFormat string `json:"encoding_format,omitempty"`
}

// Anthropic (/v1/messages) and OpenAI Responses (/v1/responses): the
// members routing and generation depend on.
type AnthropicRequest struct {
	Model     string      `json:"model"`
	MaxTokens int         `json:"max_tokens"`
	Messages  []V1Message `json:"messages"`
	System    any         `json:"system,omitempty"`
	Stream    bool        `json:"stream,omitempty"`
}

type ResponsesRequest struct {
	Model        string `json:"model"`
	Input        any    `json:"input"`
	Instructions string `json:"instructions,omitempty"`
	Stream       *bool  `json:"stream,omitempty"`
}

// Metrics is api.Metrics, embedded in the final chunk of a generation.
type Metrics struct {
	TotalDuration      time.Duration `json:"total_duration,omitempty"`
	LoadDuration       time.Duration `json:"load_duration,omitempty"`
	PromptEvalCount    int           `json:"prompt_eval_count,omitempty"`
	PromptEvalDuration time.Duration `json:"prompt_eval_duration,omitempty"`
	EvalCount          int           `json:"eval_count,omitempty"`
	EvalDuration       time.Duration `json:"eval_duration,omitempty"`
}

type GenerateResponse struct {
	Model      string    `json:"model"`
	CreatedAt  time.Time `json:"created_at"`
	Response   string    `json:"response"`
	Done       bool      `json:"done"`
	DoneReason string    `json:"done_reason,omitempty"`
	Metrics
}

type ChatResponse struct {
	Model      string    `json:"model"`
	CreatedAt  time.Time `json:"created_at"`
	Message    Message   `json:"message"`
	Done       bool      `json:"done"`
	DoneReason string    `json:"done_reason,omitempty"`
	Metrics
}

type ModelDetails struct {
	ParentModel       string   `json:"parent_model"`
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

type ListModelResponse struct {
	Name       string       `json:"name"`
	Model      string       `json:"model"`
	ModifiedAt time.Time    `json:"modified_at"`
	Size       int64        `json:"size"`
	Digest     string       `json:"digest"`
	Details    ModelDetails `json:"details,omitempty"`
}

type ProcessModelResponse struct {
	Name          string       `json:"name"`
	Model         string       `json:"model"`
	Size          int64        `json:"size"`
	Digest        string       `json:"digest"`
	Details       ModelDetails `json:"details,omitempty"`
	ExpiresAt     time.Time    `json:"expires_at"`
	SizeVRAM      int64        `json:"size_vram"`
	ContextLength int          `json:"context_length"`
}

type ProgressResponse struct {
	Status string `json:"status"`
}
