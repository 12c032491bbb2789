"""Who is caused by whom: the graph of components and the topics between them.

Built from component manifests alone: a component *consumes* its trigger
filters and *produces* its output topics and its errors topic. Component A
causes component B when a topic A produces matches a filter B consumes (MQTT
matching rules, ``edge.model.topics.matches``).

Without a device, ``{thing}`` stays a symbol: ``thumbnails/{thing}/ready``
matches ``thumbnails/+/ready`` and ``thumbnails/{thing}/ready``, meaning "this
device's". With a device it is rendered with the device's thing name.

Findings are warnings, never errors: a cycle is legitimate (acknowledgements),
an output nobody consumes may be for the cloud, a trigger nobody produces is
fed from outside (sensors, cameras).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import ToolMissing, UsageError
from edge.model._reader import did_you_mean
from edge.model.component import MANIFEST_NAMES, ComponentManifest, load_component
from edge.model.topics import matches, render

THING_SYMBOL = "{thing}"


@dataclass(frozen=True)
class Link:
    """``producer`` publishes ``topic``, which ``consumer``'s trigger ``topic_filter`` matches."""

    producer: str
    topic: str
    topic_filter: str
    consumer: str
    errors: bool = False  # the producer's errors topic, not one of its outputs


@dataclass
class Graph:
    components: list[str]
    triggers: dict[str, list[str]]  # component -> rendered trigger filters
    outputs: dict[str, list[str]]  # component -> rendered output topics
    errors_topics: dict[str, str]
    links: list[Link]
    cycles: list[list[str]] = field(default_factory=list)
    unconsumed: list[tuple[str, str]] = field(default_factory=list)  # (component, topic)
    unproduced: list[tuple[str, str]] = field(default_factory=list)  # (component, filter)
    missing: list[str] = field(default_factory=list)  # deployed but not found locally

    @property
    def topics(self) -> list[str]:
        names = {t for ts in self.triggers.values() for t in ts}
        names |= {t for ts in self.outputs.values() for t in ts}
        names |= {link.topic for link in self.links}
        return sorted(names)

    def warnings(self) -> list[str]:
        lines = [
            f"cycle: {' -> '.join(cycle)} (legitimate for acknowledgements; check it ends)"
            for cycle in self.cycles
        ]
        lines += [f"output nobody consumes: {c} -> {t}" for c, t in self.unconsumed]
        lines += [
            f"trigger nobody produces: {t} -> {c} (fed from outside the components)"
            for c, t in self.unproduced
        ]
        lines += [f"deployed but not found in the components folder: {n}" for n in self.missing]
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "components": [
                {
                    "name": name,
                    "triggers": self.triggers[name],
                    "outputs": self.outputs[name],
                    "errors_topic": self.errors_topics[name],
                }
                for name in self.components
            ],
            "links": [link.__dict__ for link in self.links],
            "cycles": self.cycles,
            "unconsumed_outputs": [{"component": c, "topic": t} for c, t in self.unconsumed],
            "unproduced_triggers": [{"component": c, "filter": t} for c, t in self.unproduced],
            "missing": self.missing,
            "warnings": self.warnings(),
        }


def load_manifests(directory: Path) -> list[ComponentManifest]:
    """Every component folder directly under ``directory`` (one holding a manifest)."""
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such folder of components")
    folders = sorted(
        p for p in directory.iterdir()
        if p.is_dir() and any((p / n).is_file() for n in MANIFEST_NAMES)
    )
    manifests = [load_component(folder) for folder in folders]
    seen: dict[str, ComponentManifest] = {}
    for m in manifests:
        if m.name in seen:
            raise UsageError(
                f"{m.source}: name: {m.name!r} is also the name of {seen[m.name].source}"
            )
        seen[m.name] = m
    return manifests


def build_graph(manifests: Sequence[ComponentManifest], thing: str = THING_SYMBOL) -> Graph:
    names = sorted(m.name for m in manifests)
    by_name = {m.name: m for m in manifests}
    triggers = {
        n: [render(t.topic, thing=thing, component=n) for t in by_name[n].triggers] for n in names
    }
    outputs = {
        n: [render(o.topic, thing=thing, component=n) for o in by_name[n].outputs] for n in names
    }
    errors = {n: render(by_name[n].errors_topic, thing=thing, component=n) for n in names}
    links: list[Link] = []
    for producer in names:
        produced = [(t, False) for t in outputs[producer]] + [(errors[producer], True)]
        for topic, is_errors in produced:
            for consumer in names:
                for topic_filter in triggers[consumer]:
                    if matches(topic_filter, topic):
                        links.append(Link(producer, topic, topic_filter, consumer, is_errors))
    graph = Graph(names, triggers, outputs, errors, links)
    graph.unconsumed = [
        (c, t) for c in names for t in outputs[c]
        if not any(link.producer == c and link.topic == t for link in links)
    ]
    graph.unproduced = [
        (c, f) for c in names for f in triggers[c]
        if not any(link.consumer == c and link.topic_filter == f for link in links)
    ]
    graph.cycles = _cycles(names, links)
    return graph


