"""PAN-OS / Panorama XML import: same verdicts as the equivalent YAML; what is not modelled is listed by XPath."""
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast.errors import ConfigError
from gwlb_fast.inspect.applications import APP_ID, APP_PENDING
from gwlb_fast.stages.policy import Policy

# A firewall export, written after PAN-OS's configuration schema (/config/devices/entry/vsys/entry/...).
FIREWALL_XML = """<?xml version="1.0"?>
<config version="10.2.0" urldb="paloaltonetworks">
  <devices>
    <entry name="localhost.localdomain">
      <vsys>
        <entry name="vsys1">
          <zone>
            <entry name="gwlb"><network><layer3><member>ethernet1/1.1</member></layer3></network></entry>
            <entry name="mgmt-zone"><network><layer3><member>ethernet1/2</member></layer3></network></entry>
          </zone>
          <address>
            <entry name="app-subnet"><ip-netmask>10.1.1.0/24</ip-netmask></entry>
            <entry name="web-srv"><ip-netmask>10.1.1.20</ip-netmask><description>web server</description></entry>
            <entry name="pool"><ip-range>10.1.2.10-10.1.2.20</ip-range></entry>
            <entry name="cdn"><fqdn>cdn.example.net</fqdn></entry>
          </address>
          <address-group>
            <entry name="servers"><static><member>web-srv</member><member>pool</member></static></entry>
            <entry name="tagged"><dynamic><filter>'prod'</filter></dynamic></entry>
          </address-group>
          <service>
            <entry name="svc-8443"><protocol><tcp><port>8443</port></tcp></protocol></entry>
            <entry name="svc-alt"><protocol><tcp><port>8000-8080,9000</port></tcp></protocol></entry>
            <entry name="svc-dns"><protocol><udp><port>53</port><source-port>1024-65535</source-port></udp></protocol></entry>
          </service>
          <service-group>
            <entry name="alt-web"><members><member>svc-alt</member><member>service-https</member></members></entry>
          </service-group>
          <application-group>
            <entry name="web-apps"><members><member>web-browsing</member><member>ssl</member></members></entry>
          </application-group>
          <profiles>
            <custom-url-category>
              <entry name="blocked-sites"><list><member>*.example.com</member><member>host.test</member></list><type>URL List</type></entry>
              <entry name="match-cat"><list><member>news</member></list><type>Category Match</type></entry>
            </custom-url-category>
            <url-filtering>
              <entry name="web-filter">
                <alert><member>news</member></alert>
                <block><member>blocked-sites</member><member>malware</member></block>
                <credential-enforcement><mode><disabled/></mode></credential-enforcement>
              </entry>
            </url-filtering>
            <vulnerability>
              <entry name="strict-vuln"><rules>
                <entry name="severe"><action><block-ip><track-by>source-and-destination</track-by><duration>120</duration></block-ip></action><severity><member>critical</member>
                  <member>high</member></severity><threat-name>any</threat-name><host>any</host></entry>
                <entry name="rest"><action><alert/></action><severity><member>any</member></severity></entry>
              </rules></entry>
            </vulnerability>
            <spyware>
              <entry name="default-spy"><rules><entry name="all"><action><default/></action>
                <severity><member>any</member></severity></entry></rules></entry>
            </spyware>
            <virus><entry name="av"><decoder/></entry></virus>
          </profiles>
          <profile-group>
            <entry name="std"><url-filtering><member>web-filter</member></url-filtering>
              <spyware><member>default-spy</member></spyware><virus><member>av</member></virus></entry>
          </profile-group>
          <rulebase>
            <security>
              <rules>
                <entry name="block-bad" uuid="0b7e1a4c-0000-4000-8000-000000000001">
                  <from><member>gwlb</member></from><to><member>gwlb</member></to>
                  <source><member>app-subnet</member></source><destination><member>any</member></destination>
                  <source-user><member>any</member></source-user>
                  <category><member>blocked-sites</member><member>malware</member></category>
                  <application><member>web-apps</member></application>
                  <service><member>application-default</member></service>
                  <action>reset-both</action>
                </entry>
                <entry name="web-out">
                  <from><member>gwlb</member></from><to><member>gwlb</member></to>
                  <source><member>app-subnet</member></source><destination><member>any</member></destination>
                  <category><member>any</member></category>
                  <application><member>web-apps</member></application>
                  <service><member>application-default</member></service>
                  <action>allow</action>
                  <profile-setting><group><member>std</member></group></profile-setting>
                  <log-end>yes</log-end><tag><member>outbound</member></tag>
                </entry>
                <entry name="alt-web">
                  <from><member>any</member></from><to><member>any</member></to>
                  <source><member>any</member></source><destination><member>any</member></destination>
                  <application><member>any</member></application>
                  <service><member>alt-web</member></service>
                  <action>allow</action>
                  <profile-setting><profiles><vulnerability><member>strict-vuln</member></vulnerability></profiles></profile-setting>
                </entry>
                <entry name="dns">
                  <from><member>gwlb</member></from><to><member>gwlb</member></to>
                  <source><member>app-subnet</member></source>
                  <destination><member>8.8.8.8</member><member>10.0.0.0/8</member></destination>
                  <application><member>dns</member></application>
                  <service><member>application-default</member></service>
                  <action>allow</action>
                  <profile-setting><profiles><spyware><member>default-spy</member></spyware></profiles></profile-setting>
                </entry>
                <entry name="to-servers">
                  <from><member>any</member></from><to><member>any</member></to>
                  <source><member>any</member></source><destination><member>servers</member></destination>
                  <application><member>any</member></application>
                  <service><member>svc-8443</member><member>svc-dns</member></service>
                  <action>allow</action>
                </entry>
                <entry name="cdn-only">
                  <from><member>any</member></from><to><member>any</member></to>
                  <source><member>any</member></source><destination><member>cdn</member></destination>
                  <application><member>any</member></application><service><member>any</member></service>
                  <action>allow</action>
                </entry>
                <entry name="old-rule">
                  <from><member>any</member></from><to><member>any</member></to>
                  <source><member>any</member></source><destination><member>any</member></destination>
                  <application><member>any</member></application><service><member>any</member></service>
                  <action>allow</action><disabled>yes</disabled>
                </entry>
                <entry name="alice">
                  <from><member>any</member></from><to><member>any</member></to>
                  <source><member>any</member></source><destination><member>any</member></destination>
                  <source-user><member>corp\\alice</member></source-user>
                  <application><member>ssh</member><member>facebook-base</member></application>
                  <service><member>any</member></service>
                  <action>allow</action>
                </entry>
                <entry name="deny-rest">
                  <from><member>any</member></from><to><member>any</member></to>
                  <source><member>any</member></source><destination><member>any</member></destination>
                  <application><member>any</member></application><service><member>any</member></service>
                  <action>drop</action>
                </entry>
              </rules>
            </security>
            <default-security-rules>
              <rules><entry name="intrazone-default"><action>deny</action></entry></rules>
            </default-security-rules>
          </rulebase>
        </entry>
      </vsys>
    </entry>
  </devices>
</config>
"""

