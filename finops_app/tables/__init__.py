"""Table declarations (RocksDB-backed state) and the helpers agents use to write them safely."""
