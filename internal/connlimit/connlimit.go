// Package connlimit caps the connections an HTTP server keeps open, so that
// a stranger who opens many cannot make hookd's memory grow with them.
//
// A plain cap (golang.org/x/net/netutil.LimitListener) makes a new
// connection wait until an old one closes, so a few hundred connections
// that send nothing would keep every real client out for as long as the
// server's timeouts allow. This Listener counts the same open connections
// but, when the cap is reached and a new one arrives, it first closes the
// open connection that has waited longest on its client: one that has not
// finished sending its request headers, sits idle between requests, or is
// sending a request body (requests whose body is read through
// TrackBodies). Those are the only states a client can hold a connection
// in; a connection whose request is being handled is left alone. So a
// newcomer waits only while every open connection is being answered, which
// is short for anyone without credentials.
//
// Wire a Listener into the server with its ConnState and ConnContext
// methods, and wrap the handler with TrackBodies.
package connlimit

import (
	"container/list"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Patience is how long a connection may wait on its client before it can be
// shed. Real clients send a request as soon as they connect, and a body
// right after its headers, so this is long for them; and it keeps a flood
// of new connections from shedding each other (and real requests with
// them) before any could be read.
const Patience = 500 * time.Millisecond

// Listener is a net.Listener that keeps at most max connections open,
// closing the one that has waited longest on its client to make room.
// It is safe for concurrent use.
type Listener struct {
	net.Listener
	max      int
	patience time.Duration
	shed     func()

	mu      sync.Mutex
	room    *sync.Cond // signalled when a connection closes or starts waiting
	open    int
	closing int       // half-closed connections that gave up their place (see CloseWrite)
	waiting list.List // of *conn, longest waiting first
	closed  bool
}

// New returns a Listener on inner that keeps at most limit (at least 1)
// connections open. shed, when not nil, is called for every connection
// closed to make room.
func New(inner net.Listener, limit int, shed func()) *Listener {
	l := &Listener{Listener: inner, max: max(1, limit), patience: Patience, shed: shed}
	l.room = sync.NewCond(&l.mu)
	return l
}

// Accept waits for a connection and returns it once there is room for it:
// at once if fewer than max are open, after closing the connection that
// has waited longest on its client otherwise, or, when every open
// connection is being answered, as soon as one closes or waits again.
func (l *Listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	for l.open >= l.max && !l.closed {
		e := l.waiting.Front()
		if e == nil {
			l.room.Wait()
			continue
		}
		victim := e.Value.(*conn)
		if wait := l.patience - time.Since(victim.since); wait > 0 {
			t := time.AfterFunc(wait, func() {
				l.mu.Lock()
				l.room.Broadcast()
				l.mu.Unlock()
			})
			l.room.Wait()
			t.Stop()
			continue
		}
		l.waiting.Remove(e)
		victim.elem = nil
		l.mu.Unlock()
		victim.Close() // frees its place; the server sees the error and lets go
		if l.shed != nil {
			l.shed()
		}
		l.mu.Lock()
	}
	if l.closed {
		l.mu.Unlock()
		nc.Close()
		return nil, net.ErrClosed
	}
	l.open++
	l.mu.Unlock()
	// It begins to wait on its client when the server first reads it: a
	// server too busy to read a new connection at once is not kept waiting
	// by the client.
	return &conn{Conn: nc, l: l}, nil
}

// Close closes the listener; an Accept waiting for room returns.
func (l *Listener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.room.Broadcast()
	l.mu.Unlock()
	return l.Listener.Close()
}

// Open returns the number of connections open now.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// ConnState is for http.Server.ConnState: it learns when a connection
// waits on its client (new, idle) and when it is being answered.
func (l *Listener) ConnState(nc net.Conn, state http.ConnState) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch state {
	case http.StateIdle:
		l.waitLocked(c)
	case http.StateActive, http.StateHijacked, http.StateClosed:
		l.answerLocked(c)
	}
}

