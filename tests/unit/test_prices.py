"""core.prices: the embedded snapshot, size ladders and JSON/CSV overrides."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from finops_app.core.prices import (
    DEFAULT_PRICES,
    INSTANCE_HOURLY,
    PriceTable,
    family_of,
    load_overrides,
    size_factor,
)
from finops_app.errors import ConfigError


@pytest.mark.parametrize(
    ("instance_type", "factor"),
    [
        ("t3.nano", 0.25),
        ("t3.micro", 0.5),
        ("t3.small", 1.0),
        ("t3.medium", 2.0),
        ("m5.large", 4.0),
        ("m5.xlarge", 8.0),
        ("m5.2xlarge", 16.0),
        ("c5.9xlarge", 72.0),
        ("m5", None),
        ("m5.metal", None),
        ("m5.0xlarge", None),
        ("", None),
    ],
)
def test_size_factor(instance_type: str, factor: float | None) -> None:
    assert size_factor(instance_type) == factor


@pytest.mark.parametrize(
    ("instance_type", "price"),
    [
        ("t3.micro", "0.0104"),
        ("t3.large", "0.0832"),
        ("m5.large", "0.096"),
        ("m5.4xlarge", "0.768"),
        ("m6i.xlarge", "0.192"),
        ("c5.large", "0.085"),
        ("c6i.2xlarge", "0.34"),
        ("r5.large", "0.126"),
        ("r6i.4xlarge", "1.008"),
    ],
)
def test_snapshot_prices(instance_type: str, price: str) -> None:
    assert DEFAULT_PRICES.hourly(instance_type) == Decimal(price)


def test_unknown_type_has_no_price_and_no_ladder() -> None:
    assert DEFAULT_PRICES.hourly("x9.huge") is None
    assert DEFAULT_PRICES.smaller("x9.huge") == []
    assert DEFAULT_PRICES.spot_hourly("x9.large") is None


def test_ladders() -> None:
    assert DEFAULT_PRICES.ladder("m5") == ["m5.large", "m5.xlarge", "m5.2xlarge", "m5.4xlarge"]
    assert DEFAULT_PRICES.smaller("m5.2xlarge") == ["m5.xlarge", "m5.large"]
    assert DEFAULT_PRICES.smaller("m5.large") == []
    assert DEFAULT_PRICES.smaller("t3.small") == ["t3.micro", "t3.nano"]


def test_spot_and_storage() -> None:
    assert DEFAULT_PRICES.spot_hourly("m5.large") == Decimal("0.096") * Decimal("0.4")
    assert DEFAULT_PRICES.storage_price("s3", "STANDARD") == Decimal("0.023")
    assert DEFAULT_PRICES.cheaper_storage("s3", "STANDARD") == ["STANDARD_IA", "GLACIER_IR"]
    assert DEFAULT_PRICES.cheaper_storage("s3", "GLACIER_IR") == []
    assert DEFAULT_PRICES.cheaper_storage("ebs", "gp3") == ["st1", "sc1"]
    assert DEFAULT_PRICES.cheaper_storage("ebs", "io2") == []


@given(st.sampled_from(sorted(INSTANCE_HOURLY)))
def test_every_smaller_size_is_smaller_and_cheaper(instance_type: str) -> None:
    price, factor = DEFAULT_PRICES.hourly(instance_type), size_factor(instance_type)
    assert price is not None and factor is not None
    previous = factor
    for smaller in DEFAULT_PRICES.smaller(instance_type):
        assert family_of(smaller) == family_of(instance_type)
        smaller_factor = size_factor(smaller)
        assert smaller_factor is not None and smaller_factor < previous
        assert (DEFAULT_PRICES.hourly(smaller) or price) < price
        previous = smaller_factor


def test_no_file_means_the_snapshot() -> None:
    assert load_overrides(None) is DEFAULT_PRICES
    assert load_overrides("") is DEFAULT_PRICES


def test_json_overrides_replace_and_extend(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        '{"instances": {"m5.large": 0.09, "m7i.large": "0.1008", "m7i.xlarge": 0.2016},'
        ' "spot_discount": {"m7i": "0.5"}, "storage": {"s3:DEEP_ARCHIVE": 0.00099}}'
    )
    table = load_overrides(path)
    assert table.hourly("m5.large") == Decimal("0.09")  # exact: JSON floats parse as Decimal
    assert table.hourly("m5.xlarge") == Decimal("0.192")  # untouched entries keep the snapshot
    assert table.smaller("m7i.xlarge") == ["m7i.large"]
    assert table.spot_hourly("m7i.large") == Decimal("0.0504")
    assert table.cheaper_storage("s3", "GLACIER_IR") == ["DEEP_ARCHIVE"]
    assert str(path) in table.source
    assert DEFAULT_PRICES.hourly("m5.large") == Decimal("0.096")  # the default is not mutated


def test_csv_overrides(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(
        "kind,name,price\ninstance,m7i.large,0.1008\nspot_discount,m7i,0.6\nstorage,ebs:gp2,0.10\n"
    )
    table = load_overrides(str(path))
    assert table.hourly("m7i.large") == Decimal("0.1008")
    assert table.spot_discount["m7i"] == Decimal("0.6")
    assert table.cheaper_storage("ebs", "gp2") == ["gp3", "st1", "sc1"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.json", "{not json", "not valid JSON"),
        ("p.json", '{"instance": {}}', "expected an object with keys"),
        ("p.json", '{"instances": []}', "must be an object"),
        ("p.json", '{"instances": {"m5.large": "-1"}}', "must be a finite amount"),
        ("p.json", '{"instances": {"m5.large": "abc"}}', "is not a number"),
        ("p.json", '{"instances": {"m5.large": true}}', "expected a number"),
        ("p.json", '{"instances": {"bigbox": "1"}}', "family.size"),
        ("p.json", '{"spot_discount": {"m5": "1"}}', "in [0, 1)"),
        ("p.json", '{"storage": {"STANDARD": "0.02"}}', "service:CLASS"),
        ("p.csv", "name,price\nm5.large,1\n", "header kind,name,price"),
        ("p.csv", "kind,name,price\nvm,m5.large,1\n", "line 2"),
    ],
)
def test_bad_files_are_config_errors(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match="price table") as info:
        load_overrides(path)
    assert message in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_overrides(tmp_path / "nope.json")


def test_table_is_immutable_and_serialisable() -> None:
    table = PriceTable()
    with pytest.raises(TypeError):
        table.instances["m5.large"] = Decimal(0)  # type: ignore[index]  # the point of the test
    json.dumps({k: str(v) for k, v in table.instances.items()})