def _cycles(names: Sequence[str], links: Sequence[Link]) -> list[list[str]]:
    """One cycle per strongly connected component (Tarjan), as component/topic steps."""
    succ: dict[str, list[Link]] = {n: [] for n in names}
    for link in links:
        succ[link.producer].append(link)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for link in succ[v]:
            w = link.consumer
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            sccs.append(sorted(scc))

    for n in names:
        if n not in index:
            strongconnect(n)
    cycles = []
    for scc in sorted(sccs):
        members = set(scc)
        start = scc[0]
        if len(scc) == 1 and not any(link.consumer == start for link in succ[start]):
            continue
        path = _path_back(start, start, succ, members)
        if path:
            cycles.append(path)
    return cycles


def _path_back(
    start: str, goal: str, succ: dict[str, list[Link]], members: set[str]
) -> list[str]:
    """A shortest walk start -> ... -> goal inside ``members`` (BFS), with the topics."""
    frontier: list[list[str]] = [[start]]
    seen: set[str] = set()
    while frontier:
        nxt: list[list[str]] = []
        for path in frontier:
            for link in succ[path[-1]]:
                if link.consumer not in members:
                    continue
                step = [*path, link.topic, link.consumer]
                if link.consumer == goal:
                    return step
                if link.consumer not in seen:
                    seen.add(link.consumer)
                    nxt.append(step)
        frontier = nxt
    return []


def why(graph: Graph, component: str) -> list[list[str]]:
    """Every chain of topics and components that leads to ``component``.

    A chain starts at a topic fed from outside (a trigger nobody produces), or at
    a component with no triggers, and alternates topic, component, topic, ...,
    ending with ``component``. A component appears at most once per chain, so
    cycles end a chain instead of looping.
    """
    if component not in graph.triggers:
        hint = did_you_mean(component, graph.components)
        known = ", ".join(graph.components) or "none"
        raise UsageError(f"--why: unknown component {component!r}{hint} (known: {known})")
    incoming: dict[str, list[Link]] = {n: [] for n in graph.components}
    for link in graph.links:
        incoming[link.consumer].append(link)
    external = {(c, f) for c, f in graph.unproduced}
    chains: list[list[str]] = []

    def walk(node: str, tail: list[str], visited: frozenset[str]) -> None:
        starts = [f for f in graph.triggers[node] if (node, f) in external]
        for topic_filter in starts:
            chains.append([topic_filter, node, *tail])
        extended = False
        for link in incoming[node]:
            if link.producer not in visited:
                extended = True
                walk(link.producer, [link.topic, node, *tail], visited | {link.producer})
        if not starts and not extended:
            chains.append([node, *tail])  # no triggers, or reached only through a cycle

    walk(component, [], frozenset({component}))
    unique: list[list[str]] = []
    for chain in chains:
        if chain not in unique:
            unique.append(chain)
    return sorted(unique, key=lambda c: (len(c), c))


# -- formats ----------------------------------------------------------------------------


