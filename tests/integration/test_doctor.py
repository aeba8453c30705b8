"""`slimline doctor` here and on every node of a Ray cluster: facts and the int8 verdict."""

from __future__ import annotations

import re


def test_doctor_here_and_per_node(cli) -> None:
    here = cli("doctor", "--seconds", "1")
    assert here.returncode == 0, here.stderr
    verdict = r"int8 vs fp32 +int8 (pays off|helps a little|gives little) here \(x\d+\.\d\)"
    assert re.search(verdict, here.stdout), here.stdout
    assert "cpu_flags" in here.stdout and "providers" in here.stdout
    nodes = cli("doctor", "--address", "local", "--seconds", "1")  # a Ray started for the purpose
    assert nodes.returncode == 0, nodes.stderr
    assert nodes.stdout.count("node ") == 1 and nodes.stdout.count("int8 vs fp32") == 1
