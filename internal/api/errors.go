package api

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/reply"
)

// Errors of the API itself. Their text, and the text of anything wrapping
// them, is written for the client and is shown to it.
var (
	errAPIDisabled     = errors.New("api disabled: no HOOKD_API_TOKEN configured")
	errUnauthorized    = errors.New("unauthorized")
	errTooManyFailures = errors.New("too many failed authentication attempts")
	errBadRequest      = errors.New("bad request")
	errTooLarge        = errors.New("request body too large")
	errNoTarget        = errors.New("no target follows the image")
	errWaitTimeout     = errors.New("timed out waiting for jobs")
	errShuttingDown    = errors.New("hookd is shutting down; unfinished jobs resume when it is back")
)

// errorStatus is the one table from errors to status codes. A public error
// is shown to the client as is; for the others the client gets the fixed
// message and the operator finds any detail in the log.
var errorStatus = []struct {
	err     error
	status  int
	public  bool
	message string
}{
	{errAPIDisabled, http.StatusNotFound, true, ""},
	{errUnauthorized, http.StatusUnauthorized, false, "unauthorized"},
	{errTooManyFailures, http.StatusTooManyRequests, false, "too many failed authentication attempts"},
	{errBadRequest, http.StatusBadRequest, true, ""},
	{errTooLarge, http.StatusRequestEntityTooLarge, false, "request body too large"},
	{errNoTarget, http.StatusNotFound, true, ""},
	{errWaitTimeout, http.StatusGatewayTimeout, true, ""},
	{errShuttingDown, http.StatusServiceUnavailable, true, ""},
	{deploy.ErrUnknownTarget, http.StatusNotFound, false, "unknown target"},
	{deploy.ErrJobNotFound, http.StatusNotFound, false, "job not found"},
	{deploy.ErrQueueFull, http.StatusServiceUnavailable, false, "deploy queue is full, try again later"},
}

// statusOf returns the status code and client message for err.
func statusOf(err error) (int, string, bool) {
	for _, e := range errorStatus {
		if errors.Is(err, e.err) {
			if e.public {
				return e.status, err.Error(), true
			}
			return e.status, e.message, true
		}
	}
	return http.StatusInternalServerError, "internal error", false
}

// writeError answers with err's status and message; body may carry the
// extra fields of ErrorResponse. Errors not in the table are logged here,
// once, and reach the client only as "internal error".
func writeError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error, body ErrorResponse) {
	status, msg, known := statusOf(err)
	if !known && logger != nil {
		logger.ErrorContext(r.Context(), "api request failed",
			"method", r.Method, "path", r.URL.Path, "err", err)
	}
	if body.Error == "" {
		body.Error = msg
	}
	reply.JSON(w, status, body)
}

// badRequestError is a 400 whose text tells the client what to fix.
type badRequestError string

func (e badRequestError) Error() string        { return string(e) }
func (e badRequestError) Is(target error) bool { return target == errBadRequest }

func badRequest(format string, args ...any) error {
	return badRequestError(fmt.Sprintf(format, args...))
}