def to_text(graph: Graph) -> str:
    lines = [f"{len(graph.components)} component(s), {len(graph.topics)} topic(s)", ""]
    for name in graph.components:
        lines.append(name)
        for topic_filter in graph.triggers[name]:
            sources = sorted(
                {lk.producer for lk in graph.links
                 if lk.consumer == name and lk.topic_filter == topic_filter}
            )
            origin = ", ".join(sources) if sources else "outside"
            lines.append(f"  <- {topic_filter}  (from {origin})")
        for topic in graph.outputs[name]:
            targets = sorted(
                {lk.consumer for lk in graph.links if lk.producer == name and lk.topic == topic}
            )
            lines.append(f"  -> {topic}  (to {', '.join(targets) if targets else 'nobody'})")
        err_targets = sorted(
            {lk.consumer for lk in graph.links if lk.producer == name and lk.errors}
        )
        if err_targets:
            lines.append(f"  -> {graph.errors_topics[name]}  (errors, to {', '.join(err_targets)})")
    warnings = graph.warnings()
    if warnings:
        lines += ["", "warnings:"] + [f"  {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def _topic_nodes(graph: Graph) -> list[str]:
    shown = {t for ts in graph.triggers.values() for t in ts}
    shown |= {t for ts in graph.outputs.values() for t in ts}
    shown |= {lk.topic for lk in graph.links if lk.errors}
    return sorted(shown)


def _edges(graph: Graph) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(producer/consumer edges, topic-matches-filter edges), as node keys."""
    solid: list[tuple[str, str]] = []
    for name in graph.components:
        solid += [(f"t:{f}", f"c:{name}") for f in graph.triggers[name]]
        solid += [(f"c:{name}", f"t:{t}") for t in graph.outputs[name]]
    dashed: list[tuple[str, str]] = []
    for lk in graph.links:
        if lk.errors:
            solid.append((f"c:{lk.producer}", f"t:{lk.topic}"))
        if lk.topic != lk.topic_filter:
            dashed.append((f"t:{lk.topic}", f"t:{lk.topic_filter}"))
    return sorted(set(solid)), sorted(set(dashed))


def to_mermaid(graph: Graph) -> str:
    ids: dict[str, str] = {}
    lines = ["flowchart LR"]
    for i, name in enumerate(graph.components):
        ids[f"c:{name}"] = f"c{i}"
        lines.append(f'  c{i}["{_mermaid_label(name)}"]')
    for i, topic in enumerate(_topic_nodes(graph)):
        ids[f"t:{topic}"] = f"t{i}"
        lines.append(f'  t{i}(["{_mermaid_label(topic)}"])')
    solid, dashed = _edges(graph)
    lines += [f"  {ids[a]} --> {ids[b]}" for a, b in solid]
    lines += [f"  {ids[a]} -. matches .-> {ids[b]}" for a, b in dashed]
    return "\n".join(lines) + "\n"


def _mermaid_label(text: str) -> str:
    return text.replace('"', "#quot;")


def to_dot(graph: Graph) -> str:
    lines = [
        "digraph components {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=11];',
    ]
    for name in graph.components:
        lines.append(f"  {_q('c:' + name)} [label={_q(name)}, shape=box, style=rounded];")
    for topic in _topic_nodes(graph):
        lines.append(f"  {_q('t:' + topic)} [label={_q(topic)}, shape=ellipse, color=gray40];")
    solid, dashed = _edges(graph)
    lines += [f"  {_q(a)} -> {_q(b)};" for a, b in solid]
    lines += [f'  {_q(a)} -> {_q(b)} [style=dashed, label="matches"];' for a, b in dashed]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def find_dot() -> str | None:
    return shutil.which("dot")


def render_png(dot_source: str, dot_binary: str | None) -> bytes:
    """PNG bytes from Graphviz; ``ToolMissing`` when ``dot_binary`` is None or absent."""
    if dot_binary is None or not Path(dot_binary).is_file():
        raise ToolMissing(
            "graphviz's 'dot' is not installed, so no PNG: install graphviz "
            "(apt-get install graphviz), or use --format dot or --format mermaid"
        )
    try:
        proc = subprocess.run(
            [dot_binary, "-Tpng"], input=dot_source.encode(), capture_output=True,
            timeout=60, check=False,
        )
    except OSError as exc:
        raise ToolMissing(f"{dot_binary}: cannot run graphviz: {exc.strerror}") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ToolMissing(f"{dot_binary} failed: {detail[-1] if detail else proc.returncode}")
    return proc.stdout


# -- a device's deployed set ------------------------------------------------------------

StatusReader = Callable[[str, str, float], dict[str, Any] | None]


def read_retained_json(url: str, topic: str, timeout: float) -> dict[str, Any] | None:
    """The retained JSON document on ``topic`` at broker ``url``, or None after ``timeout``."""
    import json
    import threading

    from edge.mqtt.paho_bus import BrokerAddress, PahoBus

    got: dict[str, Any] = {}
    done = threading.Event()

    def on_message(msg: Any) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(doc, dict):
            got.update(doc)
            done.set()

    bus = PahoBus(BrokerAddress.parse(url))
    bus.connect(timeout=min(timeout, 10.0))
    try:
        bus.subscribe(topic, on_message, qos=1)
        done.wait(timeout)
    finally:
        bus.close()
    return got or None


def deployed_set(
    manifests: Iterable[ComponentManifest],
    status: dict[str, Any],
) -> tuple[list[ComponentManifest], list[str]]:
    """The manifests named in a status document's ``components``, and names not found."""
    names = set((status.get("components") or {}).keys())
    found = [m for m in manifests if m.name in names]
    missing = sorted(names - {m.name for m in found})
    return found, missing
