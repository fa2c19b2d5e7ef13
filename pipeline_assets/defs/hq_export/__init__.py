"""HQ export: the five dx_*_v1 datasets from the operational Postgres, micro-batched by UTC hour."""
