"""DESIGN.md section 8: the stable library entry points, called exactly as written there."""
import importlib.resources

import numpy as np

import gwlb_fast as gf

TOPOLOGY = str(importlib.resources.files("gwlb_fast") / "examples" / "topology.yaml")


def test_section_8_walkthrough(tmp_path):
    gf.write_pcap(tmp_path / "in.pcap", gf.synth.generate(flows=20, packets=600, seed=2))
    batches = []
    for batch in gf.read_pcap(str(tmp_path / "in.pcap"), chunk=256):
        assert batch.src_ip.dtype == np.uint32 and batch.dport.dtype == np.uint16 and batch.status.dtype == np.uint8
        batches.append(batch)
    assert [len(b) for b in batches] == [256, 256, 88]
    gf.write_pcap(str(tmp_path / "out.pcap"), batches)
    assert sum(len(b) for b in gf.read_pcap(str(tmp_path / "out.pcap"))) == 600

    batch = batches[0]
    wire = gf.geneve.encap(batch, src="10.0.0.10", dst="10.0.1.11", endpoint_id=7, attachment_id=8, cookie=9)
    inner = gf.geneve.decap(wire)
    assert inner.packets() == gf.PacketBatch.from_packets(
        [p[14:] for p in batch.packets()], linktype=228).packets()
    assert set(inner.endpoint_id.tolist()) == {7} and set(inner.flow_cookie.tolist()) == {9}

    policy = gf.Policy.from_yaml(TOPOLOGY)
    rule = policy.compile().classify(batch.src_ip, batch.dst_ip, batch.sport, batch.dport, batch.proto)
    assert rule.dtype == np.int32 and rule.shape == (256,) and rule.min() >= -1

    summary = gf.Pipeline.from_yaml(TOPOLOGY).run(str(tmp_path / "in.pcap"), str(tmp_path / "o.pcap"),
                                                   taps=str(tmp_path / "taps"), flow_log=str(tmp_path / "f.jsonl"))
    assert summary.packets_in == 600
