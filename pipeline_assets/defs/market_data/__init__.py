"""Market data: collector SQLite files to staging exports and a channel-separated Parquet lake."""
