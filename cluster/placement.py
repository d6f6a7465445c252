"""[plumbing] One placement group per role; fail fast, naming what was requested and what the cluster has."""

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group


class PlacementError(RuntimeError):
    pass


def reserve(role: str, bundle: dict[str, float], count: int, timeout_s: float = 60.0) -> PlacementGroup:
    """A placement group of `count` copies of `bundle` (e.g. {"CPU": 1}) for `role`, or PlacementError."""
    bundle = {key: value for key, value in bundle.items() if value > 0}
    needed = {key: value * count for key, value in bundle.items()}
    available = ray.available_resources()
    short = {key: value for key, value in needed.items() if available.get(key, 0.0) + 1e-9 < value}
    if short:
        raise PlacementError(_message(role, bundle, count, needed, available))
    group = placement_group([dict(bundle) for _ in range(count)], strategy="PACK", name=f"freelunch-{role}")
    try:
        ray.get(group.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        raise PlacementError(_message(role, bundle, count, needed, ray.available_resources())) from None
    return group


def node_address(group: PlacementGroup, bundle_index: int = 0) -> str:
    """IP address of the node that holds one bundle of the group (for rendezvous of the role's ranks)."""
    node_id = ray.util.placement_group_table(group)["bundles_to_node_id"][bundle_index]
    return next(node["NodeManagerAddress"] for node in ray.nodes() if node["NodeID"] == node_id)


def _message(role: str, bundle: dict, count: int, needed: dict, available: dict) -> str:
    have = {key: round(available.get(key, 0.0), 2) for key in needed}
    return (
        f"cannot place role {role!r}: it needs {count} x {bundle} = {needed}, but the cluster has {have} available "
        f"(total {ray.cluster_resources()}). Lower the role's size or resources in the config, or add nodes."
    )