# The same policy in the topology's YAML (the rules the import models, in order).
EQUIVALENT_YAML = """
security_policy:
  zones: {gwlb: [gwlbe-a], mgmt-zone: []}
  url_database: cats.csv
  url_categories: {blocked-sites: ["*.example.com", "host.test"]}
  profiles:
    web-filter: {url_filtering: {alert: [news], block: [blocked-sites, malware]}}
    strict-vuln: {threat: {action: alert, severity: {critical: block-ip, high: block-ip},
                           block_ip: {track_by: source-and-destination, duration: 120}}}
    default-spy: {threat: {action: default}}
    std: {group: [web-filter, default-spy]}
  rules:
    - {name: block-bad, from: gwlb, to: gwlb, source: 10.1.1.0/24, category: [blocked-sites, malware],
       application: [web-browsing, ssl], service: application-default, action: reset-both}
    - {name: web-out, from: gwlb, to: gwlb, source: 10.1.1.0/24, application: [web-browsing, ssl],
       service: application-default, profile: [std], action: allow}
    - {name: alt-web, service: ["tcp/8000-8080", "tcp/9000", "tcp/443"], profile: [strict-vuln], action: allow}
    - {name: dns, from: gwlb, to: gwlb, source: 10.1.1.0/24, destination: [8.8.8.8/32, 10.0.0.0/8],
       application: [dns], service: application-default, profile: [default-spy], action: allow}
    - {name: to-servers, destination: [10.1.1.20/32, 10.1.2.10-10.1.2.20], service: ["tcp/8443", "udp/53"],
       action: allow}
    - {name: alice, application: [ssh], action: allow}
    - {name: deny-rest, action: drop}
"""

