"""The run's summary as the command line prints it (gwlb_fast.outputs.report.Summary)."""
from gwlb_fast.outputs.report import RULES_LISTED_WHOLE, Summary


def _rule_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("rule hits (sessions)") + 1
    out = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        out.append(line.strip())
    return out


def test_a_short_policy_lists_every_rule():
    rules = {"allow-web": 5, "allow-dns": 0, "block-rest": 2}
    assert [r.split()[0] for r in _rule_lines(str(Summary(rules=rules)))] == list(rules)


def test_a_long_policy_lists_the_rules_that_took_sessions_and_counts_the_others():
    rules = {f"gen-{i:04d}": 0 for i in range(1000)}
    rules["gen-0500"] = 3
    rules |= {"allow-web-out": 11_000, "block-rest": 3_000}
    assert len(rules) > RULES_LISTED_WHOLE
    lines = _rule_lines(str(Summary(rules=rules)))
    assert [r.split()[0] for r in lines[:-1]] == ["gen-0500", "allow-web-out", "block-rest"]  # policy order
    assert lines[-1] == "(999 more rule(s) took no session; --json lists every rule)"
    assert Summary(rules=rules).as_dict()["rules"] == rules


def test_a_long_policy_whose_every_rule_took_a_session_has_no_count_line():
    rules = {f"r{i}": i + 1 for i in range(RULES_LISTED_WHOLE + 1)}
    assert len(_rule_lines(str(Summary(rules=rules)))) == len(rules)
