// compat.go - the /v1 routes: OpenAI chat, completions, embeddings and
// models, Anthropic messages, OpenAI responses. Each decodes its own request
// shape with gin's ShouldBindJSON (as Ollama's middlewares do) and then
// runs a generation like the native routes, answering in that API's shape:
// one JSON object, or server-sent events when "stream" is true.
package main

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// v1Error is openai.NewError's shape.
func v1Error(c *gin.Context, code int, msg string) {
	typ := "api_error"
	switch code {
	case http.StatusBadRequest:
		typ = "invalid_request_error"
	case http.StatusNotFound:
		typ = "not_found_error"
	}
	c.AbortWithStatusJSON(code, gin.H{"error": gin.H{"message": msg, "type": typ, "param": nil,
		"code": nil}})
}

func anthropicError(c *gin.Context, code int, msg string) {
	typ := "api_error"
	switch code {
	case http.StatusBadRequest:
		typ = "invalid_request_error"
	case http.StatusNotFound:
		typ = "not_found_error"
	}
	c.AbortWithStatusJSON(code, gin.H{"type": "error", "error": gin.H{"type": typ, "message": msg}})
}

// sse writes server-sent events; event "" writes a bare data line.
type sse struct{ c *gin.Context }

func newSSE(c *gin.Context) *sse {
	c.Header("Content-Type", "text/event-stream")
	c.Header("Cache-Control", "no-cache")
	c.Status(http.StatusOK)
	return &sse{c}
}

func (s *sse) send(event string, v any) {
	b, _ := jsonMarshal(v)
	if event != "" {
		fmt.Fprintf(s.c.Writer, "event: %s\n", event)
	}
	fmt.Fprintf(s.c.Writer, "data: %s\n\n", b)
	s.c.Writer.Flush()
}

func (s *sse) done() {
	fmt.Fprint(s.c.Writer, "data: [DONE]\n\n")
	s.c.Writer.Flush()
}

// v1Run runs a generation for a /v1 route: on a stream, each token goes to
// EACH; returns the whole text, false if the client went away.
func (sv *server) v1Run(c *gin.Context, name string, each func(tok string)) (string, bool) {
	var text strings.Builder
	ok := sv.run(c, name, func(tok string) {
		text.WriteString(tok)
		if each != nil {
			each(tok)
		}
	})
	return text.String(), ok
}

func (sv *server) v1Usage(prompt string) gin.H {
	m := sv.metrics(prompt)
	return gin.H{"prompt_tokens": m.PromptEvalCount, "completion_tokens": m.EvalCount,
		"total_tokens": m.PromptEvalCount + m.EvalCount}
}

func contentText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

