// handlers.go - Ollama's native /api routes, in the order Ollama's handlers
// (server/routes.go) decide: decode with gin's ShouldBindJSON (400 on a
// body that does not decode, "missing request body" on none), find the
// model (404 "model 'x' not found"), then the unload rule, then the load
// rule, then a generation that holds a slot for --gen-ms.
package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// bind decodes the body as Ollama does; false after answering 400.
func bind(c *gin.Context, req any) bool {
	err := c.ShouldBindJSON(req)
	if errors.Is(err, io.EOF) {
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "missing request body"})
		return false
	}
	if err != nil {
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": err.Error()})
		return false
	}
	return true
}

func notFound(c *gin.Context, model string) {
	c.JSON(http.StatusNotFound, gin.H{"error": fmt.Sprintf("model '%s' not found", model)})
}

// isUnload is Ollama's rule: keep_alive given and zero, nothing to run.
func isUnload(empty bool, ka *Duration) bool {
	return empty && ka != nil && ka.Duration == 0
}

// out writes a generation as NDJSON chunks, or as one JSON object when
// the client asked for stream:false (the chunks' text joined).
type out struct {
	c      *gin.Context
	stream bool
	text   strings.Builder
}

func newOut(c *gin.Context, stream bool) *out {
	if stream {
		c.Header("Content-Type", "application/x-ndjson")
		c.Status(http.StatusOK)
	}
	return &out{c: c, stream: stream}
}

func (o *out) chunk(v any, text string) {
	o.text.WriteString(text)
	if !o.stream {
		return
	}
	b, _ := jsonMarshal(v)
	o.c.Writer.Write(append(b, '\n'))
	o.c.Writer.Flush()
}

func (sv *server) metrics(prompt string) Metrics {
	d := time.Duration(sv.genMs) * time.Millisecond
	return Metrics{TotalDuration: d, LoadDuration: time.Millisecond,
		PromptEvalCount: len(strings.Fields(prompt)) + 1, PromptEvalDuration: time.Millisecond,
		EvalCount: sv.tokens, EvalDuration: d}
}

func (sv *server) generateHandler(c *gin.Context) {
	var req GenerateRequest
	if !bind(c, &req) {
		return
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > 20 {
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "top_logprobs must be between 0 and 20"})
		return
	}
	name, ok := sv.cat.find(req.Model)
	if !ok {
		notFound(c, req.Model)
		return
	}
	if isUnload(req.Prompt == "", req.KeepAlive) {
		sv.unload(name)
		c.JSON(http.StatusOK, GenerateResponse{Model: req.Model, CreatedAt: now(), Done: true,
			DoneReason: "unload"})
		return
	}
	if req.Raw && (req.Template != "" || req.System != "" || len(req.Context) > 0) {
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "raw mode does not support template, system, or context"})
		return
	}
	if req.Think != nil && req.Think.Value != false {
		c.JSON(http.StatusBadRequest, gin.H{"error": fmt.Sprintf("%q does not support thinking", req.Model)})
		return
	}
	if req.Prompt == "" {
		sv.load(name)
		c.JSON(http.StatusOK, GenerateResponse{Model: req.Model, CreatedAt: now(), Done: true,
			DoneReason: "load"})
		return
	}
	o := newOut(c, req.Stream == nil || *req.Stream)
	if !sv.run(c, name, func(tok string) {
		o.chunk(GenerateResponse{Model: req.Model, CreatedAt: now(), Response: tok}, tok)
	}) {
		return
	}
	final := GenerateResponse{Model: req.Model, CreatedAt: now(), Done: true, DoneReason: "stop",
		Metrics: sv.metrics(req.Prompt)}
	if o.stream {
		o.chunk(final, "")
		return
	}
	final.Response = o.text.String()
	c.JSON(http.StatusOK, final)
}

