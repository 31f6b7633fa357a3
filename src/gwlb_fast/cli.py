"""The ``gwlb-fast`` command (DESIGN.md section 7).

Exit codes: 0 success, 2 usage or configuration error, 1 unreadable input. Every error is one line,
``gwlb-fast: <file>: <problem>``.
"""
from __future__ import annotations

import argparse
import sys

from .errors import ConfigError, GwlbError


def _build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gwlb-fast", description="Model a GWLB + firewall fleet data path on captures.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # each command module adds its own parser: add_parser(sub) sets func=handler(args) -> int
    _add_run(sub)
    _add_demo(sub)
    command = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    if command in ("run", "demo"):
        return p  # start-up: the other commands' modules are not imported for these
    from . import explain, geneve, scaffold, synth
    from .check import add_cli as add_check

    scaffold.add_cli(sub)
    explain.add_cli(sub)
    add_check(sub)
    synth.add_cli(sub)
    geneve.add_cli(sub)
    return p


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="replay a capture through the modelled GWLB path",
                       description="Replay a capture (as seen on the business side) through the modelled path: "
                                   "route tables, GWLB endpoint, GWLB, firewalls, NAT gateway.")
    p.add_argument("topology", help="topology YAML (DESIGN.md section 6)")
    p.add_argument("input", nargs="+", metavar="INPUT",
                   help="capture to replay (pcap or pcapng); with --ray, several captures or glob patterns")
    p.add_argument("-o", "--output", help="write the delivered packets here (pcapng if the name ends in .pcapng, "
                                          "else pcap); never an input. Several captures: a folder, one NAME.pcap "
                                          "per capture NAME.pcap(ng)[.gz]")
    p.add_argument("--taps", metavar="DIR", help="write one capture per link into DIR, in the output's format "
                                                 "(Geneve links as Geneve frames); several captures: DIR/NAME/")
    p.add_argument("--flow-log", metavar="FILE", help="one record per session (.jsonl or .csv); several captures: "
                                                      "a folder, one NAME.jsonl per capture")
    p.add_argument("--threat-log", metavar="FILE",
                   help="one record per signature alert or URL event (.jsonl; PAN-OS threat-log fields)")
    p.add_argument("--events", metavar="FILE", help="what-if health changes (YAML list of {at, firewall, state})")
    p.add_argument("--drops", metavar="FILE.pcapng",
                   help="every dropped packet, each with a comment: stage, reason, firewall, rule")
    p.add_argument("--report", metavar="FILE.html", help="one self-contained HTML page with charts of the run")
    p.add_argument("--chunk", type=_positive, default=65536, help="packets per batch (default 65536)")
    p.add_argument("--seed", type=int, default=0, help="seed of flow hashing and cookies (default 0)")
    p.add_argument("--pickup", action="store_true", default=None,
                   help="take flows that began before the capture as established at every stage (as the "
                        "topology's replay: {pickup: true})")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="flow-sharded processes (default: every core, or 1 for a capture under 64 MB); each shard "
                        "holds 1/N of every flow table and SNAT port range")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="replay on Ray (pip install 'gwlb-fast[ray]'): several captures one task each; one capture "
                        "cut into byte ranges and flow shards. No ADDRESS: a local instance on every core; else "
                        "'auto', HOST:6379 or ray://HOST:10001. Put it after the captures, or write --ray=ADDRESS")
    p.add_argument("--shards", type=_positive, default=None, metavar="N",
                   help="with --ray and one capture: flow shards, one Ray actor each (default: the cluster's CPUs)")
    p.add_argument("--parts", type=_positive, default=None, metavar="N",
                   help="with --ray and one capture: byte ranges read in parallel (default: the cluster's CPUs, "
                        "at least one per 256 MiB)")
    p.set_defaults(func=_cmd_run)


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {v}")
    return v


