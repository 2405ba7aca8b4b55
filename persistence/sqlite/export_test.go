package sqlite

// BatchStats returns how many commits the writer made and how many writes
// they carried.
func BatchStats(s *Store) (batches, writes int64) {
	return s.w.batches.Load(), s.w.writes.Load()
}
