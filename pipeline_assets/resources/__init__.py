"""Resources bound once in `definitions.py`: the lake IO manager and the source Postgres."""
