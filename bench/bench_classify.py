"""Policy classifier: compiled decision trees vs a numpy linear scan and a pure-Python first match.

Run: PYTHONPATH=src python -m pytest bench/bench_classify.py -o python_files='bench_*.py' --benchmark-enable \
         --benchmark-columns=median,ops [--benchmark-timer=time.process_time  (per-core figures on a busy machine)]
Rates are classifications per second (Mpps in extra_info); the baselines run on a subset of the same trace
(they are 10^3-10^5 times slower) and their rate is per packet, so the figures compare directly.
"""
import os

import numpy as np
import pytest

from bench.baselines import classify_numpy_linear, classify_python, python_boxes
from gwlb_fast.stages.policy import Policy, generate_trace
from tests.shared_data import data_path

SETS = ["acl1_10k", "fw1_10k", "ipc1_10k"]
N = 65_536
N_NUMPY = 4_096
N_PYTHON = 200


def _load(name):
    path = data_path("classbench", "neurocuts", name)
    if not path.is_file():
        pytest.skip(f"ClassBench data not found at {path}")
    return Policy.from_classbench(path)


@pytest.fixture(scope="module", params=SETS)
def workload(request):
    pol = _load(request.param)
    clf = pol.compile()
    trace = generate_trace(pol, N, seed=1)
    lo, hi, rule = pol.boxes()
    return request.param, pol, clf, trace, (lo, hi, rule)


def _group(benchmark, name):
    benchmark.group = f"classify {name}"


def test_classify_tree(benchmark, rate, workload):
    name, _, clf, trace, _ = workload
    _group(benchmark, name)
    out = np.empty(N, dtype=np.int32)
    benchmark(clf.classify, **trace, out=out)
    rate(N)
    benchmark.extra_info.update(memory_MB=round(clf.memory_bytes / 2**20, 3), build_ms=round(clf.build_seconds * 1e3, 1),
                                nodes=clf.n_nodes, leaf_entries=clf.n_leaf_entries, groups=clf.n_groups)


def test_classify_numpy_linear(benchmark, rate, workload):
    name, _, clf, trace, (lo, hi, rule) = workload
    _group(benchmark, name)
    sub = {k: v[:N_NUMPY] for k, v in trace.items()}
    got = benchmark(classify_numpy_linear, lo, hi, rule, sub)
    np.testing.assert_array_equal(got, clf.classify(**sub))
    rate(N_NUMPY)


def test_classify_python(benchmark, rate, workload):
    name, _, clf, trace, (lo, hi, rule) = workload
    _group(benchmark, name)
    sub = {k: v[:N_PYTHON] for k, v in trace.items()}
    boxes = python_boxes(lo, hi, rule)
    got = benchmark(classify_python, boxes, sub)
    assert got == clf.classify(**sub).tolist()
    rate(N_PYTHON)


@pytest.mark.parametrize("name", SETS)
def test_build(benchmark, name):
    """Policy.compile (box expansion + partition + tree build) for a 10K-rule set; memory in extra_info."""
    pol = _load(name)
    benchmark.group = "classify build 10K rules"
    clf = benchmark(pol.compile)
    benchmark.extra_info.update(rules=len(pol), memory_MB=round(clf.memory_bytes / 2**20, 3), nodes=clf.n_nodes,
                                leaf_entries=clf.n_leaf_entries, depth=clf.depth)
    assert clf.build_seconds < 1.0 or os.environ.get("CI")


@pytest.fixture(scope="module")
def content_workload():
    """acl1_10k with App-ID and URL-category constraints on a third of the rules (application lists, a tenth
    application-default, a tenth URL categories), and a trace with identified applications and categories."""
    from gwlb_fast.inspect.applications import APP_ID
    from gwlb_fast.inspect.urlcat import UrlCategories
    from gwlb_fast.stages.policy import _app_default_pairs

    base = _load("acl1_10k")
    rng = np.random.default_rng(3)
    apps = [APP_ID[a] for a in ("web-browsing", "ssl", "dns", "ssh", "smtp", "quic")]
    rules = []
    for r in base.rules:
        u = rng.random()
        if u < 0.2:
            r = r._replace(application=tuple(sorted(set(rng.choice(apps, 2).tolist()))))
        elif u < 0.3:
            a = tuple(sorted(set(rng.choice(apps, 2).tolist())))
            r = r._replace(application=a, service="application-default", l4=_app_default_pairs(a))
        elif u < 0.4:
            r = r._replace(category=tuple(sorted(set(rng.integers(0, 40, 2).tolist()))))
        rules.append(r)
    cats = UrlCategories({f"c{i}": [f"h{i}.test"] for i in range(40)})
    pol = Policy(rules, url_categories=cats)
    trace = generate_trace(pol, N, seed=1)
    app = rng.choice(np.array(apps, np.uint16), N)
    category = rng.integers(-1, 40, (N, 2)).astype(np.int32)
    return pol, pol.compile(), trace, app, category


@pytest.mark.parametrize("content", ["none", "app", "app+category"])
def test_classify_content(benchmark, rate, content_workload, content):
    """The same constrained policy looked up provisionally (no content columns) and finally (app, categories)."""
    _, clf, trace, app, category = content_workload
    benchmark.group = "classify acl1_10k with App-ID / URL-category rules"
    kw = {} if content == "none" else {"app": app} if content == "app" else {"app": app, "category": category}
    out = np.empty(N, dtype=np.int32)
    benchmark(clf.classify, **trace, **kw, out=out)
    rate(N)
