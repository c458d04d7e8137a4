package ghdeploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeGitHub is an httptest server that plays the part of GitHub's REST API
// hookd uses: create a deployment, create a deployment status. It records
// every request; answer, when set, may answer one instead of the default
// (201 with a new id).
type fakeGitHub struct {
	srv *httptest.Server

	mu     sync.Mutex
	reqs   []ghRequest
	answer func(n int, req ghRequest) (status int, header http.Header, body string, ok bool)
	lastID int64
}

// ghRequest is one request as GitHub saw it.
type ghRequest struct {
	Method, Path, Auth string
	Body               map[string]any
}

// String is the request in one line, for messages: the method, the path
// and the JSON body with sorted keys.
func (r ghRequest) String() string {
	b, _ := json.Marshal(r.Body)
	return r.Method + " " + r.Path + " " + string(b)
}

func newGitHub(t *testing.T) *fakeGitHub {
	t.Helper()
	g := &fakeGitHub{lastID: 100}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

// URL is the API base to configure, as for GitHub Enterprise Server.
func (g *fakeGitHub) URL() string { return g.srv.URL + "/api/v3/" }

func (g *fakeGitHub) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r := ghRequest{Method: req.Method, Path: strings.TrimPrefix(req.URL.Path, "/api/v3"), Auth: req.Header.Get("Authorization")}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &r.Body); err != nil {
			http.Error(w, `{"message":"Problems parsing JSON"}`, http.StatusBadRequest)
			return
		}
	}
	g.mu.Lock()
	g.reqs = append(g.reqs, r)
	n := len(g.reqs)
	answer := g.answer
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if answer != nil {
		if status, h, b, ok := answer(n, r); ok {
			for k, v := range h {
				w.Header()[k] = v
			}
			w.WriteHeader(status)
			io.WriteString(w, b)
			return
		}
	}
	if req.Method != http.MethodPost || !strings.HasPrefix(r.Path, "/repos/") {
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
		return
	}
	g.mu.Lock()
	g.lastID++
	id := g.lastID
	g.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	if strings.HasSuffix(r.Path, "/statuses") {
		fmt.Fprintf(w, `{"id":%d,"state":%q}`, id, r.Body["state"])
		return
	}
	fmt.Fprintf(w, `{"id":%d,"sha":%q,"ref":%q,"environment":%q}`, id, r.Body["ref"], r.Body["ref"], r.Body["environment"])
}

// requests returns what GitHub received so far.
func (g *fakeGitHub) requests() []ghRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]ghRequest(nil), g.reqs...)
}

func (g *fakeGitHub) setAnswer(f func(n int, req ghRequest) (int, http.Header, string, bool)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.answer = f
}

// transcript is the requests, one per line, for comparison and messages.
func transcript(reqs []ghRequest) string {
	var b bytes.Buffer
	for _, r := range reqs {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}
