"""Data shipped with authmw: the system policies and the ModelArts action catalog."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from types import MappingProxyType
from typing import Any

from authmw.policy.document import Policy, parse_policy

__all__ = ["modelarts_actions", "system_policies", "system_policy_documents"]

#: Dedicated resource-pool management, the part of ModelArts that ``CommonOperations`` leaves out.
POOL_MANAGEMENT = ("modelarts:pool:create", "modelarts:pool:update", "modelarts:pool:delete")


@cache
def system_policy_documents() -> MappingProxyType[str, Any]:
    """The JSON documents of the system policies, by name."""
    documents: dict[str, Any] = json.loads(files("authmw.data").joinpath("system_policies.json").read_text())
    return MappingProxyType(documents)


@cache
def system_policies() -> MappingProxyType[str, Policy]:
    """``ModelArts FullAccess`` and ``ModelArts CommonOperations`` (all of ModelArts but pool management)."""
    return MappingProxyType({name: parse_policy(doc, name=name) for name, doc in system_policy_documents().items()})


@cache
def modelarts_actions() -> tuple[str, ...]:
    """Every ModelArts action of the route catalog, plus the pool-management actions, sorted."""
    actions = set(POOL_MANAGEMENT) | {"modelarts:pool:list"}
    for line in files("authmw.data").joinpath("modelarts_routes.tsv").read_text().splitlines()[2:]:
        action = line.split("\t")[2]
        if action.startswith("modelarts:"):
            actions.add(action)
    return tuple(sorted(actions))
