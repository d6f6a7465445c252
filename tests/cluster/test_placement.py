"""A role that cannot be placed fails at once, naming what it asked for and what the cluster has."""

import os
import time

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


def test_colocated_role_takes_a_share_of_the_other_roles_first_bundle(local_ray):
    from cluster.role import Role

    class Where:  # defined here, so Ray ships it by value to workers that cannot import this test module
        def where(self) -> tuple[str, dict]:
            import ray

            context = ray.get_runtime_context()
            return context.get_placement_group_id(), context.get_assigned_resources()

    ray = local_ray
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0.0) < 2.0:  # groups of earlier tests are removed asynchronously
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.2)
    learner = Role("learner", Where, 2, cpus=1.0, gpus=0.0, threads=1, timeout_s=60,
                   kwargs_for_rank=lambda rank: {}, shares=[0.5, 1.0])  # fmt: skip
    scorer = Role("scorer", Where, 1, cpus=1.0, gpus=0.0, threads=1, timeout_s=60,
                  kwargs_for_rank=lambda rank: {}, on=learner, shares=[0.5])  # fmt: skip
    try:
        (learner_0, learner_1), (scorer_0,) = learner.call("where"), scorer.call("where")
        assert scorer_0[0] == learner_0[0] == learner_1[0] == learner.group.id.hex()
        assert learner_0[1]["CPU"] == scorer_0[1]["CPU"] == 0.5 and learner_1[1]["CPU"] == 1.0
        assert ray.available_resources().get("CPU", 0.0) == 0.0  # 2 bundles of 1 CPU: nothing else reserved
    finally:
        scorer.stop()
        learner.stop()