type connKey struct{}

// ConnContext is for http.Server.ConnContext: it lets TrackBodies find a
// request's connection.
func (l *Listener) ConnContext(ctx context.Context, nc net.Conn) context.Context {
	if c, ok := nc.(*conn); ok {
		return context.WithValue(ctx, connKey{}, c)
	}
	return ctx
}

// TrackBodies counts a connection as waiting on its client from the first
// read of its request body until the body is read to its end (or the
// handler returns), so that a client that sends a body slowly can be shed
// like one that sends its headers slowly.
func TrackBodies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := r.Context().Value(connKey{}).(*conn)
		if !ok || r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		b := &body{ReadCloser: r.Body, c: c}
		r.Body = b
		defer b.done()
		next.ServeHTTP(w, r)
	})
}

// waitLocked puts c at the end of the waiting list.
func (l *Listener) waitLocked(c *conn) {
	if c.closed {
		return
	}
	if c.elem != nil {
		l.waiting.Remove(c.elem)
	}
	c.since = time.Now()
	c.elem = l.waiting.PushBack(c)
	l.room.Signal()
}

// answerLocked takes c off the waiting list.
func (l *Listener) answerLocked(c *conn) {
	if c.elem != nil {
		l.waiting.Remove(c.elem)
		c.elem = nil
	}
}

// conn is an accepted connection. Its fields other than Conn are guarded
// by l.mu.
type conn struct {
	net.Conn
	l       *Listener
	elem    *list.Element // on l.waiting while it waits on its client
	since   time.Time     // when it began to wait
	closed  bool
	closing bool // half-closed, counted in l.closing instead of l.open
	once    sync.Once
	read    atomic.Bool // the server has begun to read it
}

// Read reads from the connection; the server's first read marks the
// start of its wait for the first request.
func (c *conn) Read(p []byte) (int, error) {
	if !c.read.Load() {
		c.read.Store(true)
		c.l.mu.Lock()
		c.l.waitLocked(c)
		c.l.mu.Unlock()
	}
	return c.Conn.Read(p)
}

// Close closes the connection and frees its place.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// release frees the connection's place, once.
func (c *conn) release() {
	c.once.Do(func() {
		l := c.l
		l.mu.Lock()
		c.closed = true
		l.answerLocked(c)
		if c.closing {
			l.closing--
		} else {
			l.open--
		}
		l.room.Signal()
		l.mu.Unlock()
	})
}

// CloseWrite half-closes the connection, as the server does before it
// closes one whose client may still be sending (a body it refused unread).
// The server then waits half a second, holding nothing but its goroutine,
// so that the client can read the answer. Such a connection gives up its
// place for one of max/2 places kept for closing connections, while one is
// free; otherwise it keeps its place. So refused requests cannot keep new
// ones out for that half second, nor pile up without bound.
func (c *conn) CloseWrite() error {
	var err error
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		err = cw.CloseWrite()
	}
	l := c.l
	l.mu.Lock()
	if !c.closed && !c.closing && l.closing < l.max/2 {
		c.closing = true
		l.closing++
		l.open--
		l.answerLocked(c)
		l.room.Signal()
	}
	l.mu.Unlock()
	return err
}

// body marks its connection as waiting on the client while the handler
// reads it.
type body struct {
	io.ReadCloser
	c       *conn
	started bool
	ended   bool
}

func (b *body) Read(p []byte) (int, error) {
	if !b.started {
		b.started = true
		l := b.c.l
		l.mu.Lock()
		l.waitLocked(b.c)
		l.mu.Unlock()
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.done()
	}
	return n, err
}

// done takes the connection off the waiting list, once.
func (b *body) done() {
	if !b.started || b.ended {
		return
	}
	b.ended = true
	l := b.c.l
	l.mu.Lock()
	l.answerLocked(b.c)
	l.mu.Unlock()
}
