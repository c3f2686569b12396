// stats.go - what the backend saw, for tests to assert on: GET /_go/stats,
// POST /_go/reset (answered beside the Ollama routes, never counted).
//
// A request is counted once, where its fate is known:
//   - routed by gin: hits["METHOD /route"] when its handler starts (the route
//     as registered, e.g. "POST /api/blobs/:digest"), and for the admin
//     routes also admin_hits and admin_requests (the raw request line, to
//     show which spelling got through);
//   - not routed (gin's 404/405, gin's trailing-slash redirect, net/http
//     ServeMux's redirect of an unclean path): unrouted["METHOD PATH STATUS"]
//     with the decoded path, when its answer is done.
//
// in_flight counts requests holding a "slot" (a generation or an embedding
// being computed); max_in_flight is its high-water mark since the last reset.
package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"
)

// adminRoutes are Ollama's model-management routes: a non-admin key must
// never reach one of them.
var adminRoutes = map[string]bool{
	"POST /api/pull":          true,
	"POST /api/push":          true,
	"POST /api/create":        true,
	"POST /api/copy":          true,
	"DELETE /api/delete":      true,
	"POST /api/blobs/:digest": true,
	"HEAD /api/blobs/:digest": true,
}

type stats struct {
	mu            sync.Mutex
	requests      int
	inFlight      int
	maxInFlight   int
	generations   map[string]int // by model, the canonical name of the --models row
	embeds        int
	unloads       int
	loads         int
	hits          map[string]int
	adminHits     int
	adminRequests []string
	unrouted      map[string]int
}

func newStats() *stats {
	s := &stats{}
	s.reset()
	return s
}

func (s *stats) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests, s.embeds, s.unloads, s.loads, s.adminHits = 0, 0, 0, 0, 0
	s.maxInFlight = s.inFlight // what is running now still counts
	s.generations = map[string]int{}
	s.hits = map[string]int{}
	s.adminRequests = []string{}
	s.unrouted = map[string]int{}
}

// enter and leave bracket the time a request holds a slot.
func (s *stats) enter() {
	s.mu.Lock()
	s.inFlight++
	if s.inFlight > s.maxInFlight {
		s.maxInFlight = s.inFlight
	}
	s.mu.Unlock()
}

func (s *stats) leave() {
	s.mu.Lock()
	s.inFlight--
	s.mu.Unlock()
}

func (s *stats) count(field *int) {
	s.mu.Lock()
	*field++
	s.mu.Unlock()
}

func (s *stats) generated(model string) {
	s.mu.Lock()
	s.generations[model]++
	s.mu.Unlock()
}

func (s *stats) snapshot() gin.H {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0
	gens := map[string]int{}
	for k, v := range s.generations {
		gens[k] = v
		total += v
	}
	hits := map[string]int{}
	for k, v := range s.hits {
		hits[k] = v
	}
	unrouted := map[string]int{}
	for k, v := range s.unrouted {
		unrouted[k] = v
	}
	return gin.H{
		"requests":          s.requests,
		"in_flight":         s.inFlight,
		"max_in_flight":     s.maxInFlight,
		"generations":       gens,
		"generations_total": total,
		"embeds":            s.embeds,
		"unloads":           s.unloads,
		"loads":             s.loads,
		"hits":              hits,
		"admin_hits":        s.adminHits,
		"admin_requests":    append([]string{}, s.adminRequests...),
		"unrouted":          unrouted,
	}
}

// The per-request record: set by markRouted (inside gin), read by the
// recorder once the answer is done.
type recKey struct{}

type record struct {
	routed bool
	status int
}

// statusWriter notes the status; it forwards Flush, which gin's streaming
// needs of the writer it wraps.
type statusWriter struct {
	http.ResponseWriter
	rec *record
}

func (w *statusWriter) WriteHeader(code int) {
	if w.rec.status == 0 {
		w.rec.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.rec.status == 0 {
		w.rec.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// recorder wraps the whole server (ServeMux included) and counts each
// request that is not for /_go/.
func (s *stats) recorder(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/_go/") {
			next.ServeHTTP(w, r)
			return
		}
		rec := &record{}
		path := r.URL.Path // gin's trailing-slash redirect rewrites it
		s.count(&s.requests)
		next.ServeHTTP(&statusWriter{w, rec}, r.WithContext(context.WithValue(r.Context(), recKey{}, rec)))
		if !rec.routed {
			s.mu.Lock()
			s.unrouted[fmt.Sprintf("%s %s %d", r.Method, path, rec.status)]++
			s.mu.Unlock()
		}
	})
}

// markRouted is gin middleware: it runs for routed requests and for gin's
// 404/405 answers alike; only the former have a FullPath.
func (s *stats) markRouted(c *gin.Context) {
	route := c.FullPath()
	rec, _ := c.Request.Context().Value(recKey{}).(*record)
	if route == "" || rec == nil {
		c.Next()
		return
	}
	rec.routed = true
	key := c.Request.Method + " " + route
	s.mu.Lock()
	s.hits[key]++
	if adminRoutes[key] {
		s.adminHits++
		s.adminRequests = append(s.adminRequests, c.Request.Method+" "+c.Request.RequestURI)
	}
	s.mu.Unlock()
	c.Next()
}
