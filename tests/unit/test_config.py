"""Settings: environment parsing, secrets never shown, and the README's table kept in step."""

from decimal import Decimal
from pathlib import Path

import pytest

from finops_app.config import Secret, Settings, settings_table
from finops_app.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_env_values_are_typed() -> None:
    s = Settings.from_env(
        {
            "FINOPS_WEB_PORT": "7000",
            "FINOPS_BUDGETS": "ecommerce=50000,analytics=1200.50",
            "FINOPS_CURRENCIES": "USD, EUR",
            "FINOPS_ACTIONS_ENABLED": "yes",
            "FINOPS_SNOWFLAKE_PASSWORD": "hunter2",
        }
    )
    assert s.web_port == 7000
    assert dict(s.budgets) == {"ecommerce": Decimal("50000"), "analytics": Decimal("1200.50")}
    assert s.currencies == ("USD", "EUR")
    assert s.actions_enabled is True
    assert s.snowflake_password.get() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)


def test_unknown_and_malformed_settings_say_what_to_do() -> None:
    with pytest.raises(ConfigError, match="FINOPS_WEB_PROT"):
        Settings.from_env({"FINOPS_WEB_PROT": "1"})
    with pytest.raises(ConfigError, match="FINOPS_WEB_PORT"):
        Settings.from_env({"FINOPS_WEB_PORT": "sixty"})
    with pytest.raises(ConfigError, match="FINOPS_BUDGETS: expected key=value"):
        Settings.from_env({"FINOPS_BUDGETS": "ecommerce"})
    with pytest.raises(ConfigError, match="must be a multiple"):
        Settings(window_seconds=300, roi_window_seconds=1000)


def test_broker_url_forms() -> None:
    assert Settings(broker_url="kafka://a:1;b:2").broker_hosts == "a:1,b:2"
    assert Settings(broker_url="a:1,b:2").faust_broker_url == "kafka://a:1;kafka://b:2"


def test_round_trip_through_environment() -> None:
    s = Settings(web_port=7001, snowflake_password=Secret("pw"), budgets={"x": Decimal("5")})
    assert Settings.from_env(s.as_environ()) == s


def test_readme_documents_every_setting() -> None:
    text = README.read_text()
    missing = [name for name, *_ in settings_table() if f"`{name}`" not in text]
    assert missing == []
