"""Scenarios: failure modes and the article's claims, each one command (`lab scenario run NAME`).

`SCENARIOS` is the list of every scenario, in the order `lab scenario list` shows them. To add
one, write a module with a `Scenario` subclass (see `framework`) and put an instance here.
"""

from __future__ import annotations

from scenarios.cert_expiry import CertExpiry
from scenarios.framework import Result, Run, Scenario, ScenarioError, run_scenario
from scenarios.headless import Headless
from scenarios.hops import Hops
from scenarios.istiod_down import IstiodDown
from scenarios.noisy_neighbour import NoisyNeighbour
from scenarios.overhead import Overhead
from scenarios.policy_mistake import PolicyMistake
from scenarios.sidecar_shutdown import SidecarShutdownRace
from scenarios.sidecar_startup import SidecarStartupRace
from scenarios.upgrade import Upgrade
from scenarios.waypoint_down import WaypointDown
from scenarios.ztunnel_down import ZtunnelDown

SCENARIOS: list[Scenario] = [
    ZtunnelDown(),
    WaypointDown(),
    IstiodDown(),
    PolicyMistake(),
    Headless(),
    Hops(),
    NoisyNeighbour(),
    CertExpiry(),
    Overhead(),
    SidecarStartupRace(),
    SidecarShutdownRace(),
    Upgrade(),
]


def names() -> list[str]:
    return [s.name for s in SCENARIOS]


def get(name: str) -> Scenario:
    """The scenario called NAME; KeyError naming the known ones otherwise."""
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(f'unknown scenario "{name}"; known scenarios: {", ".join(names())}')


def run(client, name: str, log=None) -> Result:
    """Runs scenario NAME on the lab behind CLIENT (a LabClient); see framework.run_scenario."""
    return run_scenario(client, get(name), log)


__all__ = ["SCENARIOS", "Result", "Run", "Scenario", "ScenarioError", "get", "names", "run", "run_scenario"]
