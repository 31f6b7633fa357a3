"""URL categories: PAN-OS URL-list wildcard semantics (documented examples), the database, the batched kernel."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast._kernels import urlcat as k
from gwlb_fast.errors import ConfigError
from gwlb_fast.inspect.urlcat import UrlCategories, parse_entry
from tests.oracles.urlcat import categorize as oracle_categorize

# PAN-OS documentation and knowledge base: "Guidelines for URL Category Exceptions" (10.2+, ending token appended),
# "Wildcard Guidelines for URL Category Exception Lists", and the examples of *.abc.com/, abc.com/ and abc.com/*.
DOCUMENTED = [
    # entry, matches, does not match
    ("example.com", ["example.com", "example.com/search", "EXAMPLE.com/Search?q=1"],
     ["www.example.com", "example.com.test.info", "example.com.domain.xyz", "myexample.com"]),
    ("*.example.com", ["news.example.com", "a.b.example.com/x"], ["example.com", "www.example.com.uk",
                                                                  "www.example.com.malware.com"]),
    ("^.domain.com", ["docs.domain.com", "blog.domain.com"], ["abc.xyz.domain.com", "domain.com"]),
    ("*.domain.com", ["docs.domain.com", "abc.xyz.domain.com"], ["domain.com"]),
    ("abc.com/", ["abc.com/", "abc.com/index", "abc.com/subdir/index"], ["example.abc.com/", "abc.com.example.com/"]),
    ("abc.com/*", ["abc.com/index", "abc.com/subdir/index"], ["abc.com/", "example.abc.com/", "abc.com.example.com/"]),
    ("*.abc.com/", ["example.abc.com/", "example.abc.com/index", "example.abc.com/subdir/index"],
     ["abc.com/", "abc.com/index", "abc.com/subdir/index", "abc.com.example.com/"]),
    ("*.paloaltonetworks.com/", ["www.paloaltonetworks.com"], ["www.paloaltonetworks.com.uk"]),
    ("www.paloaltonetworks.*", ["www.paloaltonetworks.com", "www.paloaltonetworks.co.uk"], ["paloaltonetworks.com"]),
    ("mail.^.com", ["mail.company.com"], ["mail.company.sso.com"]),
    ("mail.*.com", ["mail.company.com", "mail.company.sso.com"], ["mail.com"]),
    ("example.com/news", ["example.com/news", "example.com/news/today", "example.com/news?id=3"],
     ["example.com/newsletter", "example.com/", "www.example.com/news"]),
    ("https://Host.Test", ["host.test", "HOST.TEST:8443/login", "host.test."], ["host.test.evil"]),
    ("10.1.1.1", ["10.1.1.1/admin"], ["10.1.1.10", "110.1.1.1"]),
]


def _split(url):
    host, _, path = url.partition("/")
    return host, "/" + path


@pytest.mark.parametrize("entry, good, bad", DOCUMENTED, ids=[d[0] for d in DOCUMENTED])
def test_documented_wildcard_examples(entry, good, bad):
    cats = UrlCategories({"c": [entry]})
    urls = good + bad
    prim, _ = cats.categorize([_split(u)[0] for u in urls], [_split(u)[1] for u in urls])
    assert prim.tolist() == [0] * len(good) + [cats.unknown] * len(bad)
    names = cats.names
    want = [oracle_categorize({"c": [entry]}, {}, names, *_split(u))[0] for u in urls]
    assert prim.tolist() == want


@pytest.mark.parametrize("entry, problem", [
    ("example*.com", "only character of its token"),
    ("li^.paloaltonetworks.com", "only character of its token"),
    ("example.com/^", "cannot be used after a '/'"),
    ("", "bad entry"),
    (".example.com", "bad entry"),
    ("example.com:8080", "ports"),
    ("exa mple.com", "white space"),
    (".".join(["*"] * 17) + ".com", "wildcards"),
])
def test_invalid_entries_refused(entry, problem):
    with pytest.raises(ValueError, match=problem):
        parse_entry(entry)
    with pytest.raises(ConfigError, match=f"url_categories.c: .*{problem}"):
        UrlCategories.from_config({"c": [entry]})


def test_several_categories_and_database(tmp_path):
    db = tmp_path / "cats.csv"
    db.write_text("domain,category\n# comment\nexample.org,news\nads.example.org,ads\nads.example.org,tracking\n"
                  "shop.test,shopping\n")
    cats = UrlCategories.from_config({"mine": ["*.example.org/", "shop.test/cart"], "all-shops": ["shop.test"]}, db)
    assert cats.names == ["mine", "all-shops", "news", "ads", "tracking", "shopping", "unknown"]
    hosts = ["www.example.org", "x.ads.example.org", "example.org", "shop.test", "shop.test", None, "nothing.net"]
    paths = ["/", "/", "/a", "/cart/1", "/", None, "/"]
    prim, allc = cats.categorize(hosts, paths)
    # The most specific database domain decides (ads.example.org: ads + tracking, not news); custom first.
    assert [sorted(c for c in row if c >= 0) for row in allc.tolist()] == [
        [0, 2], [0, 3, 4], [2], [0, 1, 5], [1, 5], [], [6]]
    assert prim.tolist() == [0, 0, 2, 0, 1, -1, 6]
    db_map = {"example.org": ["news"], "ads.example.org": ["ads", "tracking"], "shop.test": ["shopping"]}
    custom = {"mine": ["*.example.org/", "shop.test/cart"], "all-shops": ["shop.test"]}
    for h, p, row in zip(hosts, paths, allc.tolist()):
        assert [c for c in row if c >= 0] == oracle_categorize(custom, db_map, cats.names, h, p)


@pytest.mark.parametrize("text, problem", [
    ("example.org\n", "expected 'domain,category'"),
    ("exa*mple.org,x\n", "bad domain"),
    ("example.org,any\n", "'any' is not a category name"),
])
def test_database_errors_name_file_and_line(tmp_path, text, problem):
    db = tmp_path / "cats.csv"
    db.write_text("# header comment\n" + text)
    with pytest.raises(ConfigError, match=f"url_database: {db}:2: {problem}"):
        UrlCategories.from_config({}, db)
    with pytest.raises(ConfigError, match="cannot read"):
        UrlCategories.from_config({}, tmp_path / "missing.csv")


def test_arena_input_and_empty_batch():
    cats = UrlCategories({"c": ["*.example.com"]})
    data = np.frombuffer(b"www.example.comexample.com", np.uint8)
    prim, allc = cats.categorize((data, np.array([0, 15, 0], np.int64), np.array([15, 11, -1], np.int64)))
    assert prim.tolist() == [0, cats.unknown, -1]
    mat = np.zeros((3, 16), np.uint8)
    mat[0, :15] = np.frombuffer(b"www.example.com", np.uint8)
    mat[2, :11] = np.frombuffer(b"example.com", np.uint8)
    prim, _ = cats.categorize((mat[:, :16], np.array([15, -1, 11], np.int32)))
    assert prim.tolist() == [0, -1, cats.unknown]
    with pytest.raises(ValueError, match="field width"):
        cats.categorize((mat, np.array([17, 0, 0])))
    prim, allc = cats.categorize([])
    assert prim.shape == (0,) and allc.shape == (0, 1)
    with pytest.raises(ValueError, match="paths"):
        cats.categorize(["a"], ["/", "/"])
    with pytest.raises(ValueError, match="not str, bytes or None"):
        cats.categorize([5])


def test_kernel_rejects_bad_arenas():
    cats = UrlCategories({"c": ["x.test"]})
    data = np.zeros(4, np.uint8)
    with pytest.raises(ValueError, match="host 0 lies outside"):
        cats.categorize((data, np.array([2], np.int64), np.array([9], np.int64)))
    with pytest.raises(ValueError, match="key 0 lies outside"):
        k.hash_keys(data, np.array([3], np.int64), np.array([4], np.int64), np.empty(1, np.uint64))


def test_more_matches_than_columns_keeps_the_smallest_ids():
    custom = {f"c{i}": ["*.example.com"] for i in range(12)}
    cats = UrlCategories(custom)
    prim, allc = cats.categorize(["a.example.com"])
    assert allc.shape == (1, 8) and allc[0].tolist() == list(range(8)) and prim.tolist() == [0]
    assert cats.last_flags[0] & 2


_LABELS = ["www", "a", "example", "com", "org", "test", "x1"]
_ENTRY_TOKENS = _LABELS + ["*", "^"]


@st.composite
def _entry(draw):
    host = draw(st.lists(st.sampled_from(_ENTRY_TOKENS), min_size=1, max_size=4))
    e = ".".join(host)
    if draw(st.booleans()):
        path = draw(st.lists(st.sampled_from(["a", "b", "*", "x1"]), min_size=0, max_size=2))
        e += "/" + "/".join(path)
    elif draw(st.booleans()):
        e += "/"
    return e


@st.composite
def _url(draw):
    host = ".".join(draw(st.lists(st.sampled_from(_LABELS), min_size=1, max_size=5)))
    path = "/" + "/".join(draw(st.lists(st.sampled_from(["a", "b", "x1", "a?b=1"]), max_size=3)))
    return host, path


@settings(max_examples=150)
@given(entries=st.lists(st.lists(_entry(), min_size=1, max_size=3), min_size=1, max_size=4),
       urls=st.lists(_url(), min_size=1, max_size=30),
       db=st.dictionaries(st.sampled_from(["example.com", "a.example.com", "com", "test"]),
                          st.lists(st.sampled_from(["n1", "n2"]), min_size=1, max_size=2, unique=True), max_size=3))
def test_hypothesis_kernel_matches_regex_oracle(tmp_path_factory, entries, urls, db):
    custom = {f"c{i}": e for i, e in enumerate(entries)}
    path = tmp_path_factory.mktemp("db") / "db.csv"
    path.write_text("".join(f"{d},{c}\n" for d, cs in db.items() for c in cs))
    cats = UrlCategories(custom, path)
    _, allc = cats.categorize([h for h, _ in urls], [p for _, p in urls])
    for (h, p), row in zip(urls, allc.tolist()):
        assert [c for c in row if c >= 0] == oracle_categorize(custom, db, cats.names, h, p), (h, p)


@settings(max_examples=200)
@given(hosts=st.lists(st.one_of(st.none(), st.binary(max_size=80)), max_size=20),
       paths=st.data())
def test_raw_bytes_fuzz(hosts, paths):
    """Any bytes: no crash, every id valid, a row per URL."""
    cats = UrlCategories({"c": ["*.example.com", "a.b/*/c", "^.x", "www.*"]})
    ps = [paths.draw(st.one_of(st.none(), st.binary(max_size=3000))) for _ in hosts]
    prim, allc = cats.categorize(hosts, ps)
    assert prim.shape == (len(hosts),)
    assert ((allc >= -1) & (allc < len(cats))).all()
    assert [p < 0 for p in prim.tolist()] == [h is None for h in hosts]


def test_long_url_is_cut_and_flagged():
    cats = UrlCategories({"c": ["example.com"]})
    prim, _ = cats.categorize(["example.com"], ["/" + "a/" * 2000])
    assert prim.tolist() == [0] and cats.last_flags[0] & 1
