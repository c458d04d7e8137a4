// Package store keeps hookd's durable state in one bbolt file: webhook
// delivery ids (a redelivery is answered, not redeployed), jobs (a queued job
// is a pending request that must survive a restart), the recreate journal,
// and the last digests the poller saw.
//
// The store never writes while hookd is idle: every write path that may have
// nothing to do checks in a read transaction first, because a bbolt commit
// always rewrites a meta page and syncs, even when nothing changed.
package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// schemaVersion is the layout this code reads and writes. Bump it, and add a
// migration in initSchema, when a bucket's encoding changes.
const schemaVersion = 1

// Buckets. Job keys are jobKey(created, id): time-sortable, so a cursor
// walks a bucket newest first from Last.
var (
	bucketMeta          = []byte("meta")           // "schema" → decimal version
	bucketJobs          = []byte("jobs")           // jobKey → JSON deploy.Job
	bucketJobIDs        = []byte("job_ids")        // id → created(8) | target
	bucketJobTargets    = []byte("job_targets")    // nested per target: jobKey → status
	bucketJobCounts     = []byte("job_counts")     // target → uint64, keys in its nested bucket
	bucketSteps         = []byte("steps")          // target → JSON deploy.Step
	bucketDeliveries    = []byte("deliveries")     // delivery id → recorded(8)
	bucketDeliveryTimes = []byte("delivery_times") // recorded(8) | delivery id → empty
	bucketDigests       = []byte("digests")        // "repo:tag" or target → digest

	allBuckets = [][]byte{
		bucketMeta, bucketJobs, bucketJobIDs, bucketJobTargets, bucketJobCounts,
		bucketSteps, bucketDeliveries, bucketDeliveryTimes, bucketDigests,
	}
	keySchema = []byte("schema")
)

// Options tune Open. Zero values select the defaults.
type Options struct {
	// Timeout is how long Open waits for the file lock another process holds
	// (default 1s).
	Timeout time.Duration
	// DeliveryTTL is how long a webhook delivery id is remembered (default 7 days).
	DeliveryTTL time.Duration
	// JobsPerTarget bounds the job history: older final jobs beyond the newest
	// JobsPerTarget of a target are pruned (default 1000).
	JobsPerTarget int
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
	// Logger receives the store's own warnings (a quarantined record);
	// default discarding.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.DeliveryTTL <= 0 {
		o.DeliveryTTL = 7 * 24 * time.Hour
	}
	if o.JobsPerTarget <= 0 {
		o.JobsPerTarget = 1000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Store is hookd's state file. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
	opts Options
	log  *slog.Logger

	// quarantined counts the records moved aside since Open (see
	// quarantine.go).
	quarantined atomic.Uint64
}

// Open opens the state file at path (STATE_DIR/hookd.db), creating its
// directory (0700) and the file (0600) when missing. It refuses, with an
// error naming the file and the fix, a file that is locked by another
// process, is not a valid hookd database, was written by a newer hookd, or
// cannot be read and written, or is empty (0 bytes: the file existed, so
// its content was lost); it never starts empty over an existing file.
func Open(path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w; create it, or make its parent writable, for uid %d", dir, err, os.Geteuid())
	}
	existing := false
	if fi, err := os.Stat(path); err == nil {
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("state file %s is not a regular file; move it aside to start with empty state", path)
		}
		if fi.Size() == 0 {
			return nil, emptyFileError(path)
		}
		existing = true
	}

	db, err := openBolt(path, opts.Timeout)
	if err != nil {
		return nil, openError(path, existing, err)
	}
	s := &Store{db: db, path: path, opts: opts, log: opts.Logger}
	if err := s.initSchema(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// emptyFileError refuses a 0-byte state file. bbolt would initialise it
// silently, and hookd would forget every queued job (answered 202) and
// every rolled-back digest without a word. A file that exists but is
// empty is what a file system leaves after a power cut or a full disk
// caught a write in flight, or what a first start leaves if it was killed
// before bbolt wrote its first pages.
func emptyFileError(path string) error {
	return fmt.Errorf("state file %s is empty (0 bytes): its content was lost (a power cut or a full disk during a write, "+
		"or a first start killed at once), and starting over it would silently forget queued jobs and rolled-back digests; "+
		"restore it from a backup, or move it aside to start with empty state", path)
}

// openBolt opens the file with bbolt, turning the panics bbolt raises on some
// corrupt files (a broken freelist page) into errors. The file handle is kept
// so that a panic does not leak the lock.
func openBolt(path string, timeout time.Duration) (db *bolt.DB, err error) {
	var f *os.File
	defer func() {
		if r := recover(); r != nil {
			if f != nil {
				_ = f.Close()
			}
			db, err = nil, fmt.Errorf("%w: %v", bolt.ErrInvalid, r)
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout: timeout,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			file, err := os.OpenFile(name, flag, perm)
			f = file
			return file, err
		},
	})
}

