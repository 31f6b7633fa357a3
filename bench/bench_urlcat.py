"""URL categorisation: the batched kernel vs a pure-Python regex categoriser, same entries and hosts.

Run: GWLB_FAST_BENCH_FULL=1 python -m pytest bench/bench_urlcat.py -o python_files='bench_*.py' --benchmark-enable \
         --benchmark-columns=median,ops,rounds
Workload: 1,000 custom URL-list entries (exact hosts, ``*.`` and ``^.`` wildcards, path and mid-domain wildcards), a
100,000-domain category database, 65,536 hosts (half of them listed somewhere, at one to three labels below).
Rates are URLs per second (``Mpps`` in extra_info counts URLs).
"""
import random

import numpy as np
import pytest

from bench.baselines import categorize_python, compile_python_categorizer
from gwlb_fast.inspect.urlcat import UrlCategories

N = 65_536
N_PYTHON = 500


def _workload(seed=0):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    tlds = ["com", "net", "org", "io", "co.uk"]
    custom = {}
    for c in range(20):
        es = []
        for _ in range(50):
            d = f"{rng.choice(words)}.{rng.choice(words)}.{rng.choice(tlds)}"
            shape = rng.randrange(10)
            es.append({0: d, 1: d, 2: d, 3: "*." + d, 4: "*." + d, 5: "^." + d, 6: d + "/a/*",
                       7: "www." + d.split(".")[0] + ".*", 8: "mail.*." + d.split(".", 1)[1], 9: d}[shape])
        custom[f"custom{c}"] = es
    database = {f"{words[i % 3000]}x{i}.{rng.choice(tlds)}": [f"cat{i % 60}"] for i in range(100_000)}
    listed = [e.lstrip("*^.").split("/")[0] for es in custom.values() for e in es if "*" not in e.split("/")[0][1:]]
    dbdoms = list(database)
    hosts = []
    for _ in range(N):
        r = rng.random()
        base = rng.choice(listed) if r < 0.25 else rng.choice(dbdoms) if r < 0.5 else \
            f"{rng.choice(words)}.{rng.choice(words)}.{rng.choice(tlds)}"
        sub = ".".join(rng.choices(words, k=rng.randrange(3)))
        hosts.append(f"{sub}.{base}" if sub else base)
    return custom, database, hosts


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    custom, database, hosts = _workload()
    db = tmp_path_factory.mktemp("urlcat") / "categories.csv"
    db.write_text("".join(f"{d},{c[0]}\n" for d, c in database.items()))
    cats = UrlCategories(custom, db)
    enc = [h.encode() for h in hosts]
    lens = np.array([len(b) for b in enc], np.int64)
    off = np.zeros(N, np.int64)
    off[1:] = np.cumsum(lens)[:-1]
    arena = (np.frombuffer(b"".join(enc), np.uint8), off, lens)
    return cats, custom, database, hosts, arena


def test_categorize_kernel(benchmark, rate, workload):
    cats, _, _, _, arena = workload
    benchmark.group = "urlcat 1K entries + 100K-domain database"
    prim, _ = benchmark(cats.categorize, arena)
    rate(N)
    benchmark.extra_info.update(host_entries=cats.n_host_entries, programs=cats.n_programs,
                                categorised=float(np.mean(prim != cats.unknown)))


def test_categorize_python(benchmark, rate, workload):
    cats, custom, database, hosts, _ = workload
    benchmark.group = "urlcat 1K entries + 100K-domain database"
    sub = hosts[:N_PYTHON]
    compiled = compile_python_categorizer(custom, cats.names)
    got = benchmark(categorize_python, compiled, database, cats.names, sub)
    assert got == cats.categorize(sub)[0].tolist()
    rate(N_PYTHON)


def test_build(benchmark, workload):
    _, custom, _, _, _ = workload
    benchmark.group = "urlcat build"
    benchmark(UrlCategories, custom)
