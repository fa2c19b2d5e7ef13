"""GEX imports: gexbot JSON by URL to a job store, staged files and canonical Parquet."""
