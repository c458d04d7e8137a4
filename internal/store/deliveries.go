package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// recordPruneBatch bounds the expired deliveries one Record deletes, so a
// Record after a long quiet spell stays cheap; the rest go on later calls.
const recordPruneBatch = 64

// Seen reports whether the delivery id was recorded less than
// Options.DeliveryTTL ago. Older entries count as unseen.
func (s *Store) Seen(ctx context.Context, id string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var seen bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDeliveries).Get([]byte(id))
		seen = v != nil && s.opts.Now().Sub(bytesTime(v)) < s.opts.DeliveryTTL
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("look up delivery %s: %w", id, err)
	}
	return seen, nil
}

// Record remembers the delivery id as seen at at. An id already recorded
// at at or later (PutJobs records the delivery ids of the jobs it writes)
// writes nothing.
// A write also deletes a few expired entries, so the table stays bounded
// without a background job.
func (s *Store) Record(ctx context.Context, id string, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if id == "" {
		return errors.New("record delivery: empty id")
	}
	key := []byte(id)
	var known bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDeliveries).Get(key)
		known = v != nil && !bytesTime(v).Before(at)
		return nil
	})
	if known {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := s.recordDelivery(tx, key, timeBytes(at)); err != nil {
			return err
		}
		_, err := s.pruneDeliveries(tx, recordPruneBatch)
		return err
	})
	if err != nil {
		return fmt.Errorf("record delivery %s: %w", id, err)
	}
	return nil
}

// recordDelivery stores the delivery id key as recorded at ts.
func (s *Store) recordDelivery(tx *bolt.Tx, key, ts []byte) error {
	d, times := tx.Bucket(bucketDeliveries), tx.Bucket(bucketDeliveryTimes)
	if old := d.Get(key); old != nil {
		if err := times.Delete(jobKey(old, key)); err != nil {
			return err
		}
	}
	if err := d.Put(key, ts); err != nil {
		return err
	}
	return times.Put(jobKey(ts, key), nil)
}

// Prune deletes delivery ids older than Options.DeliveryTTL and returns how
// many it deleted. When nothing has expired it writes nothing.
func (s *Store) Prune(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var expired bool
	cutoff := timeBytes(s.opts.Now().Add(-s.opts.DeliveryTTL))
	_ = s.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketDeliveryTimes).Cursor().First()
		expired = k != nil && bytes.Compare(k[:8], cutoff) < 0
		return nil
	})
	if !expired {
		return 0, nil
	}
	var n int
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		n, err = s.pruneDeliveries(tx, -1)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune deliveries: %w", err)
	}
	return n, nil
}

// pruneDeliveries deletes up to max (all when max < 0) expired deliveries,
// oldest first.
func (s *Store) pruneDeliveries(tx *bolt.Tx, max int) (int, error) {
	d, times := tx.Bucket(bucketDeliveries), tx.Bucket(bucketDeliveryTimes)
	cutoff := timeBytes(s.opts.Now().Add(-s.opts.DeliveryTTL))
	var del [][]byte
	c := times.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], cutoff) < 0 && (max < 0 || len(del) < max); k, _ = c.Next() {
		del = append(del, bytes.Clone(k))
	}
	for _, k := range del {
		if err := times.Delete(k); err != nil {
			return 0, err
		}
		if err := d.Delete(k[8:]); err != nil {
			return 0, err
		}
	}
	return len(del), nil
}

// PutDigest stores the last known digest for key ("repo:tag" or a target
// name). An unchanged digest writes nothing.
func (s *Store) PutDigest(ctx context.Context, key, digest string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if key == "" {
		return errors.New("put digest: empty key")
	}
	var same bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDigests).Get([]byte(key))
		same = v != nil && string(v) == digest
		return nil
	})
	if same {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDigests).Put([]byte(key), []byte(digest))
	})
	if err != nil {
		return fmt.Errorf("put digest for %s: %w", key, err)
	}
	return nil
}

// Digest returns the last known digest for key, or "" when none is stored.
func (s *Store) Digest(ctx context.Context, key string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var digest string
	err := s.db.View(func(tx *bolt.Tx) error {
		digest = string(tx.Bucket(bucketDigests).Get([]byte(key)))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("get digest for %s: %w", key, err)
	}
	return digest, nil
}
