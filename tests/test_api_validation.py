"""Bad arguments to the public API fail at the call with an error naming the argument,
the same in the compiled build as in pure Python (mypyc's own checks name nothing)."""

from __future__ import annotations

from typing import Any

import pytest

from ice_engine import Gatherer
from ice_engine.interfaces import IpHandling
from ice_engine.options import check_gatherer_options

FLAGS = ("link_local", "dual_stack_relays", "continual", "tcp_candidates", "mdns")


def check(**options: Any) -> IpHandling:
    defaults: dict[str, Any] = {
        "mids": ("0",),
        "components": 1,
        "ice_transport_policy": "all",
        "ip_handling": IpHandling.ALL,
        "pool_size": 0,
        "shared_port": None,
        "port_range": None,
    }
    return check_gatherer_options(**{**defaults, **options})


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_flags_must_be_bools(flag: str, value: object) -> None:
    with pytest.raises(TypeError, match=f"^{flag} must be a bool, not {type(value).__name__}$"):
        check(**{flag: value})
    check(**{flag: True})


@pytest.mark.xfail(strict=True, reason="until driver.py passes the flags to check_gatherer_options")
@pytest.mark.parametrize("flag", FLAGS)
def test_the_gatherer_refuses_a_flag_that_is_not_a_bool(flag: str) -> None:
    with pytest.raises(TypeError, match=f"^{flag} must be a bool, not str$"):
        Gatherer(**{flag: "yes"})
