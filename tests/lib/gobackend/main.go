// gobackend - a test backend that reads requests exactly as Ollama's HTTP
// layer does, to check that ollama-proxy decides what Ollama will do.
//
// Ollama (server/routes.go, Serve and GenerateRoutes) serves a gin engine
// made by gin.Default() with HandleMethodNotAllowed = true, mounted on
// net/http's ServeMux at "/". So:
//   - routing is on the percent-DECODED path (URL.Path; gin's UseRawPath is
//     false): "/api/%70ull" and "/api%2Fpull" are POST /api/pull;
//   - ServeMux answers an unclean path ("/api//pull", "/api/./pull",
//     "/api/x/../pull") with a 301 to the clean one; gin answers "/api/pull/"
//     with a redirect to "/api/pull" (307 for POST), a wrong method with 405;
//   - bodies are decoded by gin's ShouldBindJSON (encoding/json) into
//     structs with Ollama's JSON tags (types.go): member names match without
//     regard to case and the last duplicate wins.
//
// This program does the same with the same libraries (net/http, gin) and
// the same routes, and counts what arrived where (stats.go).
//
// Usage: gobackend [--port N] [--models a,b] [--gen-ms MS] [--tokens N]
// Prints "listening on 127.0.0.1:PORT" once it accepts connections.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
)

func now() time.Time { return time.Now().UTC() }

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// catalog holds the models this backend has (what /api/tags lists), the
// loaded ones (/api/ps) and the blobs received. Names are canonical
// ("name:tag", ":latest" when no tag is given) and matched without regard
// to case, as Ollama's getExistingName does.
type catalog struct {
	mu     sync.Mutex
	names  []string
	loaded map[string]time.Time // name -> when it expires
	blobs  map[string]bool
	since  time.Time
}

func canonical(name string) string {
	name = strings.TrimPrefix(name, "registry.ollama.ai/library/")
	if i := strings.LastIndex(name, "/"); !strings.Contains(name[i+1:], ":") {
		name += ":latest"
	}
	return name
}

func newCatalog(models string) *catalog {
	c := &catalog{loaded: map[string]time.Time{}, blobs: map[string]bool{}, since: now()}
	for _, m := range strings.Split(models, ",") {
		if m = strings.TrimSpace(m); m != "" {
			c.add(m)
		}
	}
	return c
}

func (c *catalog) findLocked(name string) int {
	if name == "" {
		return -1
	}
	want := canonical(name)
	for i, n := range c.names {
		if strings.EqualFold(n, want) {
			return i
		}
	}
	return -1
}

// find returns the canonical name of model NAME, false if not here.
func (c *catalog) find(name string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := c.findLocked(name); i >= 0 {
		return c.names[i], true
	}
	return "", false
}

func (c *catalog) add(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.findLocked(name) < 0 {
		c.names = append(c.names, canonical(name))
	}
}

func (c *catalog) remove(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.findLocked(name)
	if i < 0 {
		return false
	}
	delete(c.loaded, c.names[i])
	c.names = append(c.names[:i], c.names[i+1:]...)
	return true
}

func details() ModelDetails {
	return ModelDetails{Format: "gguf", Family: "llama", Families: []string{"llama"},
		ParameterSize: "8.0B", QuantizationLevel: "Q4_0"}
}

func digest(name string) string {
	return fmt.Sprintf("%064x", []byte(name + strings.Repeat("-", 32))[:32])
}

func (c *catalog) list() []ListModelResponse {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []ListModelResponse{}
	for _, n := range c.names {
		out = append(out, ListModelResponse{Name: n, Model: n, ModifiedAt: c.since,
			Size: 4661224676, Digest: digest(n), Details: details()})
	}
	return out
}

func (c *catalog) setLoaded(name string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		c.loaded[name] = now().Add(5 * time.Minute)
	} else {
		delete(c.loaded, name)
	}
}

func (c *catalog) loadedList() []ProcessModelResponse {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []ProcessModelResponse{}
	for _, n := range c.names {
		if exp, ok := c.loaded[n]; ok {
			out = append(out, ProcessModelResponse{Name: n, Model: n, Size: 5137025024,
				Digest: digest(n), Details: details(), ExpiresAt: exp, SizeVRAM: 5137025024,
				ContextLength: 8192})
		}
	}
	return out
}

func (c *catalog) addBlob(d string) {
	c.mu.Lock()
	c.blobs[d] = true
	c.mu.Unlock()
}

func (c *catalog) hasBlob(d string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.blobs[d]
}

type server struct {
	st     *stats
	cat    *catalog
	genMs  int
	tokens int
}

var words = []string{"Hello", " from", " the", " Go", " backend", "."}