CATS_CSV = "domain,category\nnews.example.org,news\nbad.test,malware\n"


@pytest.fixture
def pair(tmp_path):
    (tmp_path / "cats.csv").write_text(CATS_CSV)
    (tmp_path / "running-config.xml").write_text(FIREWALL_XML)
    (tmp_path / "topology.yaml").write_text(textwrap.dedent(EQUIVALENT_YAML))
    (tmp_path / "panos.yaml").write_text(textwrap.dedent("""
        security_policy:
          panos: running-config.xml
          zones: {gwlb: [gwlbe-a]}
          url_database: cats.csv
        """))
    return Policy.from_yaml(tmp_path / "panos.yaml"), Policy.from_yaml(tmp_path / "topology.yaml")


def _trace(n, seed):
    rng = np.random.default_rng(seed)
    src = rng.choice(np.array([0x0A010105, 0x0A0101FE, 0x0A020203, 0xC0A80001], np.uint32), n)
    dst = rng.choice(np.array([0x08080808, 0x0A010114, 0x0A01020F, 0x0A010215, 0x5DB8D822, 0x0A000001],
                              np.uint32), n)
    dport = rng.choice(np.array([22, 53, 80, 443, 8000, 8080, 8443, 9000, 9001], np.uint16), n)
    proto = rng.choice(np.array([6, 17], np.uint8), n)
    sport = rng.integers(1, 65535, n).astype(np.uint16)
    zone = rng.choice(np.array([0, 1, 255], np.uint8), n)
    app = rng.choice(np.array([APP_PENDING] + [APP_ID[a] for a in ("web-browsing", "ssl", "dns", "ssh", "quic",
                                                                     "unknown-tcp")], np.uint16), n)
    hosts = rng.choice(np.array(["www.example.com", "host.test", "news.example.org", "bad.test", "plain.net", ""],
                                object), n)
    hosts = [None if h == "" else h for h in hosts]
    cols = {"src_ip": src, "dst_ip": dst, "sport": sport, "dport": dport, "proto": proto, "zone_from": zone,
            "zone_to": zone}
    return cols, app, hosts


