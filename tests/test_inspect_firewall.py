"""Content inspection inside the firewall: App-ID re-lookup, URL filtering, threat actions, threat log and flow-log
fields, on the real http_espn capture behind a modelled GWLB (tests/data/inspect/espn.yaml)."""
import json
import shutil

import pytest
import yaml

import gwlb_fast as gf
from gwlb_fast.inspect.inspector import inspect_flows
from gwlb_fast.inspect.signatures import load_rules
from gwlb_fast.pipeline import Pipeline
from tests.shared_data import REPO, data_path

TOPO = REPO / "tests" / "data" / "inspect" / "espn.yaml"
PCAP = data_path("captures", "real", "http_espn.pcapng")
pytestmark = pytest.mark.skipif(not PCAP.exists(), reason="real captures not available")


def topology(tmp_path, **policy):
    data = yaml.safe_load(TOPO.read_text())
    data["security_policy"].update(policy)
    shutil.copy(TOPO.parent / "espn.rules", tmp_path / "espn.rules")
    p = tmp_path / "topo.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def run(topo, tmp_path, **kw):
    pipe = Pipeline.from_yaml(topo)
    summary = pipe.run(PCAP, tmp_path / "out.pcap", flow_log=tmp_path / "flows.jsonl",
                       threat_log=tmp_path / "threats.jsonl", **kw)
    flows = [json.loads(ln) for ln in (tmp_path / "flows.jsonl").read_text().splitlines()]
    threats = [json.loads(ln) for ln in (tmp_path / "threats.jsonl").read_text().splitlines()]
    return pipe, summary, flows, threats


def test_threat_log_equals_standalone_matching(tmp_path):
    """Profile action default = each signature's own: the firewall's alerts are the standalone engine's (which
    agrees with Suricata), and a drop signature ends its session at the packet that matched."""
    _, summary, flows, threats = run(TOPO, tmp_path)
    sig = {(t["sid"], t["src_ip"], t["src_port"], t["dst_ip"], t["dst_port"]) for t in threats
           if t["type"] == "signature"}
    al = []
    inspect_flows(gf.read_pcap(PCAP), signatures=load_rules([TOPO.parent / "espn.rules"]), alerts=al)
    want = {(a["sid"], a["client_ip"], a["client_port"], a["server_ip"], a["server_port"]) for a in al}
    assert sig == want and len(sig) > 0
    dropped = {(t["src_ip"], t["src_port"]) for t in threats if t["action"] == "drop"}
    assert dropped and summary.drops["firewall"]["POLICY_DENY"] > 0
    for t in threats:
        assert set(t) >= {"type", "sid", "signature", "severity", "action", "src_ip", "src_port", "dst_ip",
                          "dst_port", "proto", "direction", "application", "url", "category", "firewall", "rule",
                          "ts"}
    # flow log: the fields of each session
    web = [f for f in flows if f["application"] == "web-browsing"]
    assert web and all(f["host"] for f in web) and all(f["url"].startswith(f["host"]) for f in web)
    dns = [f for f in flows if f["application"] == "dns"]
    assert dns and all(f["host"] == f["url"] for f in dns)
    assert summary.inspection["applications"][0][0] in ("web-browsing", "dns")


def test_app_id_relookup_denies_after_identification(tmp_path):
    """Only DNS is allowed by application: HTTP sessions pass their handshake (the provisional lookup allows a
    session still being identified), then the re-lookup on web-browsing hits the deny rule and the request is
    dropped."""
    topo = topology(tmp_path, rules=[{"name": "dns", "application": ["dns"], "action": "allow"},
                                     {"name": "block-rest", "action": "deny"}], signatures=[], profiles={})
    _, summary, flows, _ = run(topo, tmp_path)
    web = [f for f in flows if f["application"] == "web-browsing"]
    assert web
    for f in web:
        assert f["rule"] == "block-rest" and f["action"] == "deny"
    # delivered: each HTTP session's SYN, SYN-ACK and ACK only; the request and all that follows are dropped
    out = gf.PacketBatch.concat(list(gf.read_pcap(tmp_path / "out.pcap")))
    http = (out.proto == 6) & ((out.sport == 80) | (out.dport == 80))
    assert int(http.sum()) == 3 * len(web)
    assert summary.drops["firewall"]["POLICY_DENY"] == sum(f["packets"] + f["packets_reply"] - 3 for f in web)
    assert all(f["rule"] == "dns" and f["action"] == "allow" for f in flows if f["application"] == "dns")
    assert summary.rules["block-rest"] == len(web)


