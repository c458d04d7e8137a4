package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// maxAnswerBytes bounds what the client reads of an answer.
const maxAnswerBytes = 16 << 20

// Client calls a running hookd's API; the CLI verbs use it. Deadlines come
// from the caller's context. It is safe for concurrent use.
type Client struct {
	base  string // up to and including Prefix
	token string
	http  *http.Client
}

// NewClient returns a client of the hookd at baseURL (scheme and host, as
// "http://127.0.0.1:8080") that authenticates with token. It returns an
// error when baseURL is not an http:// or https:// URL.
func NewClient(baseURL, token string) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("hookd URL %q is not an http:// or https:// URL", baseURL)
	}
	return &Client{
		base:  strings.TrimRight(u.String(), "/") + Prefix,
		token: token,
		http:  &http.Client{},
	}, nil
}

// Error is an error answer of the API. Its text shows the status and the
// server's message, never the token.
type Error struct {
	Status   int
	Response ErrorResponse
}

func (e *Error) Error() string {
	msg := e.Response.Error
	if msg == "" {
		msg = strings.ToLower(http.StatusText(e.Status))
	}
	msg = fmt.Sprintf("hookd answered %d: %s", e.Status, msg)
	if e.Status == http.StatusUnauthorized {
		msg += " (check HOOKD_API_TOKEN)"
	}
	if len(e.Response.Targets) > 0 {
		msg += " (known targets: " + strings.Join(e.Response.Targets, ", ") + ")"
	}
	if len(e.Response.Images) > 0 {
		msg += " (followed images: " + strings.Join(e.Response.Images, ", ") + ")"
	}
	return msg
}

// Deploy asks for req and returns the jobs: queued ones (id, target and
// status only), or with req.Wait their final states. An error answer is an
// *Error; when a wait ended before the jobs did (504 on its timeout, 503
// when hookd began to shut down) its Response.Jobs holds their states.
func (c *Client) Deploy(ctx context.Context, req DeployRequest) ([]Job, error) {
	var resp DeployResponse
	if err := c.call(ctx, http.MethodPost, "/deploy", req, &resp); err != nil {
		return nil, err
	}
	return resp.Jobs, nil
}

// Targets returns the targets, by name. An error answer is an *Error.
func (c *Client) Targets(ctx context.Context) ([]Target, error) {
	var resp TargetsResponse
	if err := c.call(ctx, http.MethodGet, "/targets", nil, &resp); err != nil {
		return nil, err
	}
	return resp.Targets, nil
}

// Jobs returns the newest jobs, at most limit of them (the server's default
// when limit is 0). An error answer is an *Error.
func (c *Client) Jobs(ctx context.Context, limit int) ([]Job, error) {
	path := "/jobs"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	var resp JobsResponse
	if err := c.call(ctx, http.MethodGet, path, nil, &resp); err != nil {
		return nil, err
	}
	return resp.Jobs, nil
}

// call sends in (if not nil) as JSON and decodes a 2xx answer into out.
// Other answers become an *Error carrying the server's message.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach hookd: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{Status: resp.StatusCode}
		// A body that is not hookd's JSON (a proxy's error page) is not shown.
		_ = json.Unmarshal(data, &e.Response)
		return e
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}
