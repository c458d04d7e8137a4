package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed templates/*.html assets/*
var embedded embed.FS

// asset is one embedded file, served under a name that carries its content
// hash ("style.3f2a9c01.css") so that browsers may keep it for a year and
// a new hookd is never served an old copy.
type asset struct {
	name        string // hashed name
	contentType string
	body        []byte
	gzipped     []byte // nil when gzip does not pay
}

// assets are the stylesheet and the script, compressed once at start-up.
type assets struct {
	byName map[string]*asset // by hashed name
	css    string            // hashed name of assets/style.css
	js     string            // hashed name of assets/live.js
}

func loadAssets() (*assets, error) {
	a := &assets{byName: map[string]*asset{}}
	for _, f := range []struct {
		file, contentType string
		name              *string
	}{
		{"assets/style.css", "text/css; charset=utf-8", &a.css},
		{"assets/live.js", "text/javascript; charset=utf-8", &a.js},
	} {
		body, err := fs.ReadFile(embedded, f.file)
		if err != nil {
			return nil, fmt.Errorf("web: %w", err)
		}
		sum := sha256.Sum256(body)
		base := path.Base(f.file)
		ext := path.Ext(base)
		name := strings.TrimSuffix(base, ext) + "." + hex.EncodeToString(sum[:4]) + ext
		as := &asset{name: name, contentType: f.contentType, body: body}
		var zb bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&zb, gzip.BestCompression)
		_, _ = zw.Write(body)
		_ = zw.Close()
		if zb.Len() < len(body) {
			as.gzipped = zb.Bytes()
		}
		a.byName[name] = as
		*f.name = name
	}
	return a, nil
}

// Assets returns the handler of GET /assets/{file}: the stylesheet and the
// script, gzip-compressed when the client takes it, cached for a year
// (their names change with their content). The route must name its
// parameter "file".
func (s *Site) Assets() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := s.assets.byName[r.PathValue("file")]
		if a == nil {
			s.notFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Add("Vary", "Accept-Encoding")
		body := a.body
		if a.gzipped != nil && acceptsGzip(r) {
			h.Set("Content-Encoding", "gzip")
			body = a.gzipped
		}
		h.Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	})
}

// acceptsGzip reports whether the request's Accept-Encoding lists gzip
// without refusing it (q=0).
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			q := strings.ReplaceAll(params, " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}