def test_url_block_resets_and_alert_logs(tmp_path):
    topo = topology(tmp_path, url_categories={"cdn": ["*.espncdn.com"], "sports": ["*.espn.go.com", "*.espn.com"]},
                    profiles={"web": {"url_filtering": {"block": ["cdn"], "alert": ["sports"]}}},
                    rules=[{"name": "web", "application": ["web-browsing", "dns"], "profile": ["web"],
                            "action": "allow"}, {"name": "block-rest", "action": "deny"}], signatures=[])
    _, summary, flows, threats = run(topo, tmp_path)
    urls = [t for t in threats if t["type"] == "url"]
    blocked = [t for t in urls if t["action"] == "block"]
    assert blocked and all(t["category"] == "cdn" for t in blocked)
    assert {t["action"] for t in urls} == {"block", "alert"}
    assert all(t["category"] == "sports" for t in urls if t["action"] == "alert")
    # TCP sessions blocked by URL are reset (RSTs generated), the UDP (DNS) ones dropped
    assert summary.generated > 0
    assert summary.drops["firewall"].get("POLICY_RESET", 0) > 0
    cdn_flows = [f for f in flows if f["category"] == "cdn" and f["proto"] == 6]
    assert cdn_flows and all(f["action"] == "reset-both" for f in cdn_flows)


def test_policy_without_content_rules_inspects_nothing(tmp_path):
    pipe = Pipeline.from_yaml(REPO / "examples" / "topology.yaml")
    assert all(fw.inspection is None for fw in pipe.firewall_objects())
    topo = topology(tmp_path, rules=[{"name": "all", "action": "allow"}], signatures=[], profiles={},
                    url_categories={})
    pipe, summary, flows, threats = run(topo, tmp_path)
    assert all(fw.inspection is None for fw in pipe.firewall_objects())
    assert threats == [] and all(f["application"] is None for f in flows) and not summary.inspection


def test_threat_profile_alert_overrides_drop(tmp_path):
    topo = topology(tmp_path, profiles={"ips": {"threat": {"action": "alert"}},
                                        "web": {"url_filtering": {"alert": ["any"]}}})
    _, summary, _, threats = run(topo, tmp_path)
    assert {t["action"] for t in threats if t["type"] == "signature"} == {"alert"}
    assert "POLICY_DENY" not in summary.drops.get("firewall", {})


def test_sessions_on_a_rule_without_threat_profile_are_not_matched(tmp_path):
    """Once App-ID and the URL put a session on a rule without a threat profile, its streams are not matched from
    the next batch on (no alert of it would count); the sessions of a rule with one still are, with the same
    alerts (batches of 64 packets, so that sessions span several)."""
    rules = [{"name": "dns", "application": ["dns"], "action": "allow", "profile": ["ips"]},
             {"name": "web", "application": ["web-browsing", "ssl"], "service": "application-default",
              "profile": ["web"], "action": "allow"},
             {"name": "block-rest", "action": "deny"}]
    _, summary, _, threats = run(topology(tmp_path, rules=rules), tmp_path, chunk=64)
    counters = summary.inspection["counters"]
    assert counters["match_bytes_not_matched"] > 0
    assert threats and all(t["rule"] == "dns" for t in threats if t["type"] == "signature")
    (tmp_path / "all").mkdir()
    rules[1]["profile"] = ["ips", "web"]
    _, summary2, _, threats2 = run(topology(tmp_path / "all", rules=rules), tmp_path / "all", chunk=64)
    assert summary2.inspection["counters"]["match_bytes_not_matched"] == 0
    dns = lambda ts: [t for t in ts if t["type"] == "signature" and t["rule"] == "dns"]
    assert dns(threats2) == dns(threats) and len(dns(threats2)) < len([t for t in threats2 if t["type"] == "signature"])


def _web_blocking(action, block_ip=None):
    threat = {"action": action, **({"block_ip": block_ip} if block_ip else {})}
    return {"ips": {"threat": threat}, "web": {"url_filtering": {"block": ["ads"], "alert": ["sports"]}}}


