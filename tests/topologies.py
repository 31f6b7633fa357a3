"""Topologies written for tests that replay real captures: the capture's private hosts in the app subnet of one
VPC (with the GWLBe and NAT subnets beside it), the example's GWLB with three firewalls, and an allow-all policy."""
import copy

import yaml

from gwlb_fast.config import example_topology_text, topology_from_dict

EXAMPLE = yaml.safe_load(example_topology_text())


def capture_topology(vpc: str, app: str, gwlbe: str, nat: str, *, dnat=None, rules=None, name="capture.yaml",
                     **policy):
    """The example topology moved to VPC ``vpc`` (app, GWLBe and NAT subnets given as CIDRs), no events, the
    example's GWLB, a NAT gateway SNAT'ing the app subnet (DNAT rules ``dnat``) and ``rules`` (allow-all by
    default)."""
    d = copy.deepcopy(EXAMPLE)
    b = d["vpcs"]["business"]
    b["cidr"] = vpc
    b["subnets"]["app"]["cidr"] = app
    b["subnets"]["gwlbe"]["cidr"] = gwlbe
    b["subnets"]["nat"]["cidr"] = nat
    b["route_tables"] = {
        "app": [{"dst": "0.0.0.0/0", "via": "gwlbe:gwlbe-a"}],
        "gwlbe": [{"dst": "0.0.0.0/0", "via": "natgw:nat-a"}, {"dst": app, "via": "local"}],
        "nat": [{"dst": app, "via": "gwlbe:gwlbe-a"}, {"dst": "0.0.0.0/0", "via": "internet"}],
    }
    d["nat_gateways"]["nat-a"]["snat"]["sources"] = [app]
    d["nat_gateways"]["nat-a"]["dnat"] = list(dnat or [])
    d["security_policy"]["rules"] = rules if rules is not None else [{"name": "allow-all", "action": "allow"}]
    d["security_policy"].update(policy)
    d["events"] = []
    return topology_from_dict(d, name)