func (sv *server) chatHandler(c *gin.Context) {
	var req ChatRequest
	if !bind(c, &req) {
		return
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > 20 {
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "top_logprobs must be between 0 and 20"})
		return
	}
	if req.Model == "" {
		c.JSON(http.StatusBadRequest, gin.H{"error": "model is required"})
		return
	}
	name, ok := sv.cat.find(req.Model)
	if !ok {
		notFound(c, req.Model)
		return
	}
	assistant := Message{Role: "assistant"}
	if isUnload(len(req.Messages) == 0, req.KeepAlive) {
		sv.unload(name)
		c.JSON(http.StatusOK, ChatResponse{Model: req.Model, CreatedAt: now(), Message: assistant,
			Done: true, DoneReason: "unload"})
		return
	}
	if req.Think != nil && req.Think.Value != false {
		c.JSON(http.StatusBadRequest, gin.H{"error": fmt.Sprintf("%q does not support thinking", req.Model)})
		return
	}
	if len(req.Messages) == 0 {
		sv.load(name)
		c.JSON(http.StatusOK, ChatResponse{Model: req.Model, CreatedAt: now(), Message: assistant,
			Done: true, DoneReason: "load"})
		return
	}
	o := newOut(c, req.Stream == nil || *req.Stream)
	if !sv.run(c, name, func(tok string) {
		o.chunk(ChatResponse{Model: req.Model, CreatedAt: now(),
			Message: Message{Role: "assistant", Content: tok}}, tok)
	}) {
		return
	}
	final := ChatResponse{Model: req.Model, CreatedAt: now(), Message: assistant, Done: true,
		DoneReason: "stop", Metrics: sv.metrics(req.Messages[len(req.Messages)-1].Content)}
	if o.stream {
		o.chunk(final, "")
		return
	}
	final.Message.Content = o.text.String()
	c.JSON(http.StatusOK, final)
}

// embedInputs is EmbedHandler's reading of "input": a string (none if
// empty) or an array of strings; false after answering 400.
func embedInputs(c *gin.Context, input any) ([]string, bool) {
	var in []string
	switch i := input.(type) {
	case string:
		if i != "" {
			in = append(in, i)
		}
	case []any:
		for _, v := range i {
			s, ok := v.(string)
			if !ok {
				c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "invalid input type"})
				return nil, false
			}
			in = append(in, s)
		}
	default:
		if input != nil {
			c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "invalid input type"})
			return nil, false
		}
	}
	return in, true
}

func vectors(n int) [][]float32 {
	v := make([][]float32, n)
	for i := range v {
		v[i] = []float32{0.1, 0.2, 0.3, 0.4}
	}
	return v
}

func (sv *server) embedHandler(c *gin.Context) {
	var req EmbedRequest
	if !bind(c, &req) {
		return
	}
	in, ok := embedInputs(c, req.Input)
	if !ok {
		return
	}
	name, ok := sv.cat.find(req.Model)
	if !ok {
		notFound(c, req.Model)
		return
	}
	if len(in) == 0 {
		sv.load(name)
		c.JSON(http.StatusOK, gin.H{"model": req.Model, "embeddings": [][]float32{}})
		return
	}
	if !sv.embed(c, name) {
		return
	}
	c.JSON(http.StatusOK, gin.H{"model": req.Model, "embeddings": vectors(len(in)),
		"total_duration": sv.genMs * 1000000, "load_duration": 1000000,
		"prompt_eval_count": len(in)})
}

func (sv *server) embeddingsHandler(c *gin.Context) {
	var req EmbeddingRequest
	if !bind(c, &req) {
		return
	}
	if req.Model == "" {
		c.JSON(http.StatusBadRequest, gin.H{"error": "model is required"})
		return
	}
	name, ok := sv.cat.find(req.Model)
	if !ok {
		notFound(c, req.Model)
		return
	}
	if req.Prompt == "" {
		sv.load(name)
		c.JSON(http.StatusOK, gin.H{"embedding": []float64{}})
		return
	}
	if !sv.embed(c, name) {
		return
	}
	c.JSON(http.StatusOK, gin.H{"embedding": vectors(1)[0]})
}

