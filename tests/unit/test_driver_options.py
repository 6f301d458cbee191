"""Driver options are refused with their dotted key, like every other config mistake."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, parse_config
from agent.unit import build_sensors
from tests.fakes import FakeClock


@pytest.mark.parametrize(("extra", "key", "says"), [
    ('[cameras.chest]\noptions = { bogus = 1 }\n', "cameras.chest.options.bogus", "it takes: fps"),
    ('[gnss]\ndriver = "nope"\n', "gnss.driver", "known: gpsd, sim"),
    ('[thermal.options]\nrate_hz = -5\n', "thermal.options", "rate_hz"),
])
def test_a_bad_driver_or_option_names_its_dotted_key(extra: str, key: str, says: str) -> None:
    config = parse_config('[device]\nid = "u"\n' + extra)
    with pytest.raises(ConfigError) as info:
        build_sensors(config, FakeClock(), sim=False)
    assert info.value.key == key and str(info.value).startswith(f"{key}: ") and says in str(info.value)
