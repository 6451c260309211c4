"""What each replica's Ray actor asks for: every replica must be able to start, on whatever nodes there are.

GPU placement is decided here as a pure function; it was never run on a
machine with GPUs in this project's tests.
"""

from __future__ import annotations

import pytest

from niyama.router.ray_placement import RAY_RESOLUTION, Placement, place


def test_one_gpu_per_replica_where_the_cluster_has_gpus():
    assert place(2, [{"CPU": 32, "GPU": 4}]) == Placement(1, 1, None)
    assert place(4, [{"CPU": 8, "GPU": 2}, {"CPU": 8, "GPU": 2}]) == Placement(1, 1, None)


def test_a_replica_over_several_gpus_needs_them_on_one_node():
    assert place(2, [{"CPU": 16, "GPU": 4}], gpus_per_replica=2) == Placement(1, 2, None)
    with pytest.raises(ValueError, match="its nodes have 1, 1 GPUs, room for 0 such replicas"):
        place(1, [{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}], gpus_per_replica=2)
    with pytest.raises(ValueError, match="3 replicas of 1 GPU"):
        place(3, [{"CPU": 8, "GPU": 2}])


def test_cpu_replicas_share_the_cores_and_set_their_threads():
    assert place(2, [{"CPU": 8}]) == Placement(4, 0, 4)
    three = place(3, [{"CPU": 8}])
    assert (three.num_gpus, three.threads) == (0, 2) and 8 / 3 - 1 / RAY_RESOLUTION <= three.num_cpus <= 8 / 3
    assert place(3, [{"CPU": 2}]).threads == 1  # less than a core each: still one thread


@pytest.mark.parametrize(
    "replicas, nodes",
    [(3, [8.0]), (3, [2.0]), (3, [2.0, 2.0]), (5, [4.0, 2.0]), (7, [16.0, 1.0, 3.0]), (1, [0.5])],
)
def test_every_cpu_replica_fits_on_some_node(replicas, nodes):
    placement = place(replicas, [{"CPU": cpus} for cpus in nodes])
    share = placement.num_cpus
    room = sum(int(cpus * RAY_RESOLUTION) // int(share * RAY_RESOLUTION) for cpus in nodes)  # Ray's fixed point
    assert room >= replicas
    assert placement.threads == max(1, int(share))
    larger = share * 1.05  # and no noticeably larger share would have fitted
    assert sum(int(cpus // larger) for cpus in nodes) < replicas


def test_nonsense_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        place(0, [{"CPU": 8}])
    with pytest.raises(ValueError, match="neither GPUs nor CPUs"):
        place(1, [{"memory": 1e9}])
