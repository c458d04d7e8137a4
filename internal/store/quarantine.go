package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// A record that no longer decodes (bit rot: bbolt checksums no value, and
// an SD card flips bits) must not stop every deploy. Readers skip it, and
// it is moved, as it was, to the quarantine bucket (key "<bucket>/<key>"),
// where `bbolt get` finds it for a bug report; one error line per record
// says what was lost, and hookd_state_records_quarantined_total counts it.
// The rest of the state is used as before.

// bucketQuarantine is created when the first record is quarantined.
var bucketQuarantine = []byte("quarantine")

// badRecord is a stored value that did not decode.
type badRecord struct {
	bucket []byte // bucketJobs or bucketSteps
	key    []byte
	val    []byte
	err    error
}

func newBadRecord(bucket, key, val []byte, err error) badRecord {
	return badRecord{bucket: bucket, key: bytes.Clone(key), val: bytes.Clone(val), err: err}
}

// Quarantined returns how many damaged records were moved aside since Open.
func (s *Store) Quarantined() uint64 { return s.quarantined.Load() }

// decodeJob decodes a job stored under key and checks that it is one: a
// flipped bit in a field name still decodes, into a job without an id, a
// target or a status, which would confuse the queue more than a lost job.
func decodeJob(key, val []byte) (deploy.Job, error) {
	var j deploy.Job
	if err := json.Unmarshal(val, &j); err != nil {
		return j, err
	}
	switch {
	case len(key) < 8 || j.ID != string(key[8:]):
		return j, fmt.Errorf("record holds job %q, not the job of its key", j.ID)
	case j.Target == "":
		return j, errors.New("record has no target")
	case !knownStatus(j.Status):
		return j, fmt.Errorf("record has an unknown status %q", j.Status)
	}
	return j, nil
}

// decodeStep decodes the journal entry of target.
func decodeStep(target, val []byte) (deploy.Step, error) {
	var st deploy.Step
	if err := json.Unmarshal(val, &st); err != nil {
		return st, err
	}
	if st.Target != string(target) {
		return st, fmt.Errorf("record holds the step of %q, not of its key", st.Target)
	}
	return st, nil
}

func knownStatus(s deploy.Status) bool {
	switch s {
	case deploy.StatusQueued, deploy.StatusRunning, deploy.StatusSucceeded, deploy.StatusUpToDate,
		deploy.StatusRolledBack, deploy.StatusFailed, deploy.StatusRefused:
		return true
	}
	return false
}

// quarantine moves bad records to the quarantine bucket, unless they were
// rewritten meanwhile, and says so once per record. When the move itself
// fails (a full disk), the records stay where they are and are skipped
// again by the next reader.
func (s *Store) quarantine(bad []badRecord) {
	var moved []badRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		moved = moved[:0]
		q, err := tx.CreateBucketIfNotExists(bucketQuarantine)
		if err != nil {
			return err
		}
		for _, b := range bad {
			src := tx.Bucket(b.bucket)
			if cur := src.Get(b.key); cur == nil || !bytes.Equal(cur, b.val) {
				continue // moved by another reader, or rewritten
			}
			qkey := append(append(bytes.Clone(b.bucket), '/'), b.key...)
			if err := q.Put(qkey, b.val); err != nil {
				return err
			}
			if err := src.Delete(b.key); err != nil {
				return err
			}
			if bytes.Equal(b.bucket, bucketJobs) {
				if err := s.unindexJob(tx, b.key); err != nil {
					return err
				}
			}
			moved = append(moved, b)
		}
		return nil
	})
	if err != nil {
		s.log.Error("quarantine of undecodable state records failed; they are skipped until it succeeds",
			"path", s.path, "records", len(bad), "err", err)
		return
	}
	for _, b := range moved {
		s.quarantined.Add(1)
		attrs := []any{"path", s.path, "bucket", string(b.bucket), "err", b.err}
		switch {
		case bytes.Equal(b.bucket, bucketJobs) && len(b.key) > 8:
			attrs = append(attrs, "job_id", string(b.key[8:]), "created", bytesTime(b.key[:8]).UTC(),
				"lost", "this job's record; if it was queued, its request is lost: deploy again")
		case bytes.Equal(b.bucket, bucketSteps):
			attrs = append(attrs, "target", string(b.key),
				"lost", "the journal entry of a swap; reconcile falls back to the containers' names")
		}
		s.log.Error("undecodable state record quarantined", attrs...)
	}
}

// unindexJob removes the index entries of the job stored under key.
func (s *Store) unindexJob(tx *bolt.Tx, key []byte) error {
	ids := tx.Bucket(bucketJobIDs)
	id := key[8:]
	if idx := ids.Get(id); idx != nil && bytes.Equal(idx[:8], key[:8]) {
		target := string(idx[8:])
		if err := ids.Delete(id); err != nil {
			return err
		}
		return s.unindex(tx, target, key)
	}
	// The id index is damaged too: find the key in the target indexes.
	var targets []string
	err := tx.Bucket(bucketJobTargets).ForEachBucket(func(name []byte) error {
		if tx.Bucket(bucketJobTargets).Bucket(name).Get(key) != nil {
			targets = append(targets, string(name))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, t := range targets {
		if err := s.unindex(tx, t, key); err != nil {
			return err
		}
	}
	return nil
}