def collect_from_here() -> None:
    """The configuration is loaded: the garbage collector that the command line held back (``gwlb_fast``'s start)
    runs again, and leaves what was loaded alone (``gc.freeze``: it lives to the end, and forked workers then do
    not copy its pages by writing the collector's marks)."""
    import gc

    import gwlb_fast

    if gwlb_fast._collect_later:
        gwlb_fast._collect_later = False
        gc.freeze()
        gc.enable()


def _replay(topology, capture, output, taps, flow_log, events, chunk, seed, as_json, quiet, drops=None,
            report=None, pickup=None, threat_log=None, chart_processes: int = 1) -> int:
    from pathlib import Path

    from .outputs.report import UnmatchedHint
    from .pipeline import Pipeline

    if not Path(capture).exists():
        raise FileNotFoundError(2, "no such file", str(capture))
    pipe = Pipeline.from_yaml(topology, taps=taps is not None, seed=seed, pickup=pickup)
    collect_from_here()
    if drops is not None or report is not None:
        from .outputs.outfiles import refuse_overlap

        refuse_overlap([capture, topology, events], [output, flow_log, drops, report, threat_log])
    hint = UnmatchedHint(capture)
    observers = [hint]
    if drops is not None:
        from .outputs.drops import DropsWriter

        observers.append(DropsWriter(drops, inputs=[capture, topology]))
    if report is not None:
        from .outputs.htmlreport import ReportCollector

        observers.append(ReportCollector(report, inputs=[capture, topology], title=Path(capture).name,
                                         processes=chart_processes))
    summary = pipe.run(capture, output, taps=taps, flow_log=flow_log, events=events, chunk=chunk, quiet=quiet,
                       strict=False, observers=observers, threat_log=threat_log)
    return _print_summary(summary, as_json, hint)


# the options `run --workers` merges (any other option given needs one worker)
_PARALLEL_OPTIONS = {"command", "func", "topology", "input", "output", "taps", "flow_log", "events", "chunk", "seed",
                     "json", "quiet", "workers", "pickup", "threat_log", "drops", "report"}
# the options `run --ray` honours (it has no progress line: --quiet holds); any other is refused, not ignored
_RAY_OPTIONS = {"command", "func", "topology", "input", "output", "taps", "flow_log", "events", "chunk", "seed",
                "json", "quiet", "pickup", "ray", "shards", "parts"}
AUTO_WORKERS_MIN_BYTES = 64 << 20  # smaller captures take less time than starting workers saves


def _cores() -> int:
    from .scale.parallel import default_workers

    return default_workers()


def auto_workers(capture, others=()) -> int:
    """The workers of a run that does not say (``--workers`` absent): every core for a capture of
    ``AUTO_WORKERS_MIN_BYTES`` or more when every option given merges across workers (``others``: those that do
    not), else one."""
    from pathlib import Path

    big = Path(capture).is_file() and Path(capture).stat().st_size >= AUTO_WORKERS_MIN_BYTES
    return _cores() if big and not others else 1


def _cmd_run(args) -> int:
    from pathlib import Path

    if args.ray is not None:
        collect_from_here()
        return _cmd_run_ray(args)
    for opt in ("shards", "parts"):
        if getattr(args, opt) is not None:
            raise ConfigError(f"{args.input[0]}: --{opt} needs --ray")
    if len(args.input) > 1:
        raise ConfigError(f"{args.input[1]}: several captures need --ray")
    args.input = args.input[0]
    others = sorted(k for k, v in vars(args).items() if k not in _PARALLEL_OPTIONS and v not in (None, False))
    n = args.workers if args.workers is not None else auto_workers(args.input, others)
    if n > 1 and others:
        opts = ", ".join("--" + k.replace("_", "-") for k in others)
        raise ConfigError(f"{args.input}: {opts} needs --workers 1")
    if n == 1:
        # the report's charts are drawn once the replay is over: on every core, unless --workers said how many
        return _replay(args.topology, args.input, args.output, args.taps, args.flow_log, args.events, args.chunk,
                       args.seed, args.json, args.quiet, drops=args.drops, report=args.report,
                       pickup=args.pickup, threat_log=args.threat_log,
                       chart_processes=1 if args.workers is not None else _cores())
    from .config import load_topology
    from .scale.parallel import run_parallel

    if not Path(args.input).exists():
        raise FileNotFoundError(2, "no such file", str(args.input))
    topo = load_topology(args.topology)
    collect_from_here()
    summary = run_parallel(topo, args.input, args.output, workers=n, taps=args.taps,
                           flow_log=args.flow_log, events=args.events, chunk=args.chunk, seed=args.seed,
                           quiet=args.quiet, strict=False, pickup=args.pickup, threat_log=args.threat_log,
                           drops=args.drops, report=args.report)
    return _print_merged(args, summary)


