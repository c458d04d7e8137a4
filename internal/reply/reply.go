// Package reply writes hookd's HTTP answers. Every answer hookd gives — a
// webhook delivery's, the API's, /healthz and /readyz, the router's 404 —
// is a small JSON object written by JSON, so that all of them carry the
// same headers. It imports nothing of hookd's: the webhook and api
// packages both use it and neither may import the other.
package reply

import (
	"encoding/json"
	"net/http"
)

// internalError is the answer when v cannot be encoded.
var internalError = []byte(`{"error":"internal error"}`)

// JSON answers status with v encoded as JSON and a newline. Answers report
// state that changes, so they are never cached, and are never sniffed as
// anything but JSON. v is encoded before anything is sent: a value that
// cannot be encoded is answered 500 {"error":"internal error"} rather than
// with half a body (hookd's answer types always encode).
func JSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, internalError
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	// The status is sent; a write error can only mean the client has gone.
	_, _ = w.Write(append(b, '\n'))
}
