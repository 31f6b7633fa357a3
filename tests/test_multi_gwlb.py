"""Several GWLBs in one path: each firewall has one index along the path (``Pipeline.firewall_names``), so the
per-packet results, the drop records of the flow log, the drops file's comments and the summary name the same
firewall, even where two GWLBs have a firewall of the same name."""
import copy
import json
import shutil
import socket
import subprocess

import dpkt
import numpy as np
import pytest

import gwlb_fast as gf
from gwlb_fast.config import topology_from_dict
from gwlb_fast.outputs.drops import DropsWriter
from gwlb_fast.pcapio import write_pcap
from gwlb_fast.pipeline import Pipeline
from gwlb_fast.status import PktStatus
from tests.topologies import EXAMPLE

ETH = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"


def _two_gwlbs():
    """The example plus a second app subnet (10.1.4.0/24) whose traffic a second GWLB inspects, through its own
    endpoint; that GWLB has a firewall named as one of the first's (fw-1) and one of its own (fw-9)."""
    d = copy.deepcopy(EXAMPLE)
    d["events"] = []
    b = d["vpcs"]["business"]
    b["subnets"]["app2"] = {"cidr": "10.1.4.0/24", "route_table": "app2"}
    b["subnets"]["gwlbe2"] = {"cidr": "10.1.5.0/24", "route_table": "gwlbe"}
    b["route_tables"]["app2"] = [{"dst": "0.0.0.0/0", "via": "gwlbe:gwlbe-b"}]
    d["endpoints"]["gwlbe-b"] = {"vpc": "business", "subnet": "gwlbe2", "id": 0x0B1B2C3D4E5F6071, "gwlb": "gwlb-2"}
    d["gwlb"]["gwlb-2"] = {"address": "10.0.0.20", "geneve": {"option_class": 0x0108},
                           "firewalls": {"fw-1": {"address": "10.0.2.11"}, "fw-9": {"address": "10.0.2.12"}}}
    d["security_policy"]["zones"] = {"gwlb": ["gwlbe-a", "gwlbe-b"]}
    d["nat_gateways"]["nat-a"]["snat"]["sources"] = ["10.1.1.0/24", "10.1.4.0/24"]
    d["security_policy"]["rules"].insert(0, {"name": "allow-web-out-2", "source": ["10.1.4.0/24"], "protocol": "tcp",
                                             "port": [80, 443], "action": "allow"})
    return topology_from_dict(d, "two-gwlbs.yaml")


def _tcp(src, sport, flags, dst="198.51.100.7", dport=80):
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, ttl=64, id=5,
                    data=dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=1000))
    return ETH + bytes(ip)


def _traffic():
    """Mid-stream TCP (no SYN: dropped at the firewall as TCP_NOT_SYN, a drop record naming it) from both app
    subnets, many flows so that every firewall of both fleets takes some; one SYN from each subnet."""
    frames = [_tcp(f"10.1.{net}.{5 + i % 50}", 20000 + i, dpkt.tcp.TH_ACK) for net in (1, 4) for i in range(120)]
    frames += [_tcp("10.1.1.9", 30000, dpkt.tcp.TH_SYN), _tcp("10.1.4.9", 30001, dpkt.tcp.TH_SYN)]
    return gf.PacketBatch.from_packets(frames, ts_ns=np.arange(len(frames), dtype=np.int64) * 1_000_000)


def test_path_index_names_each_firewall_once():
    topo = _two_gwlbs()
    assert topo.firewall_names() == ["gwlb-1/fw-1", "gwlb-1/fw-2", "gwlb-1/fw-3", "gwlb-2/fw-1", "gwlb-2/fw-9"]
    assert topo.firewall_offsets() == {"gwlb-1": 0, "gwlb-2": 3}
    one = topology_from_dict({**copy.deepcopy(EXAMPLE), "events": []}, "one.yaml")
    assert one.firewall_names() == ["fw-1", "fw-2", "fw-3"]


def test_results_records_comments_and_summary_agree(tmp_path):
    batch = _traffic()
    src = batch.copy().parse().src_ip
    pipe = Pipeline(_two_gwlbs())
    res = pipe.process(batch.copy())
    second = (src >> 8 & 0xFF) == 4  # from 10.1.4.0/24: the second GWLB's
    fw = res.fw.astype(int)
    assert (fw >= 0).all()
    assert set(fw[second].tolist()) == {3, 4} and set(fw[~second].tolist()) == {0, 1, 2}
    # the summary counts each packet on the firewall its index names
    s = pipe.summary()
    names = pipe.firewall_names
    for k, name in enumerate(names):
        assert s.firewalls[name]["packets"] == int(np.count_nonzero(fw == k)), name

    write_pcap(tmp_path / "in.pcap", batch)
    drops = tmp_path / "drops.pcapng"
    pipe = Pipeline(_two_gwlbs())
    pipe.run(tmp_path / "in.pcap", tmp_path / "out.pcap", flow_log=tmp_path / "flows.jsonl",
             observers=[DropsWriter(drops)])
    recs = [json.loads(line) for line in (tmp_path / "flows.jsonl").read_text().splitlines()]
    dropped = [r for r in recs if r["end_reason"] == "tcp-not-syn"]
    assert len(dropped) == 240, recs[:3]
    for r in dropped:
        want = "gwlb-2/" if r["src_ip"].startswith("10.1.4.") else "gwlb-1/"
        assert r["firewall"].startswith(want) and r["firewall"] in names, r
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-r", str(drops), "-T", "fields", "-e", "ip.src", "-e", "frame.comment"],
                             capture_output=True, text=True, check=True, timeout=120).stdout
        rows = [line.split("\t") for line in out.splitlines()]
        assert len(rows) == 240
        for ip, comment in rows:
            want = "gwlb-2/" if ip.startswith("10.1.4.") else "gwlb-1/"
            assert f"firewall {want}fw-" in comment, comment


def test_drops_at_the_second_gwlbs_firewalls_are_tcp_not_syn():
    """The premise of the test above: the mid-stream packets are dropped at a firewall, the SYNs pass."""
    batch = _traffic()
    res = Pipeline(_two_gwlbs()).process(batch)
    assert (res.status[:-2] == PktStatus.TCP_NOT_SYN).all()
    assert (res.status[-2:] == PktStatus.OK).all()


if __name__ == "__main__":
    pytest.main([__file__])
