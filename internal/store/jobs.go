package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"time"

	bolt "go.etcd.io/bbolt"
)

// PutJob inserts or updates j, as PutJobs does.
func (s *Store) PutJob(ctx context.Context, j deploy.Job) error {
	return s.PutJobs(ctx, []deploy.Job{j})
}

// PutJobs inserts or updates the jobs, in order (a later version of a job
// wins), in one transaction and so with one sync of the disk. A new job may
// prune the oldest final jobs of its target beyond Options.JobsPerTarget;
// queued and running jobs are never pruned, they are pending requests.
//
// A job whose request is a webhook delivery records the delivery id with
// it (as Record does), so that a redelivery is known for a duplicate
// exactly when the job it queued is on disk.
func (s *Store) PutJobs(ctx context.Context, jobs []deploy.Job) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	vals := make([][]byte, len(jobs))
	for i, j := range jobs {
		if j.ID == "" || j.Target == "" {
			return fmt.Errorf("put job %q: id and target are required", j.ID)
		}
		val, err := json.Marshal(j)
		if err != nil {
			return fmt.Errorf("encode job %s: %w", j.ID, err)
		}
		vals[i] = val
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		recorded := false
		for i, j := range jobs {
			if err := s.putJob(tx, j, vals[i]); err != nil {
				return fmt.Errorf("put job %s: %w", j.ID, err)
			}
			if id := j.Request.ID; j.Request.Trigger == deploy.TriggerWebhook && id != "" {
				if err := s.recordDelivery(tx, []byte(id), timeBytes(j.Request.ReceivedAt)); err != nil {
					return fmt.Errorf("record delivery %s: %w", id, err)
				}
				recorded = true
			}
		}
		if recorded {
			_, err := s.pruneDeliveries(tx, recordPruneBatch)
			return err
		}
		return nil
	})
	if err != nil {
		if len(jobs) == 1 {
			return err
		}
		return fmt.Errorf("put %d jobs: %w", len(jobs), err)
	}
	return nil
}

func (s *Store) putJob(tx *bolt.Tx, j deploy.Job, val []byte) error {
	jobs := tx.Bucket(bucketJobs)
	ids := tx.Bucket(bucketJobIDs)
	id := []byte(j.ID)
	status := []byte(j.Status)

	// The key is fixed at the first put, so an update finds the job even if
	// the caller changed CreatedAt.
	var key []byte
	idx := ids.Get(id)
	if idx != nil {
		key = jobKey(idx[:8], id)
		if old := string(idx[8:]); old != j.Target {
			if err := s.unindex(tx, old, key); err != nil {
				return err
			}
			idx = nil
		}
	} else {
		created := j.CreatedAt
		if created.IsZero() {
			created = s.opts.Now()
		}
		key = jobKey(timeBytes(created), id)
	}
	if err := jobs.Put(key, val); err != nil {
		return err
	}
	tb, err := tx.Bucket(bucketJobTargets).CreateBucketIfNotExists([]byte(j.Target))
	if err != nil {
		return err
	}
	if idx != nil {
		// Known job: keep the status in the index current, for pruning.
		if !bytes.Equal(tb.Get(key), status) {
			return tb.Put(key, status)
		}
		return nil
	}
	if err := ids.Put(id, append(bytes.Clone(key[:8]), j.Target...)); err != nil {
		return err
	}
	if err := tb.Put(key, status); err != nil {
		return err
	}
	counts := tx.Bucket(bucketJobCounts)
	n := getUint(counts.Get([]byte(j.Target))) + 1
	n -= s.prune(tx, tb, n)
	return counts.Put([]byte(j.Target), putUint(n))
}

// prune deletes the final jobs among the n-JobsPerTarget oldest of a target
// and returns how many it deleted. Live jobs stay and keep being counted, so
// they are looked at again on the next put.
func (s *Store) prune(tx *bolt.Tx, tb *bolt.Bucket, n uint64) uint64 {
	limit := uint64(s.opts.JobsPerTarget)
	if n <= limit {
		return 0
	}
	excess := n - limit
	var del [][]byte
	c := tb.Cursor()
	for k, v := c.First(); k != nil && excess > 0; k, v = c.Next() {
		excess--
		if deploy.Status(v).Final() {
			// Cursor keys are only valid until the bucket changes.
			del = append(del, bytes.Clone(k))
		}
	}
	jobs, ids := tx.Bucket(bucketJobs), tx.Bucket(bucketJobIDs)
	for _, k := range del {
		// Deletes of keys just read in this transaction cannot fail.
		_ = tb.Delete(k)
		_ = jobs.Delete(k)
		_ = ids.Delete(k[8:])
	}
	return uint64(len(del))
}