def test_block_ip_blocks_the_source_for_its_duration(tmp_path):
    """block-ip ends the alerting session and, from the next batch on, drops every packet from its source until
    the duration ends (sessions ended so: end_reason block-ip); by source and destination only towards the alert's
    destination; a short duration lets the source through again."""
    runs = {}
    for name, prof in (("drop", _web_blocking("default")),
                       ("source", _web_blocking("block-ip", {"track_by": "source", "duration": 3600})),
                       ("pair", _web_blocking("block-ip", {"track_by": "source-and-destination", "duration": 3600})),
                       ("short", _web_blocking("block-ip", {"duration": 1}))):
        (tmp_path / name).mkdir()
        runs[name] = run(topology(tmp_path / name, profiles=prof), tmp_path / name, chunk=64)
    counters = {k: v[1].inspection["counters"] for k, v in runs.items()}
    flows = {k: v[2] for k, v in runs.items()}
    threats = {k: [t for t in v[3] if t["type"] == "signature"] for k, v in runs.items()}
    assert counters["drop"]["packets_blocked_ip"] == 0 and counters["drop"]["ip_blocks"] == 0
    assert all(f["end_reason"] != "block-ip" for f in flows["drop"])
    for k in ("source", "pair", "short"):
        assert threats[k] and all(t["action"] == "block-ip" for t in threats[k])
        assert counters[k]["ip_blocks"] > 0 and counters[k]["packets_blocked_ip"] > 0
        blocked = [f for f in flows[k] if f["end_reason"] == "block-ip"]
        assert blocked
        # a blocked session starts after a block of its source (on its firewall), before the block ends
        for f in blocked:
            starts = [t["ts"] for t in threats[k] if t["src_ip"] == f["src_ip"] and t["firewall"] == f["firewall"]
                      and (k != "pair" or t["dst_ip"] == f["dst_ip"])]
            assert starts and min(starts) <= f["last_seen"]
    # the one client is blocked everywhere by source: no session of it runs to its end after its first alert
    first = {fw: min(t["ts"] for t in threats["source"] if t["firewall"] == fw)
             for fw in {t["firewall"] for t in threats["source"]}}
    assert all(f["end_reason"] in ("block-ip", "policy-deny") for f in flows["source"]
               if f["firewall"] in first and f["first_seen"] > first[f["firewall"]] + 0.5)
    # by pair and with a 1 s block, less is blocked than by source for an hour
    assert counters["pair"]["packets_blocked_ip"] < counters["source"]["packets_blocked_ip"]
    assert runs["short"][1].packets_out > runs["source"][1].packets_out
    assert counters["short"]["ip_blocks"] > counters["source"]["ip_blocks"]   # blocked again after it ended


@pytest.mark.parametrize("block_ip,needle", [
    ({"track_by": "destination"}, "track_by: expected source or source-and-destination"),
    ({"duration": 0}, "duration: expected whole seconds from 1 to 3600"),
    ({"duration": 7200}, "duration: expected whole seconds from 1 to 3600"),
    ({"time": 5}, "expected {track_by"),
])
def test_bad_block_ip_settings(tmp_path, block_ip, needle):
    with pytest.raises(gf.ConfigError, match=needle):
        Pipeline.from_yaml(topology(tmp_path, profiles=_web_blocking("block-ip", block_ip)))


def test_alerts_of_fields_completed_by_the_session_end_are_logged(tmp_path):
    """A request line whose headers never finish (no Host, no blank line) completes its fields only when the
    session ends (here at the end of the run, no FIN): the field signature that matches them is logged by the
    firewall as by the standalone engine, with the session's last time and its own addresses."""
    from scapy.all import IP, TCP, Ether, wrpcap

    c, s = "172.16.0.122", "93.184.216.34"
    req = b"GET /espn/scores HTTP/1.1\r\nUser-Agent: t\r\n"
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    pkts = [e / IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="S", seq=100),
            e / IP(src=s, dst=c) / TCP(sport=80, dport=40000, flags="SA", seq=500, ack=101),
            e / IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="A", seq=101, ack=501),
            e / IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="PA", seq=101, ack=501) / req,
            e / IP(src=s, dst=c) / TCP(sport=80, dport=40000, flags="A", seq=501, ack=101 + len(req))]
    for i, p in enumerate(pkts):
        p.time = 1.0 + i * 0.01
    cap = tmp_path / "unfinished.pcap"
    wrpcap(str(cap), pkts)
    (tmp_path / "uri.rules").write_text('alert http any any -> any any (msg:"scores uri"; http.uri; '
                                        'content:"/scores"; sid:3001;)\n')
    topo = topology(tmp_path, signatures=["uri.rules"])
    al = []
    inspect_flows(gf.read_pcap(cap), signatures=load_rules([tmp_path / "uri.rules"]), alerts=al)
    assert [a["sid"] for a in al] == [3001]
    pipe = Pipeline.from_yaml(topo)
    summary = pipe.run(cap, tmp_path / "out.pcap", threat_log=tmp_path / "threats.jsonl")
    threats = [json.loads(ln) for ln in (tmp_path / "threats.jsonl").read_text().splitlines()]
    sig = [t for t in threats if t["type"] == "signature"]
    assert [(t["sid"], t["src_ip"], t["src_port"], t["dst_ip"], t["dst_port"], t["direction"]) for t in sig] == \
        [(3001, c, 40000, s, 80, "client-to-server")]
    assert sig[0]["ts"] == pytest.approx(1.04) and sig[0]["rule"] == "web"
    assert sig[0]["application"] == "web-browsing" and sig[0]["url"] is None
    assert summary.inspection["counters"]["threats"] == 1


