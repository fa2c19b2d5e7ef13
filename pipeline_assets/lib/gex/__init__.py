"""GEX imports: gexbot JSON by URL to staged files, a DuckDB job store and canonical Parquet (no Dagster)."""