def test_panos_xml_gives_the_same_verdicts_as_the_yaml(pair):
    xml_pol, yaml_pol = pair
    assert xml_pol.rule_names == yaml_pol.rule_names == ["block-bad", "web-out", "alt-web", "dns", "to-servers",
                                                         "alice", "deny-rest"]
    assert xml_pol.zone_names == yaml_pol.zone_names == ["gwlb", "mgmt-zone"]
    assert xml_pol.endpoint_zone == {"gwlbe-a": 0}
    assert xml_pol.url_categories.names == yaml_pol.url_categories.names
    assert xml_pol.default_action == yaml_pol.default_action
    cols, app, hosts = _trace(4000, 7)
    xc, yc = xml_pol.compile(), yaml_pol.compile()
    _, xcat = xml_pol.url_categories.categorize(hosts)
    _, ycat = yaml_pol.url_categories.categorize(hosts)
    np.testing.assert_array_equal(xcat, ycat)
    for kw in ({}, {"app": app}, {"app": app, "category": xcat}):
        xr, yr = xc.classify(**cols, **kw), yc.classify(**cols, **kw)
        np.testing.assert_array_equal(xr, yr)
        np.testing.assert_array_equal(xml_pol.action_of(xr), yaml_pol.action_of(yr))
        np.testing.assert_array_equal(xml_pol.url_action(xr, xcat), yaml_pol.url_action(yr, ycat))
        sig = np.arange(len(xr)) % 3
        sev = np.arange(len(xr)) % 6
        np.testing.assert_array_equal(xml_pol.threat_action(xr, sig), yaml_pol.threat_action(yr, sig))
        np.testing.assert_array_equal(xml_pol.threat_action(xr, sig, sev), yaml_pol.threat_action(yr, sig, sev))
        for a, b in zip(xml_pol.profiles.block_ip(xr), yaml_pol.profiles.block_ip(yr)):
            np.testing.assert_array_equal(a, b)
    pair_, dur = xml_pol.profiles.block_ip(np.array([xml_pol.rule_names.index("alt-web")]))
    assert pair_.tolist() == [True] and dur.tolist() == [120 * 10**9]
    # The trace reaches every rule (deny-rest catches the rest).
    r = xc.classify(**cols, app=app, category=xcat)
    assert set(r.tolist()) == set(range(len(xml_pol.rules)))


def test_unsupported_elements_are_listed_with_their_xpath(pair):
    xml_pol, _ = pair
    vs = "/config/devices/entry[@name='localhost.localdomain']/vsys/entry[@name='vsys1']"
    rules = f"{vs}/rulebase/security/rules"
    got = dict(xml_pol.unsupported)
    want = [
        f"{vs}/address/entry[@name='cdn']/fqdn",
        f"{vs}/address-group/entry[@name='tagged']/dynamic",
        f"{vs}/service/entry[@name='svc-dns']/protocol/udp/source-port",
        f"{vs}/profiles/custom-url-category/entry[@name='match-cat']/type",
        f"{vs}/profiles/url-filtering/entry[@name='web-filter']/credential-enforcement",
        f"{vs}/profiles/virus/entry[@name='av']",
        f"{vs}/profile-group/entry[@name='std']/virus",
        f"{rules}/entry[@name='cdn-only']/destination/member[text()='cdn']",
        f"{rules}/entry[@name='cdn-only']",
        f"{rules}/entry[@name='old-rule']",
        f"{rules}/entry[@name='alice']/source-user",
        f"{rules}/entry[@name='alice']/application/member[text()='facebook-base']",
    ]
    for xp in want:
        assert xp in got, (xp, sorted(got))
    assert "disabled" in got[f"{rules}/entry[@name='old-rule']"]
    assert "not imported" in got[f"{rules}/entry[@name='cdn-only']"]
    # Everything listed is an element of the file (the XPath resolves in the document).
    import xml.etree.ElementTree as ET
    root = ET.fromstring(FIREWALL_XML)
    for xp, _ in xml_pol.unsupported:
        rel = "." + xp[len("/config"):]
        rel = rel.replace("/member[text()=", "/member[.=")
        assert root.find(rel) is not None, xp
    assert len(got) == len(want)


