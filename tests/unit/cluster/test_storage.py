"""The shared artifact root check names the nodes that cannot see it."""

from __future__ import annotations

import pytest

from slimline.cluster.resources import NodeInfo
from slimline.cluster.storage import ArtifactRootNotShared, check_shared_root


def test_shared_root_check_names_the_blind_node(tmp_path) -> None:
    # Unit test with a stand-in for Ray; the two-node integration test runs the real path.
    class FakeRay:
        def remote(self, fn):
            class Task:
                def options(self, **kw):
                    return self

                def remote(self, path, token):
                    return fn(path, token) if not FakeRay.blind else False

            return Task()

        def get(self, value, timeout=None):
            return value

    nodes = [NodeInfo("a1" * 28, "10.0.0.1", 2, 0), NodeInfo("b2" * 28, "10.0.0.2", 2, 0)]
    FakeRay.blind = False
    check_shared_root(FakeRay(), nodes, tmp_path / "art")
    FakeRay.blind = True
    with pytest.raises(ArtifactRootNotShared, match=r"not visible from node\(s\) 10\.0\.0\.1, 10\.0\.0\.2"):
        check_shared_root(FakeRay(), nodes, tmp_path / "art")
    assert not (tmp_path / "art" / ".slimline-probe").exists()