func (sv *server) v1ChatHandler(c *gin.Context) {
	var req V1ChatRequest
	if err := c.ShouldBindJSON(&req); err != nil {
		v1Error(c, http.StatusBadRequest, err.Error())
		return
	}
	if len(req.Messages) == 0 {
		v1Error(c, http.StatusBadRequest, "[] is too short - 'messages'")
		return
	}
	name, ok := sv.cat.find(req.Model)
	if !ok {
		v1Error(c, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	prompt := contentText(req.Messages[len(req.Messages)-1].Content)
	base := gin.H{"id": "chatcmpl-1", "created": now().Unix(), "model": req.Model,
		"system_fingerprint": "fp_ollama"}
	with := func(extra gin.H) gin.H {
		m := gin.H{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	if req.Stream {
		s := newSSE(c)
		if _, ok := sv.v1Run(c, name, func(tok string) {
			s.send("", with(gin.H{"object": "chat.completion.chunk", "choices": []gin.H{{"index": 0,
				"delta": gin.H{"role": "assistant", "content": tok}, "finish_reason": nil}}}))
		}); !ok {
			return
		}
		s.send("", with(gin.H{"object": "chat.completion.chunk", "choices": []gin.H{{"index": 0,
			"delta": gin.H{"role": "assistant", "content": ""}, "finish_reason": "stop"}}}))
		s.done()
		return
	}
	text, ok := sv.v1Run(c, name, nil)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, with(gin.H{"object": "chat.completion", "choices": []gin.H{{"index": 0,
		"message": gin.H{"role": "assistant", "content": text}, "finish_reason": "stop"}},
		"usage": sv.v1Usage(prompt)}))
}

func (sv *server) v1CompletionsHandler(c *gin.Context) {
	var req V1CompletionRequest
	if err := c.ShouldBindJSON(&req); err != nil {
		v1Error(c, http.StatusBadRequest, err.Error())
		return
	}
	name, ok := sv.cat.find(req.Model)
	if !ok {
		v1Error(c, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	reply := func(text, finish string) gin.H {
		return gin.H{"id": "cmpl-1", "object": "text_completion", "created": now().Unix(),
			"model": req.Model, "system_fingerprint": "fp_ollama",
			"choices": []gin.H{{"index": 0, "text": text, "finish_reason": finish}}}
	}
	if req.Prompt == "" { // GenerateHandler's load rule, behind the middleware
		sv.load(name)
		c.JSON(http.StatusOK, reply("", "stop"))
		return
	}
	if req.Stream {
		s := newSSE(c)
		if _, ok := sv.v1Run(c, name, func(tok string) { s.send("", reply(tok, "")) }); !ok {
			return
		}
		s.send("", reply("", "stop"))
		s.done()
		return
	}
	text, ok := sv.v1Run(c, name, nil)
	if !ok {
		return
	}
	r := reply(text, "stop")
	r["usage"] = sv.v1Usage(req.Prompt)
	c.JSON(http.StatusOK, r)
}

func (sv *server) v1EmbeddingsHandler(c *gin.Context) {
	var req V1EmbedRequest
	if err := c.ShouldBindJSON(&req); err != nil {
		v1Error(c, http.StatusBadRequest, err.Error())
		return
	}
	if req.Input == nil {
		v1Error(c, http.StatusBadRequest, "invalid input")
		return
	}
	in, ok := embedInputs(c, req.Input)
	if !ok {
		return
	}
	name, ok := sv.cat.find(req.Model)
	if !ok {
		v1Error(c, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	if len(in) > 0 && !sv.embed(c, name) {
		return
	}
	data := []gin.H{}
	for i, v := range vectors(len(in)) {
		data = append(data, gin.H{"object": "embedding", "embedding": v, "index": i})
	}
	c.JSON(http.StatusOK, gin.H{"object": "list", "data": data, "model": req.Model,
		"usage": gin.H{"prompt_tokens": len(in), "total_tokens": len(in)}})
}

func v1Model(name string, created int64) gin.H {
	return gin.H{"id": name, "object": "model", "created": created, "owned_by": "library"}
}

func (sv *server) v1ModelsHandler(c *gin.Context) {
	data := []gin.H{}
	for _, m := range sv.cat.list() {
		data = append(data, v1Model(m.Name, m.ModifiedAt.Unix()))
	}
	c.JSON(http.StatusOK, gin.H{"object": "list", "data": data})
}

func (sv *server) v1ModelHandler(c *gin.Context) {
	name, ok := sv.cat.find(c.Param("model"))
	if !ok {
		v1Error(c, http.StatusNotFound, fmt.Sprintf("model '%s' not found", c.Param("model")))
		return
	}
	c.JSON(http.StatusOK, v1Model(name, sv.cat.since.Unix()))
}

func (sv *server) messagesHandler(c *gin.Context) {
	var req AnthropicRequest
	if err := c.ShouldBindJSON(&req); err != nil {
		anthropicError(c, http.StatusBadRequest, err.Error())
		return
	}
	switch {
	case req.Model == "":
		anthropicError(c, http.StatusBadRequest, "model is required")
		return
	case req.MaxTokens <= 0:
		anthropicError(c, http.StatusBadRequest, "max_tokens is required and must be positive")
		return
	case len(req.Messages) == 0:
		anthropicError(c, http.StatusBadRequest, "messages is required")
		return
	}
	name, ok := sv.cat.find(req.Model)
	if !ok {
		anthropicError(c, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	prompt := contentText(req.Messages[len(req.Messages)-1].Content)
	usage := func() gin.H {
		m := sv.metrics(prompt)
		return gin.H{"input_tokens": m.PromptEvalCount, "output_tokens": m.EvalCount}
	}
	msg := gin.H{"id": "msg_1", "type": "message", "role": "assistant", "model": req.Model,
		"content": []gin.H{}, "stop_reason": nil, "stop_sequence": nil,
		"usage": gin.H{"input_tokens": 0, "output_tokens": 0}}
	if req.Stream {
		s := newSSE(c)
		s.send("message_start", gin.H{"type": "message_start", "message": msg})
		s.send("content_block_start", gin.H{"type": "content_block_start", "index": 0,
			"content_block": gin.H{"type": "text", "text": ""}})
		if _, ok := sv.v1Run(c, name, func(tok string) {
			s.send("content_block_delta", gin.H{"type": "content_block_delta", "index": 0,
				"delta": gin.H{"type": "text_delta", "text": tok}})
		}); !ok {
			return
		}
		s.send("content_block_stop", gin.H{"type": "content_block_stop", "index": 0})
		s.send("message_delta", gin.H{"type": "message_delta",
			"delta": gin.H{"stop_reason": "end_turn", "stop_sequence": nil}, "usage": usage()})
		s.send("message_stop", gin.H{"type": "message_stop"})
		return
	}
	text, ok := sv.v1Run(c, name, nil)
	if !ok {
		return
	}
	msg["content"] = []gin.H{{"type": "text", "text": text}}
	msg["stop_reason"] = "end_turn"
	msg["usage"] = usage()
	c.JSON(http.StatusOK, msg)
}

func (sv *server) responsesHandler(c *gin.Context) {
	var req ResponsesRequest
	if err := c.ShouldBindJSON(&req); err != nil {
		v1Error(c, http.StatusBadRequest, err.Error())
		return
	}
	if req.Input == nil {
		v1Error(c, http.StatusBadRequest, "input is required")
		return
	}
	name, ok := sv.cat.find(req.Model)
	if !ok {
		v1Error(c, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	prompt := contentText(req.Input)
	resp := func(status, text string) gin.H {
		r := gin.H{"id": "resp_1", "object": "response", "created_at": now().Unix(),
			"status": status, "model": req.Model, "output": []gin.H{}}
		if status == "completed" {
			m := sv.metrics(prompt)
			r["output"] = []gin.H{{"type": "message", "id": "msg_1", "status": "completed",
				"role": "assistant", "content": []gin.H{{"type": "output_text", "text": text,
					"annotations": []any{}}}}}
			r["usage"] = gin.H{"input_tokens": m.PromptEvalCount, "output_tokens": m.EvalCount,
				"total_tokens": m.PromptEvalCount + m.EvalCount}
		}
		return r
	}
	if req.Stream != nil && *req.Stream {
		s := newSSE(c)
		s.send("response.created", gin.H{"type": "response.created", "response": resp("in_progress", "")})
		text, ok := sv.v1Run(c, name, func(tok string) {
			s.send("response.output_text.delta", gin.H{"type": "response.output_text.delta",
				"output_index": 0, "content_index": 0, "delta": tok})
		})
		if !ok {
			return
		}
		s.send("response.completed", gin.H{"type": "response.completed",
			"response": resp("completed", text)})
		return
	}
	text, ok := sv.v1Run(c, name, nil)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, resp("completed", text))
}