PANORAMA_XML = """<config version="10.2.0">
  <devices><entry name="localhost.localdomain">
    <template><entry name="t1"><config><devices><entry name="localhost.localdomain"><vsys><entry name="vsys1">
      <zone><entry name="trust"/><entry name="untrust"/></zone>
    </entry></vsys></entry></devices></config></entry></template>
    <device-group>
      <entry name="dg-east">
        <address><entry name="srv"><ip-netmask>10.2.0.5/32</ip-netmask></entry></address>
        <pre-rulebase><security><rules>
          <entry name="dg-pre"><from><member>trust</member></from><to><member>any</member></to>
            <source><member>any</member></source><destination><member>srv</member></destination>
            <application><member>any</member></application><service><member>any</member></service>
            <action>deny</action></entry>
        </rules></security></pre-rulebase>
        <post-rulebase><security><rules>
          <entry name="dg-post"><from><member>any</member></from><to><member>any</member></to>
            <source><member>any</member></source><destination><member>any</member></destination>
            <application><member>ssh</member></application><service><member>any</member></service>
            <action>reset-client</action></entry>
        </rules></security></post-rulebase>
      </entry>
      <entry name="dg-west"/>
    </device-group>
  </entry></devices>
  <shared>
    <address><entry name="srv"><ip-netmask>192.0.2.1/32</ip-netmask></entry></address>
    <pre-rulebase><security><rules>
      <entry name="shared-pre"><from><member>any</member></from><to><member>any</member></to>
        <source><member>any</member></source><destination><member>srv</member></destination>
        <application><member>any</member></application><service><member>svc-x</member></service>
        <action>allow</action></entry>
    </rules></security></pre-rulebase>
    <post-rulebase><security><rules>
      <entry name="shared-post"><from><member>any</member></from><to><member>any</member></to>
        <source><member>any</member></source><destination><member>any</member></destination>
        <application><member>any</member></application><service><member>any</member></service>
        <action>allow</action></entry>
    </rules></security></post-rulebase>
    <service><entry name="svc-x"><protocol><tcp><port>8443</port></tcp></protocol></entry></service>
  </shared>
</config>
"""


def test_panorama_device_group_rule_order_and_object_scopes(tmp_path):
    path = tmp_path / "panorama.xml"
    path.write_text(PANORAMA_XML)
    with pytest.raises(ConfigError, match="2 device groups \\(dg-east, dg-west\\): name one with panos.device_group"):
        Policy.from_panos(path)
    with pytest.raises(ConfigError, match="no device group 'dg-north'"):
        Policy.from_panos(path, device_group="dg-north")
    pol = Policy.from_panos(path, zones={"trust": ["gwlbe-a"]}, device_group="dg-east")
    # Shared pre-rules, device-group pre-rules, device-group post-rules, shared post-rules.
    assert pol.rule_names[:4] == ["shared-pre", "dg-pre", "dg-post", "shared-post"]
    assert pol.zone_names == ["trust", "untrust"] and pol.endpoint_zone == {"gwlbe-a": 0}
    # The device group's 'srv' hides the shared one, in the shared rules too (as Panorama resolves on push).
    assert pol.rules[0].dst == ((0x0A020005, 0x0A020005),) == pol.rules[1].dst
    assert pol.rules[0].l4 == (((6, 6), (8443, 8443)),)
    assert pol.rules[2].application == (APP_ID["ssh"],)
    # Default rules: intrazone-default allow (unlike the interzone default, deny) -> one rule per zone.
    pol2 = Policy.from_yaml({"security_policy": {"panos": {"file": str(path), "device_group": "dg-east"}}})
    assert pol2.rule_names[-2:] == ["intrazone-default:trust", "intrazone-default:untrust"]
    assert pol2.default_action.name == "DENY"


@pytest.mark.parametrize("text, problem", [
    ("<config><devices/></config>", "no vsys \\(firewall\\) and no device group"),
    ("<notconfig/>", "not a PAN-OS configuration"),
    ("<config><devices>", "invalid XML"),
])
def test_bad_files(tmp_path, text, problem):
    path = tmp_path / "x.xml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path}: {problem}"):
        Policy.from_panos(path)
    with pytest.raises(ConfigError, match="cannot read"):
        Policy.from_panos(tmp_path / "missing.xml")