@pytest.mark.parametrize("track_by,chunk", [("source", 64), ("source", 1 << 16), ("source-and-destination", 64)])
def test_block_ip_inside_a_batch_as_across_batches(tmp_path, track_by, chunk):
    """A block-ip alert drops its sender's later packets of the same batch, and their alerts are not logged:
    larger batches give the delivered packets, flows' end reasons, threat log and block counters of one packet per
    batch."""
    prof = _web_blocking("block-ip", {"track_by": track_by, "duration": 3600})
    got = {}
    for c in (1, chunk):
        d = tmp_path / str(c)
        d.mkdir()
        _, summary, flows, threats = run(topology(d, profiles=prof), d, chunk=c)
        got[c] = ((d / "out.pcap").read_bytes()[24:],
                  sorted((f["src_ip"], f["src_port"], f["dst_ip"], f["dst_port"], f["end_reason"]) for f in flows),
                  sorted((t["type"], str(t["sid"]), t["src_ip"], t["src_port"], t["dst_ip"], t["dst_port"],
                          t["action"], t["ts"]) for t in threats),
                  {k: summary.inspection["counters"][k] for k in ("ip_blocks", "packets_blocked_ip")})
    assert any(f[4] == "block-ip" for f in got[1][1])
    assert got[chunk] == got[1]


def test_workers_give_the_threat_log_and_inspection_summary_of_one_worker(tmp_path):
    """run --workers: each shard's threat log merged in time order holds the records of one worker's run, and the
    summary's counters and top applications, categories and threats are those of the whole capture (not the first
    shard's)."""
    from gwlb_fast.scale.parallel import run_parallel

    topo = topology(tmp_path)
    _, one, _, threats = run(topo, tmp_path, chunk=64)
    many = run_parallel(topo, PCAP, tmp_path / "w2.pcap", workers=2, threat_log=tmp_path / "w2.jsonl", chunk=64)
    got = [json.loads(ln) for ln in (tmp_path / "w2.jsonl").read_text().splitlines()]
    assert sorted(json.dumps(t, sort_keys=True) for t in got) == sorted(json.dumps(t, sort_keys=True) for t in threats)
    assert [t["ts"] for t in got] == sorted(t["ts"] for t in got) and len(got) > 0
    # the reassembly's segment and new-byte counts depend on how the segments fall into batches: not compared
    batching = {"segments", "bytes_new"}
    assert {k: v for k, v in many.inspection["counters"].items() if k not in batching} == \
        {k: v for k, v in one.inspection["counters"].items() if k not in batching}
    for key in ("applications", "categories", "threats"):
        assert many.inspection[key] == one.inspection[key]
    assert many.inspection["threats"] and many.inspection["applications"]


def test_cli_workers_take_the_threat_log(tmp_path, capsys):
    from gwlb_fast.cli import main

    topo = topology(tmp_path)
    _, _, _, threats = run(topo, tmp_path)
    assert main(["run", str(topo), str(PCAP), "--threat-log", str(tmp_path / "w2.jsonl"), "--workers", "2",
                 "--quiet"]) == 0
    assert "top threats" in capsys.readouterr().out
    assert len((tmp_path / "w2.jsonl").read_text().splitlines()) == len(threats) > 0