def _print_merged(args, summary) -> int:
    """Print the summary of a run merged from shards; the exit code."""
    return _print_shards(summary, args.topology, args.input, args.json)


def _print_shards(summary, topology, capture, as_json: bool) -> int:
    from .outputs.report import UnmatchedHint

    hint = UnmatchedHint(capture)
    hint.from_summary(summary, topology, capture)
    return _print_summary(summary, as_json, hint)


def _print_summary(summary, as_json: bool, hint) -> int:
    """Print a run's summary (text or JSON) and its unmatched-route hint; the exit code (1: the input was
    damaged)."""
    print(summary.to_json() if as_json else summary, end="\n" if as_json else "")
    line = hint.line(summary.packets_in)
    if line is not None:
        print(f"gwlb-fast: {line}", file=sys.stderr)
    if summary.input_error:
        print(f"gwlb-fast: {summary.input_error}", file=sys.stderr)
        return 1
    return 0


def _cmd_run_ray(args) -> int:
    from pathlib import Path

    from .scale import distributed

    address = args.ray or None
    # an option the Ray path would not honour is refused, Ray installed or not (never silently ignored)
    others = sorted(k for k, v in vars(args).items() if k not in _RAY_OPTIONS and v not in (None, False))
    if others:
        raise ConfigError(f"{args.input[0]}: {', '.join('--' + k.replace('_', '-') for k in others)} does not "
                          f"work with --ray")
    distributed.require_ray(local=address is None)  # before anything else: say how to install it
    if address is not None and Path(address).is_file():
        raise ConfigError(f"--ray {address}: this is a file, not a cluster address (put --ray after the captures, "
                          f"or write --ray=ADDRESS)")
    captures = distributed.expand_captures(args.input)
    if len(captures) == 1 and len(args.input) == 1 and captures[0] == args.input[0]:
        if not Path(captures[0]).exists():
            raise FileNotFoundError(2, "no such file", captures[0])
        summary = distributed.replay_split(args.topology, captures[0], args.output, taps=args.taps,
                                           flow_log=args.flow_log, events=args.events, parts=args.parts,
                                           shards=args.shards, chunk=args.chunk, seed=args.seed, pickup=args.pickup,
                                           strict=False, address=address)
        return _print_merged(args, summary)
    for opt in ("shards", "parts"):
        if getattr(args, opt) is not None:
            raise ConfigError(f"{captures[0]}: --{opt} splits one capture; several captures are one task each")
    result = distributed.replay_many(args.topology, captures, args.output, flow_log_dir=args.flow_log,
                                     taps_dir=args.taps, events=args.events, chunk=args.chunk, seed=args.seed,
                                     pickup=args.pickup, address=address)
    if args.json:
        import json

        print(json.dumps(result.as_dict(), indent=2))
    else:
        for name, s in result.summaries.items():
            print(f"{name}: {s.packets_in:,} packets in, {s.packets_out:,} out, {s.dropped:,} dropped")
        print(f"total of {len(result.summaries)} captures:")
        print(result.total, end="")
    bad = [s.input_error for s in result.summaries.values() if s.input_error]
    for e in bad:
        print(f"gwlb-fast: {e}", file=sys.stderr)
    return 1 if bad else 0


