package store

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// MinFreeBytes is the free space under which the state file counts as not
// writable. A deploy request costs a few pages (4 KiB each), and bbolt
// grows its file sparsely, so a write needs little; below 1 MiB the file
// system is full for every practical purpose and the next write may fail.
const MinFreeBytes = 1 << 20

// stReadOnly is ST_RDONLY of statfs(2)'s f_flags.
const stReadOnly = 0x1

// Writable returns nil when, as far as can be told without writing, the
// state file takes writes: its file system is mounted read-write (an SD
// card's ext4 remounts itself read-only after I/O errors) and has at least
// MinFreeBytes free for hookd's user. Otherwise the error says which and
// names the directory. It writes nothing, so /readyz may ask it as often
// as it likes without wearing an SD card.
func (s *Store) Writable() error {
	dir := filepath.Dir(s.path)
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	if uint64(st.Flags)&stReadOnly != 0 {
		return fmt.Errorf("state directory %s is on a read-only file system; remount it read-write (after an I/O error, check the disk first)", dir)
	}
	// Root may use the blocks the file system reserves; others may not.
	free := uint64(st.Bavail) * uint64(st.Bsize)
	if os.Geteuid() == 0 {
		free = uint64(st.Bfree) * uint64(st.Bsize)
	}
	if free < MinFreeBytes {
		return fmt.Errorf("state directory %s has %d bytes free, under %d: hookd cannot record new deploy requests; free some space", dir, free, MinFreeBytes)
	}
	return nil
}
