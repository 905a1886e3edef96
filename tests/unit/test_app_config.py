"""The Faust settings that exactly-once counting and failover depend on (finops_app/app.py).

Each was found necessary by a failing integration test; changing one needs that test's evidence.
"""

from __future__ import annotations

from finops_app import faust_seek
from finops_app.app import create_app
from finops_app.config import Settings


def test_settings_correctness_depends_on() -> None:
    conf = create_app(Settings()).conf
    # faust_seek moves never-committed partitions to the log start only under "earliest"
    assert conf.consumer_auto_offset_reset == "earliest"
    assert faust_seek.installed()
    # a changelog or window record acknowledged by one broker only could be lost with it
    assert conf.producer_acks == -1
    # topics created just before a fresh group joined were left unassigned for aiokafka's default
    # 5 minutes (test_scaling's start: "not spread over the workers: [set(), set(), set()]")
    assert conf.consumer_metadata_max_age_ms == 10_000


def test_every_aiokafka_client_refreshes_its_metadata_every_10_s() -> None:
    """The intake group (and the sink's) sat without partitions on a broker started a moment
    before, with aiokafka's default 5 minutes (tests/integration/test_agent_failures.py)."""
    from finops_app.kafka import client_kwargs

    assert client_kwargs(Settings())["metadata_max_age_ms"] == 10_000