#: demo --topology NAME -> (shipped example, synth address plan, synth flow mix)
DEMO_TOPOLOGIES = {"distributed": ("topology.yaml", "DEFAULT_PLAN", "DEFAULT_MIX"),
                   "centralized": ("centralized.yaml", "CENTRALIZED_PLAN", "CENTRALIZED_MIX")}


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the shipped topology on synthetic traffic, end to end",
                       description="Generate synthetic business-VPC traffic, replay it through the shipped example "
                                   "topology (examples/topology.yaml, with its scripted firewall failure) and write "
                                   "every output into a folder.")
    p.add_argument("--out", default="gwlb-fast-demo", help="output folder (default ./gwlb-fast-demo)")
    p.add_argument("--topology", choices=DEMO_TOPOLOGIES, default="distributed",
                   help="distributed: examples/topology.yaml (GWLBe and NAT in the business VPC, default); "
                        "centralized: examples/centralized.yaml (two spokes, a security VPC, a transit router, "
                        "east-west and north-south traffic)")
    p.add_argument("--flows", type=_positive, default=1000, help="flows to synthesize (default 1000)")
    p.add_argument("--packets", type=_positive, default=100_000, help="packets to synthesize (default 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from importlib.resources import as_file, files
    from pathlib import Path

    from . import synth
    from .outputs.outfiles import OutputFile
    from .pcapio import write_pcap

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: --out needs a folder, and this is a file")
    out.mkdir(parents=True, exist_ok=True)
    example, plan, mix = DEMO_TOPOLOGIES[args.topology]
    batch = synth.generate(flows=args.flows, packets=args.packets, seed=args.seed, plan=getattr(synth, plan),
                           mix=getattr(synth, mix))
    capture = out / "input.pcap"
    write_pcap(capture, batch)
    if not args.quiet:
        print(f"synthesized {len(batch):,} packets in {args.flows:,} flows -> {capture}", file=sys.stderr)
    n = auto_workers(capture)  # run's rule: every output the demo writes merges across workers
    with as_file(files("gwlb_fast") / "examples" / example) as topo:
        with OutputFile(out / "topology.yaml", text=True) as f:
            f.file.write(Path(topo).read_text())
        if n == 1:
            rc = _replay(topo, capture, out / "output.pcap", out / "taps", out / "flows.jsonl", None, 65536,
                         args.seed, args.json, args.quiet, drops=out / "drops.pcapng", report=out / "report.html",
                         chart_processes=_cores())
        else:
            from .config import load_topology
            from .scale.parallel import run_parallel

            summary = run_parallel(load_topology(topo), capture, out / "output.pcap", workers=n, taps=out / "taps",
                                   flow_log=out / "flows.jsonl", chunk=65536, seed=args.seed, quiet=args.quiet,
                                   strict=False, drops=out / "drops.pcapng", report=out / "report.html")
            rc = _print_shards(summary, topo, capture, args.json)
    if not args.quiet:
        why = "" if n > 1 else f" (every core from {AUTO_WORKERS_MIN_BYTES >> 20} MiB of capture)"
        print(f"replayed on {n} worker{'s' if n > 1 else ''}{why}; outputs in {out}/: output.pcap, taps/*.pcap, "
              f"flows.jsonl, drops.pcapng, report.html, topology.yaml", file=sys.stderr)
    return rc


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser(argv)
    args = parser.parse_args(argv)
    if args.command != "run":
        collect_from_here()  # the other commands load as they go
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"gwlb-fast: {e}", file=sys.stderr)
        return 2
    except GwlbError as e:
        print(f"gwlb-fast: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"gwlb-fast: {e.filename}: no such file", file=sys.stderr)
        return 1
    except IsADirectoryError as e:
        print(f"gwlb-fast: {e.filename}: is a directory", file=sys.stderr)
        return 1
    except PermissionError as e:
        print(f"gwlb-fast: {e.filename}: permission denied", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gwlb-fast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