def test_zone_mapping_must_name_configured_zones(tmp_path):
    path = tmp_path / "fw.xml"
    path.write_text(FIREWALL_XML)
    with pytest.raises(ConfigError, match="zone 'dmz' of the topology's zones mapping is not a zone"):
        Policy.from_panos(path, zones={"dmz": ["gwlbe-a"]})
    with pytest.raises(ConfigError, match="not allowed with 'panos'"):
        Policy.from_yaml({"security_policy": {"panos": str(path), "rules": []}})


def _export_topology(tmp_path) -> Path:
    """The shipped example topology with its policy from FIREWALL_XML and a URL database (files in tmp_path)."""
    import yaml

    example = Path(__file__).resolve().parents[1] / "src" / "gwlb_fast" / "examples" / "topology.yaml"
    data = yaml.safe_load(example.read_text())
    data["security_policy"] = {"panos": "running-config.xml", "zones": {"gwlb": ["gwlbe-a"]},
                               "url_database": "cats.csv"}
    (tmp_path / "running-config.xml").write_text(FIREWALL_XML)
    (tmp_path / "cats.csv").write_text(CATS_CSV)
    topo = tmp_path / "topology.yaml"
    topo.write_text(yaml.safe_dump(data))
    return topo


def test_check_lists_unsupported_elements_and_the_pipeline_loads_the_export(tmp_path, capsys):
    import json

    from gwlb_fast.cli import main
    from gwlb_fast.pipeline import Pipeline

    topo = _export_topology(tmp_path)
    assert main(["check", str(topo), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    unsup = [f for f in out["findings"] if f["kind"] == "unsupported"]
    assert len(unsup) == 12 and all(f["path"].startswith(f"{tmp_path / 'running-config.xml'}:/config/")
                                     for f in unsup)
    pipe = Pipeline.from_yaml(topo)
    assert pipe.policy.rule_names[0] == "block-bad" and pipe.policy.url_categories.names[-1] == "unknown"


def test_the_export_and_the_url_database_are_inputs_no_output_overwrites(tmp_path, capsys):
    from gwlb_fast.cli import main

    topo = _export_topology(tmp_path)
    pol = Policy.from_yaml(topo)
    assert pol.input_files == [tmp_path / "running-config.xml", tmp_path / "cats.csv"]
    cap = tmp_path / "in.pcap"
    assert main(["synth", "-o", str(cap), "--flows", "5", "--packets", "50"]) == 0
    for victim in ("running-config.xml", "cats.csv"):
        before = (tmp_path / victim).read_bytes()
        assert main(["run", str(topo), str(cap), "-o", str(tmp_path / victim), "--quiet"]) == 2
        assert "refusing to overwrite" in capsys.readouterr().err
        assert (tmp_path / victim).read_bytes() == before


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_mutated_exports_load_or_fail_with_one_config_error(tmp_path_factory, data):
    """Elements dropped, texts and names replaced at random: a Policy (and its unsupported list) or a ConfigError."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(FIREWALL_XML)
    nodes = list(root.iter())[1:]
    for _ in range(data.draw(st.integers(1, 6))):
        victim = nodes[data.draw(st.integers(0, len(nodes) - 1))]
        op = data.draw(st.sampled_from(["drop", "text", "name"]))
        if op == "drop":
            for parent in root.iter():
                if victim in list(parent):
                    parent.remove(victim)
                    break
        elif op == "text":
            victim.text = data.draw(st.sampled_from(["", "any", "10.1.1.1-abc", "tcp", "80,x", "yes", "*", "::1"]))
        else:
            victim.set("name", data.draw(st.sampled_from(["", "gwlb", "web-apps", "std", "dup"])))
    path = tmp_path_factory.mktemp("fuzz") / "fw.xml"
    path.write_bytes(ET.tostring(root))
    try:
        pol = Policy.from_panos(path, zones={"gwlb": ["gwlbe-a"]})
    except ConfigError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return
    pol.compile()
    assert all(isinstance(xp, str) and xp.startswith("/config") for xp, _ in pol.unsupported)