// unindex removes key from target's index (a job moved to another target).
func (s *Store) unindex(tx *bolt.Tx, target string, key []byte) error {
	tb := tx.Bucket(bucketJobTargets).Bucket([]byte(target))
	if tb == nil || tb.Get(key) == nil {
		return nil
	}
	if err := tb.Delete(key); err != nil {
		return err
	}
	counts := tx.Bucket(bucketJobCounts)
	n := getUint(counts.Get([]byte(target)))
	if n > 0 {
		n--
	}
	return counts.Put([]byte(target), putUint(n))
}

// Jobs returns the jobs matching f, newest (by CreatedAt) first.
func (s *Store) Jobs(ctx context.Context, f deploy.JobFilter) ([]deploy.Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := []deploy.Job{}
	var bad []badRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		bad = bad[:0]
		jobs := tx.Bucket(bucketJobs)
		var c *bolt.Cursor
		if f.Target != "" {
			tb := tx.Bucket(bucketJobTargets).Bucket([]byte(f.Target))
			if tb == nil {
				return nil
			}
			c = tb.Cursor()
		} else {
			c = jobs.Cursor()
		}
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if f.Target != "" {
				v = jobs.Get(k)
				if v == nil {
					continue // an index entry whose job was quarantined
				}
			}
			j, err := decodeJob(k, v)
			if err != nil {
				bad = append(bad, newBadRecord(bucketJobs, k, v, err))
				continue
			}
			out = append(out, j)
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	if len(bad) > 0 {
		s.quarantine(bad)
	}
	return out, nil
}

// Job returns the job with id; the error wraps deploy.ErrJobNotFound when
// there is none.
func (s *Store) Job(ctx context.Context, id string) (deploy.Job, error) {
	if err := ctx.Err(); err != nil {
		return deploy.Job{}, err
	}
	var j deploy.Job
	var bad []badRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketJobIDs).Get([]byte(id))
		if idx == nil || len(idx) < 8 {
			return deploy.ErrJobNotFound
		}
		key := jobKey(idx[:8], []byte(id))
		v := tx.Bucket(bucketJobs).Get(key)
		if v == nil {
			return deploy.ErrJobNotFound
		}
		var err error
		if j, err = decodeJob(key, v); err != nil {
			bad = append(bad, newBadRecord(bucketJobs, key, v, err))
			return deploy.ErrJobNotFound
		}
		return nil
	})
	if len(bad) > 0 {
		s.quarantine(bad)
	}
	if err != nil {
		return deploy.Job{}, fmt.Errorf("job %q: %w", id, err)
	}
	return j, nil
}

// PutStep records s as its target's current journal entry, replacing the
// previous one.
func (s *Store) PutStep(ctx context.Context, st deploy.Step) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if st.Target == "" {
		return errors.New("put step: target is required")
	}
	val, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode step for %s: %w", st.Target, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSteps).Put([]byte(st.Target), val)
	})
	if err != nil {
		return fmt.Errorf("put step for %s: %w", st.Target, err)
	}
	return nil
}

// Steps returns every target's journal entry, ordered by target.
func (s *Store) Steps(ctx context.Context) ([]deploy.Step, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []deploy.Step
	var bad []badRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		out, bad = out[:0], bad[:0]
		return tx.Bucket(bucketSteps).ForEach(func(k, v []byte) error {
			st, err := decodeStep(k, v)
			if err != nil {
				bad = append(bad, newBadRecord(bucketSteps, k, v, err))
				return nil
			}
			out = append(out, st)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list steps: %w", err)
	}
	if len(bad) > 0 {
		s.quarantine(bad)
	}
	return out, nil
}

// DeleteStep removes target's journal entry; it is not an error if there is
// none (and then nothing is written).
func (s *Store) DeleteStep(ctx context.Context, target string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key := []byte(target)
	var present bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		present = tx.Bucket(bucketSteps).Get(key) != nil
		return nil
	})
	if !present {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSteps).Delete(key)
	})
	if err != nil {
		return fmt.Errorf("delete step for %s: %w", target, err)
	}
	return nil
}

// jobKey is created(8) | id.
func jobKey(created, id []byte) []byte {
	k := make([]byte, 0, 8+len(id))
	return append(append(k, created...), id...)
}

// timeBytes encodes t as 8 big-endian bytes that sort like the times
// (the sign bit is flipped so times before 1970 sort first too).
func timeBytes(t time.Time) []byte {
	return putUint(uint64(t.UnixNano()) ^ 1<<63)
}

func bytesTime(b []byte) time.Time {
	return time.Unix(0, int64(getUint(b)^1<<63))
}

func putUint(n uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), n)
}

func getUint(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
