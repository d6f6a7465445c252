"""A role that cannot be placed fails at once, naming what it asked for and what the cluster has."""

import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", namespace="freelunch-test")
    yield ray
    ray.shutdown()


def test_role_that_does_not_fit_names_requested_and_available(local_ray):
    from cluster.placement import PlacementError, reserve

    with pytest.raises(PlacementError) as error:
        reserve("learner", {"CPU": 1.0, "GPU": 1.0}, 2)
    message = str(error.value)
    assert "cannot place role 'learner'" in message
    assert "2 x {'CPU': 1.0, 'GPU': 1.0}" in message and "'GPU': 2.0" in message
    assert "'GPU': 0" in message  # what the cluster has


def test_role_that_fits_gets_its_placement_group(local_ray):
    from ray.util.placement_group import remove_placement_group

    from cluster.placement import node_address, reserve

    group = reserve("rollout", {"CPU": 1.0}, 2)
    try:
        assert node_address(group, 1) == "127.0.0.1"
    finally:
        remove_placement_group(group)
