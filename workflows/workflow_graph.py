"""The canvas side of the example workflows: nodes, links, groups and notes laid out and written in ComfyUI's UI
format, with widget values ordered as the running server's ``/object_info`` says (used by ``make_workflows.py``)."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from workflow_format import ordered_widget_values, socket_inputs, widget_inputs  # noqa: E402

NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"
GROUP_COLOR = "#3f789e"
TITLE_HEIGHT = 30


@dataclass
class Output:
    node: "Node"
    slot: int | str


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[float, float]
    widgets: dict[str, Any]
    links_in: dict[str, Output]
    title: str | None = None
    size: tuple[float, float] | None = None
    links_out: dict[int, list[int]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Output:
        return Output(self, name)  # resolved to a slot index by the graph


class Graph:
    """Collects nodes and links, then writes the UI-format JSON."""

    def __init__(self, object_info: dict[str, Any]):
        self.info = object_info
        self.nodes: list[Node] = []
        self.links: list[list[Any]] = []
        self.groups: list[dict[str, Any]] = []

    def add(self, node_type: str, pos: tuple[float, float], title: str | None = None,
            size: tuple[float, float] | None = None, **values: Any) -> Node:
        info = self.info.get(node_type)
        if info is None:
            raise KeyError(f"the server has no node type {node_type!r}")
        sockets = socket_inputs(info)
        links_in = {name: value for name, value in values.items() if name in sockets}
        widgets = {name: value for name, value in values.items() if name not in sockets}
        node = Node(len(self.nodes) + 1, node_type, pos, widgets, {}, title, size)
        for name, source in links_in.items():
            node.links_in[name] = self._resolve(source)
        self.nodes.append(node)
        return node

    def note(self, pos: tuple[float, float], size: tuple[float, float], text: str, title: str = "Note") -> Node:
        node = Node(len(self.nodes) + 1, "Note", pos, {"text": text}, {}, title, size)
        self.nodes.append(node)
        return node

    def group(self, title: str, nodes: list[Node], padding: float = 30) -> None:
        boxes = [self._box(n) for n in nodes]
        left, top = min(b[0] for b in boxes) - padding, min(b[1] for b in boxes) - padding - 20
        right, bottom = max(b[2] for b in boxes) + padding, max(b[3] for b in boxes) + padding
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [left, top, right - left,
                                                                                     bottom - top],
                            "color": GROUP_COLOR, "font_size": 24, "flags": {}})

    def _resolve(self, source: Output) -> Output:
        if isinstance(source.slot, int):
            return source
        names = self.info[source.node.type]["output_name"]
        if source.slot not in names:
            raise KeyError(f"{source.node.type} has no output {source.slot!r} (it has {names})")
        return Output(source.node, names.index(source.slot))

    def _size(self, node: Node) -> tuple[float, float]:
        """The node's size as the frontend computes it for a new node (title bar not included)."""
        if node.size is not None:
            return node.size
        info = self.info[node.type]
        rows = max(len(socket_inputs(info)), len(info["output"]), 1)
        widgets = widget_inputs(info)
        multiline = sum(1 for w in widgets if w.kind == "STRING" and w.options.get("multiline"))
        count = sum(2 if w.has_control else 1 for w in widgets) - multiline
        height = 6 + 20 * rows + 24 * count + (8 if count else 0) + 54 * multiline
        return (400, max(height, 200)) if multiline else (270, height)

    def _box(self, node: Node) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) on the canvas, title bar included."""
        width, height = self._size(node)
        return node.pos[0], node.pos[1] - TITLE_HEIGHT, node.pos[0] + width, node.pos[1] + height

    def below(self, node: Node, gap: float = 50) -> float:
        """The y of a node placed under ``node`` (leaving room for its title bar)."""
        return node.pos[1] + self._size(node)[1] + TITLE_HEIGHT + gap

    def right_of(self, node: Node, gap: float = 40) -> float:
        """The x of a node placed right of ``node``."""
        return node.pos[0] + self._size(node)[0] + gap

    def _order(self) -> dict[int, int]:
        """Execution order (topological), which the frontend stores as ``order``."""
        done: dict[int, int] = {}

        def visit(node: Node) -> None:
            if node.id in done:
                return
            for source in node.links_in.values():
                visit(source.node)
            done[node.id] = len(done)

        for node in self.nodes:
            visit(node)
        return done

    def to_json(self, view_size: tuple[float, float] = (1700, 860)) -> dict[str, Any]:
        order = self._order()
        serialized: dict[int, dict[str, Any]] = {}
        for node in self.nodes:
            serialized[node.id] = self._serialize(node, order[node.id])
        for node in self.nodes:
            info = self.info.get(node.type)
            if info is None:
                continue
            for slot_index, (name, (socket_type, _)) in enumerate(socket_inputs(info).items()):
                source = node.links_in.get(name)
                if source is None:
                    continue
                link_id = len(self.links) + 1
                output_type = self.info[source.node.type]["output"][source.slot]
                self.links.append([link_id, source.node.id, source.slot, node.id, slot_index, output_type])
                serialized[node.id]["inputs"][slot_index]["link"] = link_id
                serialized[source.node.id]["outputs"][source.slot]["links"].append(link_id)
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-recare/" + "/".join(n.type for n in self.nodes))),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": [serialized[n.id] for n in self.nodes],
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"ds": self._fit_view(view_size)},
            "version": 0.4,
        }

    def _serialize(self, node: Node, order: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": node.id, "type": node.type, "pos": list(node.pos),
                                 "size": list(self._size(node)), "flags": {}, "order": order, "mode": 0}
        if node.type == "Note":
            entry.update(inputs=[], outputs=[], title=node.title, properties={"text": ""},
                         widgets_values=[node.widgets["text"]], color=NOTE_COLOR, bgcolor=NOTE_BGCOLOR)
            return entry
        info = self.info[node.type]
        entry["inputs"] = [{"name": name, "type": socket_type, "link": None}
                           for name, (socket_type, _) in socket_inputs(info).items()]
        entry["outputs"] = [{"name": name, "type": output_type, "links": [], "slot_index": index}
                            for index, (name, output_type) in enumerate(zip(info["output_name"], info["output"]))]
        if node.title:
            entry["title"] = node.title
        entry["properties"] = {"Node name for S&R": node.type}
        values = ordered_widget_values(node.type, node.widgets, info)
        if values:
            entry["widgets_values"] = values
        return entry

    def _fit_view(self, view_size: tuple[float, float]) -> dict[str, Any]:
        """Canvas scale and offset that show the whole graph in a window of ``view_size`` pixels."""
        boxes = [self._box(n) for n in self.nodes]
        boxes += [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
                   g["bounding"][1] + g["bounding"][3]) for g in self.groups]
        left, top = min(b[0] for b in boxes) - 40, min(b[1] for b in boxes) - 40
        right, bottom = max(b[2] for b in boxes) + 40, max(b[3] for b in boxes) + 40
        scale = round(min(1.0, view_size[0] / (right - left), view_size[1] / (bottom - top)), 3)
        return {"scale": scale, "offset": [round(-left, 1), round(-top, 1)]}