// run is a generation of model NAME: it holds a slot for --gen-ms, giving
// --tokens tokens to EMIT along the way. False if the client went away
// (what was sent stays sent).
func (sv *server) run(c *gin.Context, name string, emit func(tok string)) bool {
	sv.st.generated(name)
	sv.cat.setLoaded(name, true)
	sv.st.enter()
	defer sv.st.leave()
	step := time.Duration(sv.genMs) * time.Millisecond / time.Duration(sv.tokens)
	for i := 0; i < sv.tokens; i++ {
		select {
		case <-c.Request.Context().Done():
			return false
		case <-time.After(step):
		}
		emit(words[i%len(words)])
	}
	return true
}

// embed holds a slot as a generation does; counted as an embedding.
func (sv *server) embed(c *gin.Context, name string) bool {
	sv.st.count(&sv.st.embeds)
	sv.cat.setLoaded(name, true)
	sv.st.enter()
	defer sv.st.leave()
	select {
	case <-c.Request.Context().Done():
		return false
	case <-time.After(time.Duration(sv.genMs) * time.Millisecond):
		return true
	}
}

func (sv *server) load(name string) {
	sv.st.count(&sv.st.loads)
	sv.cat.setLoaded(name, true)
}

func (sv *server) unload(name string) {
	sv.st.count(&sv.st.unloads)
	sv.cat.setLoaded(name, false)
}

// routes are Ollama's (GenerateRoutes), less the cloud, account and
// experimental ones.
func (sv *server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.Default()
	r.HandleMethodNotAllowed = true
	r.Use(sv.st.markRouted)

	running := func(c *gin.Context) { c.String(http.StatusOK, "Ollama is running") }
	version := func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"version": "0.12.6"}) }
	r.HEAD("/", running)
	r.GET("/", running)
	r.HEAD("/api/version", version)
	r.GET("/api/version", version)

	r.POST("/api/pull", sv.pullHandler)
	r.POST("/api/push", sv.pushHandler)
	r.HEAD("/api/tags", sv.tagsHandler)
	r.GET("/api/tags", sv.tagsHandler)
	r.POST("/api/show", sv.showHandler)
	r.DELETE("/api/delete", sv.deleteHandler)
	r.POST("/api/create", sv.createHandler)
	r.POST("/api/blobs/:digest", sv.createBlobHandler)
	r.HEAD("/api/blobs/:digest", sv.headBlobHandler)
	r.POST("/api/copy", sv.copyHandler)

	r.GET("/api/ps", sv.psHandler)
	r.POST("/api/generate", sv.generateHandler)
	r.POST("/api/chat", sv.chatHandler)
	r.POST("/api/embed", sv.embedHandler)
	r.POST("/api/embeddings", sv.embeddingsHandler)

	r.POST("/v1/chat/completions", sv.v1ChatHandler)
	r.POST("/v1/completions", sv.v1CompletionsHandler)
	r.POST("/v1/embeddings", sv.v1EmbeddingsHandler)
	r.GET("/v1/models", sv.v1ModelsHandler)
	r.GET("/v1/models/:model", sv.v1ModelHandler)
	r.POST("/v1/responses", sv.responsesHandler)
	r.POST("/v1/messages", sv.messagesHandler)
	return r
}

func (sv *server) handler() http.Handler {
	mux := http.NewServeMux() // Ollama mounts its engine on http.DefaultServeMux
	mux.Handle("/", sv.routes())
	mux.HandleFunc("/_go/stats", func(w http.ResponseWriter, r *http.Request) {
		b, _ := json.Marshal(sv.st.snapshot())
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	mux.HandleFunc("/_go/reset", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		sv.st.reset()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
	})
	return sv.st.recorder(mux)
}

func main() {
	port := flag.Int("port", 0, "port on 127.0.0.1 (0: a free one)")
	models := flag.String("models", "llama3:latest", "models this backend has, comma-separated")
	genMs := flag.Int("gen-ms", 300, "how long a generation holds its slot, ms")
	tokens := flag.Int("tokens", 3, "tokens (chunks) a generation streams")
	flag.Parse()
	if *genMs < 0 || *tokens < 1 {
		fmt.Fprintln(os.Stderr, "gobackend: --gen-ms must be >= 0 and --tokens >= 1")
		os.Exit(2)
	}
	sv := &server{st: newStats(), cat: newCatalog(*models), genMs: *genMs, tokens: *tokens}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "gobackend:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: sv.handler()}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		srv.Close()
	}()
	fmt.Printf("listening on %s\n", ln.Addr())
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "gobackend:", err)
		os.Exit(1)
	}
}
