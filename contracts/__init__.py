"""Versioned contract definitions: the single source of truth for every schema the product writes."""

from contracts.core import (
    ContractInfo,
    ContractModel,
    arrow_schema,
    json_schema,
    key_duplicates,
    markdown_doc,
    registered_contracts,
    schema_violations,
)

__all__ = [
    "ContractInfo",
    "ContractModel",
    "arrow_schema",
    "json_schema",
    "key_duplicates",
    "markdown_doc",
    "registered_contracts",
    "schema_violations",
]
