package sqlite

// BatchStats returns how many commits the writer made and how many writes
// they carried.
func BatchStats(s *Store) (batches, writes int64) {
	return s.w.batches.Load(), s.w.writes.Load()
}

// RetriedBatches returns how many batches were run again request by
// request after a failure.
func RetriedBatches(s *Store) int64 { return s.w.alone.Load() }
