"""The TOML configuration: defaults, the shipped file, strict checking and the environment override."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from livetrader.config import (
    DATA_DIR_ENV,
    Config,
    EngineConfig,
    RiskProfileConfig,
    load_config,
)
from livetrader.errors import ConfigError

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "livetrader.toml"


@pytest.fixture(autouse=True)
def no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own environment must not change what these tests see.
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "livetrader.toml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def without_path(config: Config) -> Config:
    return dataclasses.replace(config, path=None)


def test_builtin_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config/livetrader.toml here
    config = load_config(None)
    assert config.path is None
    assert config.data_dir == Path("./dump")
    assert config.strategies_dir == Path("./strategies")
    assert config.exchange == "sim"
    assert config.engine == EngineConfig(
        fee_percent=0.1,
        slippage_percent=0.1,
        cost=100.0,
        strategy_timeout_seconds=180,
        schedule_timeout_minutes=120,
        max_events=250,
    )
    assert config.exchanges["sim"]["seed"] == 42
    assert config.risk_profile("conservative") == RiskProfileConfig("conservative", 3, 1)


def test_shipped_config_loads_and_matches_the_builtin_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = load_config(SHIPPED)
    assert shipped.path == SHIPPED
    monkeypatch.chdir(tmp_path)
    # Leaving the file out must not change behaviour: the file documents the defaults.
    assert without_path(shipped) == without_path(load_config(None))


def test_default_path_is_read_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "livetrader.toml").write_text("[engine]\nmax_events = 7\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.engine.max_events == 7
    assert config.path == Path("config/livetrader.toml")


def test_values_from_the_file_override_defaults(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
        [livetrader]
        data_dir = "/var/lib/livetrader"
        exchange = "binance"

        [engine]
        fee_percent = 0          # an int where a float is expected is fine
        strategy_timeout_seconds = 2.5

        [exchanges.binance]
        ccxt_id = "binance"
        options = { defaultType = "spot" }

        [risk.tight]
        max_positions = 1
        """,
    )
    config = load_config(path)
    assert config.data_dir == Path("/var/lib/livetrader")
    assert config.exchange == "binance"
    assert config.engine.fee_percent == 0.0 and isinstance(config.engine.fee_percent, float)
    assert config.engine.strategy_timeout_seconds == 2.5
    assert config.engine.max_events == 250  # untouched keys keep their defaults
    assert config.exchange_options("binance") == {"ccxt_id": "binance", "options": {"defaultType": "spot"}}
    assert config.exchange_options("kraken") == {}
    assert config.exchanges["sim"]["seed"] == 42
    assert config.risk["tight"] == RiskProfileConfig("tight", max_positions=1, max_positions_per_symbol=None)
    assert "conservative" in config.risk
    assert config.risk_tables() == {
        "conservative": {"max_positions": 3, "max_positions_per_symbol": 1},
        "tight": {"max_positions": 1},
    }


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.exchange = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.engine.cost = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.risk["x"] = RiskProfileConfig("x")  # type: ignore[index]


def test_environment_overrides_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "state"))
    assert load_config(SHIPPED).data_dir == tmp_path / "state"
    monkeypatch.chdir(tmp_path)
    assert load_config(None).data_dir == tmp_path / "state"
    monkeypatch.setenv(DATA_DIR_ENV, "")  # set but empty: ignored
    assert load_config(None).data_dir == Path("./dump")


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml does not exist"):
        load_config(tmp_path / "nope.toml")


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[engine]\nfee_percent = 0.1\ncost = = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message and "line 3" in message


def test_unknown_risk_profile_suggests_close_ones() -> None:
    with pytest.raises(ConfigError, match="did you mean 'conservative'"):
        Config().risk_profile("conservativ")


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[engin]\ncost = 1\n", "[engin]", "did you mean [engine]"),
        ("[engine]\nfee_pct = 0.1\n", "engine.fee_pct", "did you mean engine.fee_percent"),
        ("[livetrader]\nexchanges = 'sim'\n", "livetrader.exchanges", "did you mean livetrader.exchange"),
        ("[engine]\nfee_percent = -0.1\n", "engine.fee_percent", "a number >= 0"),
        ("[engine]\nfee_percent = 'high'\n", "engine.fee_percent", "a number >= 0"),
        ("[engine]\nslippage_percent = nan\n", "engine.slippage_percent", "a number >= 0"),
        ("[engine]\ncost = 0\n", "engine.cost", "a number > 0"),
        ("[engine]\nstrategy_timeout_seconds = -5\n", "engine.strategy_timeout_seconds", "a number > 0"),
        ("[engine]\nmax_events = true\n", "engine.max_events", "an integer > 0"),
        ("[engine]\nmax_events = 2.5\n", "engine.max_events", "an integer > 0"),
        ("[engine]\nschedule_timeout_minutes = -1\n", "engine.schedule_timeout_minutes", "an integer > 0"),
        ("[livetrader]\ndata_dir = 5\n", "livetrader.data_dir", "a non-empty string"),
        ("[livetrader]\nexchange = ''\n", "livetrader.exchange", "a non-empty string"),
        ("engine = 3\n", "engine", "a table"),
        ("[exchanges.sim]\nseed = true\n", "exchanges.sim.seed", "an integer"),
        ("[exchanges]\nsim = 1\n", "exchanges.sim", "a table"),
        ("[risk.safe]\nmax_positions = 0\n", "risk.safe.max_positions", "an integer > 0"),
        ("[risk.safe]\nmax_positions_per_symbol = false\n", "risk.safe.max_positions_per_symbol", "an integer"),
        ("[risk.safe]\nmax_position = 2\n", "risk.safe.max_position", "did you mean risk.safe.max_positions"),
    ],
)
def test_each_error_names_file_and_key(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:"), message
    assert key in message and expected in message, message
