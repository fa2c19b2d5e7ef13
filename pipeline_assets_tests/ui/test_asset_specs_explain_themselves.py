"""What the UI shows of each definition, from the whole loaded `Definitions`: every asset has a
description, owners, kinds and a table schema whose columns are its contract's (names, types,
descriptions), and every asset check has a description."""

import dagster as dg
import pytest

from contracts.core import arrow_schema, registered_contracts
from pipeline_assets.definitions import defs

# The staging export's `contract` names its run-metadata document; the table it writes (and
# whose columns the UI shows) is the staging market tick.
TABLE_CONTRACT_OF = {"staging_export": "staging_market_tick"}


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PIPELINE_DATA_ROOT", str(tmp_path_factory.mktemp("data")))
        return defs().resolve_asset_graph()


def _asset_nodes(graph) -> list:
    return [graph.get(key) for key in sorted(graph.get_all_asset_keys(), key=str)]


def test_every_asset_has_a_description_owners_and_kinds(graph) -> None:
    nodes = _asset_nodes(graph)
    assert len(nodes) >= 14
    for node in nodes:
        name = node.key.to_user_string()
        assert node.description and len(node.description) > 40, f"{name}: no real description"
        assert node.owners, f"{name} has no owners"
        assert all(o.startswith("team:") or "@" in o for o in node.owners), node.owners
        assert node.kinds, f"{name} has no kinds"


def test_every_asset_shows_its_contract_columns(graph) -> None:
    contracts = {m.contract.name: m for m in registered_contracts()}
    for node in _asset_nodes(graph):
        name = node.key.to_user_string()
        schema = node.metadata.get("dagster/column_schema")
        if isinstance(schema, dg.TableSchemaMetadataValue):
            schema = schema.schema
        assert isinstance(schema, dg.TableSchema), f"{name} has no column schema"
        contract_name = TABLE_CONTRACT_OF.get(name) or str(node.metadata["contract"]).split()[0]
        model = contracts[contract_name]
        # Independently of the helper that built the schema: the model's own fields.
        expected = [
            (field, str(arrow_schema(model).field(field).type), info.description)
            for field, info in model.model_fields.items()
        ]
        shown = [(c.name, c.type, c.description) for c in schema.columns]
        assert shown == expected, name
        assert all(description for _, _, description in shown), f"{name}: a column is undescribed"


def test_every_check_has_a_description(graph) -> None:
    keys = sorted(graph.asset_check_keys, key=str)
    assert len(keys) >= 50
    for key in keys:
        description = graph.get(key).description
        assert description and len(description) > 20, f"{key.asset_key.to_user_string()}:{key.name}"