// openError says what is wrong with the state file and what to do about it.
func openError(path string, existing bool, err error) error {
	switch {
	case errors.Is(err, bolt.ErrTimeout):
		return fmt.Errorf("state file %s is locked by another process (is another hookd running?): %w", path, err)
	case errors.Is(err, fs.ErrPermission):
		// The path is in the message already; keep only "permission denied".
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		if existing {
			return fmt.Errorf("state file %s: %w; fix its ownership or mode so uid %d can read and write it", path, err, os.Geteuid())
		}
		return fmt.Errorf("create state file %s: %w; fix the ownership of %s so uid %d can write it", path, err, filepath.Dir(path), os.Geteuid())
	case errors.Is(err, syscall.EROFS), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EISDIR):
		return fmt.Errorf("open state file %s: %w", path, err)
	case existing:
		return fmt.Errorf("state file %s is not a valid hookd database: %w; move it aside to start with empty state", path, err)
	default:
		return fmt.Errorf("open state file %s: %w", path, err)
	}
}

// initSchema checks the file's schema and integrity and creates missing
// buckets. It writes only when something is missing (a new file).
func (s *Store) initSchema() (err error) {
	// bbolt panics on some damaged pages rather than returning an error.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("state file %s is not a valid hookd database: %w: %v; move it aside to start with empty state", s.path, bolt.ErrInvalid, r)
		}
	}()
	var missing bool
	err = s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			foreign := false
			_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				foreign = true
				return nil
			})
			if foreign {
				return fmt.Errorf("state file %s is not a hookd database (it holds other data); move it aside to start with empty state", s.path)
			}
			missing = true
			return nil
		}
		v, err := strconv.Atoi(string(meta.Get(keySchema)))
		if err != nil {
			return fmt.Errorf("state file %s is not a valid hookd database: bad schema version %q; move it aside to start with empty state", s.path, meta.Get(keySchema))
		}
		if v > schemaVersion {
			return fmt.Errorf("state file %s was written by a newer hookd (schema %d, this hookd reads up to %d); upgrade hookd, or move it aside to start with empty state", s.path, v, schemaVersion)
		}
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				missing = true
			}
		}
		return s.check(tx)
	})
	if err != nil || !missing {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(schemaVersion)))
	})
	if err != nil {
		return fmt.Errorf("initialise state file %s: %w", s.path, err)
	}
	return nil
}

// check walks every page once at start-up, so a file damaged past its meta
// pages stops hookd here instead of panicking in the middle of a deploy. The
// state is small (bounded history), so this costs milliseconds.
func (s *Store) check(tx *bolt.Tx) error {
	var errs []error
	for err := range tx.Check() {
		if len(errs) < 3 {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("state file %s is not a valid hookd database: %w; move it aside to start with empty state", s.path, errors.Join(errs...))
	}
	return nil
}

// Close closes the file; it waits for running transactions.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state file %s: %w", s.path, err)
	}
	return nil
}

// Path returns the state file's path, for logs.
func (s *Store) Path() string { return s.path }