func (sv *server) showHandler(c *gin.Context) {
	var req ShowRequest
	if !bind(c, &req) {
		return
	}
	if req.Model == "" {
		req.Model = req.Name
	}
	if req.Model == "" {
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "model is required"})
		return
	}
	name, ok := sv.cat.find(req.Model)
	if !ok {
		notFound(c, req.Model)
		return
	}
	c.JSON(http.StatusOK, gin.H{
		"modelfile":    "FROM " + name + "\n",
		"parameters":   "",
		"template":     "{{ .Prompt }}",
		"details":      details(),
		"model_info":   gin.H{"general.architecture": "llama", "llama.context_length": 8192},
		"capabilities": []string{"completion"},
		"modified_at":  sv.cat.since,
	})
}

func (sv *server) tagsHandler(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"models": sv.cat.list()})
}

func (sv *server) psHandler(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"models": sv.cat.loadedList()})
}

// Model management (admin routes). Plausible answers, with the catalog
// changed as Ollama's would be, so a fan-out through the proxy works; the
// point of these routes here is that stats count every arrival.

func progress(c *gin.Context, stream *bool, steps ...string) {
	if stream != nil && !*stream {
		c.JSON(http.StatusOK, ProgressResponse{Status: "success"})
		return
	}
	o := newOut(c, true)
	for _, s := range append(steps, "success") {
		o.chunk(ProgressResponse{Status: s}, "")
	}
}

func (sv *server) pullHandler(c *gin.Context) {
	var req PullRequest
	if !bind(c, &req) {
		return
	}
	model := req.Model
	if model == "" {
		model = req.Name
	}
	if model == "" {
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "invalid model name"})
		return
	}
	sv.cat.add(model)
	progress(c, req.Stream, "pulling manifest", "verifying sha256 digest", "writing manifest")
}

func (sv *server) pushHandler(c *gin.Context) {
	var req PushRequest
	if !bind(c, &req) {
		return
	}
	model := req.Model
	if model == "" {
		model = req.Name
	}
	if _, ok := sv.cat.find(model); !ok {
		notFound(c, model)
		return
	}
	progress(c, req.Stream, "retrieving manifest", "pushing manifest")
}

func (sv *server) createHandler(c *gin.Context) {
	var req CreateRequest
	if !bind(c, &req) {
		return
	}
	model := req.Model
	if model == "" {
		model = req.Name
	}
	if model == "" {
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "invalid model name"})
		return
	}
	sv.cat.add(model)
	progress(c, req.Stream, "using existing layer", "writing manifest")
}

func (sv *server) copyHandler(c *gin.Context) {
	var req CopyRequest
	if !bind(c, &req) {
		return
	}
	if req.Source == "" || req.Destination == "" {
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "source and destination are required"})
		return
	}
	if _, ok := sv.cat.find(req.Source); !ok {
		notFound(c, req.Source)
		return
	}
	sv.cat.add(req.Destination)
	c.Status(http.StatusOK)
}

func (sv *server) deleteHandler(c *gin.Context) {
	var req DeleteRequest
	if !bind(c, &req) {
		return
	}
	model := req.Model
	if model == "" {
		model = req.Name
	}
	if !sv.cat.remove(model) {
		notFound(c, model)
		return
	}
	c.Status(http.StatusOK)
}

func (sv *server) headBlobHandler(c *gin.Context) {
	if !sv.cat.hasBlob(c.Param("digest")) {
		c.AbortWithStatusJSON(http.StatusNotFound, gin.H{"error": fmt.Sprintf("blob %q not found", c.Param("digest"))})
		return
	}
	c.Status(http.StatusOK)
}

func (sv *server) createBlobHandler(c *gin.Context) {
	digest := c.Param("digest")
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": err.Error()})
		return
	}
	if fmt.Sprintf("sha256:%x", sha256.Sum256(body)) != digest {
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "digest mismatch"})
		return
	}
	sv.cat.addBlob(digest)
	c.Status(http.StatusCreated)
}
