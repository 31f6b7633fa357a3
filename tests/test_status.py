import re
from pathlib import Path

import numpy as np

import gwlb_fast
from gwlb_fast.status import N_STATUS, PktStatus, count_status, describe_counts

PXD = Path(gwlb_fast.__file__).parent / "_kernels" / "_status.pxd"


def test_pxd_mirrors_enum():
    found = dict(re.findall(r"^\s+ST_(\w+) = (\d+)$", PXD.read_text(), flags=re.MULTILINE))
    assert {k: int(v) for k, v in found.items()} == {s.name: int(s) for s in PktStatus}


def test_counts_and_names():
    st = np.array([0, 1, 1, PktStatus.POLICY_DENY], np.uint8)
    c = count_status(st)
    assert c.shape == (N_STATUS,) and c[1] == 2 and c.sum() == 4
    assert describe_counts(c) == {"TRUNCATED": 2, "POLICY_DENY": 1}
