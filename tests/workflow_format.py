"""ComfyUI workflow files: the UI format a user drags into the page, read against a server's ``/object_info``.

The UI format (litegraph ``version: 0.4``) stores a node's widget values as a bare list, ``widgets_values``, in the
order the frontend creates widgets: the node's widget inputs in ``/object_info`` order (required, then optional),
where an INT input named ``seed``/``noise_seed`` or flagged ``control_after_generate`` is followed by the value of
its "control after generate" widget (``fixed``, ``increment``, ...). Links are ``[id, from_node, from_slot,
to_node, to_slot, type]``. This module names those values, checks a workflow against ``/object_info``, and converts
it to the API format ``POST /prompt`` takes — the way the frontend's own "queue prompt" does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FRONTEND_ONLY_TYPES = frozenset({"Note", "MarkdownNote"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_AFTER_GENERATE_NAMES = frozenset({"seed", "noise_seed"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
MODE_ALWAYS = 0


class WorkflowFormatError(ValueError):
    """A workflow file does not fit the nodes the server offers; the message names the node and input."""


@dataclass(frozen=True)
class WidgetInput:
    """One widget-valued input of a node type, as the frontend lays it out."""

    name: str
    kind: str  # INT, FLOAT, STRING, BOOLEAN or COMBO
    options: dict[str, Any]
    choices: tuple[Any, ...] | None  # COMBO choices
    has_control: bool  # followed by a "control after generate" value in widgets_values

    def check(self, value: Any) -> str | None:
        """Why ``value`` is not valid for this input, or None when it is."""
        if self.kind == "COMBO":
            return None if value in (self.choices or ()) else f"{value!r} is not one of its options"
        if self.kind == "BOOLEAN":
            return None if isinstance(value, bool) else f"{value!r} is not a boolean"
        if self.kind == "STRING":
            return None if isinstance(value, str) else f"{value!r} is not a string"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not a number"
        if self.kind == "INT" and not float(value).is_integer():
            return f"{value!r} is not an integer"
        low, high = self.options.get("min"), self.options.get("max")
        if low is not None and value < low or high is not None and value > high:
            return f"{value!r} is outside [{low}, {high}]"
        return None


def _input_kind(spec: list[Any]) -> tuple[str | None, tuple[Any, ...] | None]:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, list):
        return "COMBO", tuple(kind)
    if kind == "COMBO":
        return "COMBO", tuple(options.get("options", ()))
    return (kind, None) if kind in WIDGET_TYPES else (None, None)


def widget_inputs(node_info: dict[str, Any]) -> list[WidgetInput]:
    """The widget inputs of a node type from its ``/object_info`` entry, in the frontend's widget order."""
    order = node_info.get("input_order") or {group: list(node_info["input"].get(group, {}))
                                             for group in ("required", "optional")}
    widgets = []
    for group in ("required", "optional"):
        for name in order.get(group, []):
            spec = node_info["input"][group][name]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            kind, choices = _input_kind(spec)
            if kind is None or options.get("forceInput"):
                continue
            if options.get("image_upload") or options.get("video_upload") or options.get("animated_image_upload"):
                raise WorkflowFormatError(f"input {name!r} has an upload widget, which this reader does not lay out")
            has_control = kind == "INT" and bool(options.get("control_after_generate")
                                                 or name in CONTROL_AFTER_GENERATE_NAMES)
            widgets.append(WidgetInput(name, kind, options, choices, has_control))
    return widgets


def socket_inputs(node_info: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Inputs drawn as sockets: ``{name: (type, required)}``."""
    sockets = {}
    for group in ("required", "optional"):
        for name, spec in node_info["input"].get(group, {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if _input_kind(spec)[0] is None or options.get("forceInput"):
                sockets[name] = (spec[0], group == "required")
    return sockets


def named_widget_values(node: dict[str, Any], node_info: dict[str, Any]) -> dict[str, Any]:
    """``{input name: value}`` for a UI node's ``widgets_values`` (control-after-generate values left out)."""
    widgets = widget_inputs(node_info)
    values = list(node.get("widgets_values") or [])
    expected = sum(2 if w.has_control else 1 for w in widgets)
    if len(values) != expected:
        layout = [f"{w.name}, control_after_generate" if w.has_control else w.name for w in widgets]
        raise WorkflowFormatError(
            f"node {node['id']} ({node['type']}) has {len(values)} widget values, its type lays out {expected}: "
            f"{', '.join(layout)}")
    named, position = {}, 0
    for widget in widgets:
        named[widget.name] = values[position]
        if widget.has_control and values[position + 1] not in CONTROL_VALUES:
            raise WorkflowFormatError(f"node {node['id']} ({node['type']}): {widget.name!r} is followed by "
                                      f"{values[position + 1]!r}, not one of {sorted(CONTROL_VALUES)}")
        position += 2 if widget.has_control else 1
    return named


def ordered_widget_values(node_type: str, named: dict[str, Any], node_info: dict[str, Any],
                          control: str = "fixed") -> list[Any]:
    """The ``widgets_values`` list for named values (the inverse of :func:`named_widget_values`)."""
    widgets = widget_inputs(node_info)
    unknown = set(named) - {w.name for w in widgets}
    if unknown:
        raise WorkflowFormatError(f"{node_type} has no widget input {', '.join(sorted(unknown))}")
    values = []
    for widget in widgets:
        if widget.name not in named:
            if "default" not in widget.options:
                raise WorkflowFormatError(f"{node_type}: {widget.name!r} has no default; give a value")
            values.append(widget.options["default"])
        else:
            values.append(named[widget.name])
        if widget.has_control:
            values.append(control)
    return values


def _links_by_id(workflow: dict[str, Any]) -> dict[int, list[Any]]:
    return {link[0]: link for link in workflow.get("links", [])}


def executable_nodes(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes the server runs (frontend-only notes left out); bypassed or muted nodes are refused."""
    nodes = []
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY_TYPES:
            continue
        if node.get("mode", MODE_ALWAYS) != MODE_ALWAYS:
            raise WorkflowFormatError(f"node {node['id']} ({node['type']}) is muted or bypassed; this reader "
                                      "converts only nodes that always run")
        nodes.append(node)
    return nodes


def ui_to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Convert a UI-format workflow to the API format (``{id: {class_type, inputs}}``)."""
    links = _links_by_id(workflow)
    api = {}
    for node in executable_nodes(workflow):
        info = object_info.get(node["type"])
        if info is None:
            raise WorkflowFormatError(f"node {node['id']}: the server has no node type {node['type']!r}")
        inputs: dict[str, Any] = dict(named_widget_values(node, info))
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            link = links.get(slot["link"])
            if link is None:
                raise WorkflowFormatError(f"node {node['id']} input {slot['name']!r} names link {slot['link']}, "
                                          "which the workflow does not have")
            inputs[slot.get("widget", {}).get("name", slot["name"])] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def _accepts(input_type: str, link_type: str) -> bool:
    if input_type == "*" or link_type == "*":
        return True
    return link_type in {part.strip() for part in str(input_type).split(",")}


def check_workflow(workflow: dict[str, Any], object_info: dict[str, Any],
                   substituted_combos: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
    """Every problem the workflow has against ``object_info`` (empty when it is consistent).

    Checks node types, every link (both ends exist, slot types match the link type and each other, and the
    nodes' own ``inputs``/``outputs`` lists agree with the link table), required sockets being connected, and
    every widget value (count, combo choice, number range). ``substituted_combos`` holds ``(type, input)`` pairs
    whose value names a file that exists only on the user's machine (a checkpoint, a saved erasure)."""
    problems: list[str] = []
    nodes = {node["id"]: node for node in workflow["nodes"]}
    if len(nodes) != len(workflow["nodes"]):
        problems.append("node ids are not unique")
    for link_id, link in _links_by_id(workflow).items():
        _, origin_id, origin_slot, target_id, target_slot, link_type = link
        origin, target = nodes.get(origin_id), nodes.get(target_id)
        if origin is None or target is None:
            problems.append(f"link {link_id} joins a node that does not exist")
            continue
        origin_info, target_info = object_info.get(origin["type"]), object_info.get(target["type"])
        if origin_info is None or target_info is None:
            continue  # reported below as a missing node type
        if origin_slot >= len(origin_info["output"]):
            problems.append(f"link {link_id}: {origin['type']} has no output {origin_slot}")
            continue
        output_type = origin_info["output"][origin_slot]
        slots = target.get("inputs", [])
        if target_slot >= len(slots):
            problems.append(f"link {link_id}: node {target_id} has no input slot {target_slot}")
            continue
        slot = slots[target_slot]
        sockets = socket_inputs(target_info)
        input_name = slot.get("widget", {}).get("name", slot["name"])
        input_type = sockets.get(input_name, (None,))[0]
        if input_type is None:
            problems.append(f"link {link_id}: {target['type']} has no socket input {input_name!r}")
            continue
        if link_type != output_type or slot.get("type") != input_type or not _accepts(input_type, output_type):
            problems.append(f"link {link_id}: {origin['type']} output {origin_slot} ({output_type}) -> "
                            f"{target['type']}.{input_name} ({input_type}) recorded as {link_type}")
        if slot.get("link") != link_id:
            problems.append(f"link {link_id}: node {target_id} input {input_name!r} does not name it")
        origin_outputs = origin.get("outputs", [])
        if origin_slot >= len(origin_outputs) or link_id not in (origin_outputs[origin_slot].get("links") or []):
            problems.append(f"link {link_id}: node {origin_id} output {origin_slot} does not list it")
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY_TYPES:
            continue
        info = object_info.get(node["type"])
        if info is None:
            problems.append(f"node {node['id']}: the server has no node type {node['type']!r}")
            continue
        connected = {slot.get("widget", {}).get("name", slot["name"]) for slot in node.get("inputs", [])
                     if slot.get("link") is not None}
        for name, (_, required) in socket_inputs(info).items():
            if required and name not in connected:
                problems.append(f"node {node['id']} ({node['type']}): required input {name!r} is not connected")
        for index, output in enumerate(node.get("outputs", [])):
            if index >= len(info["output"]) or output.get("type") != info["output"][index]:
                problems.append(f"node {node['id']} ({node['type']}): output {index} is not "
                                f"{info['output'][index] if index < len(info['output']) else 'there'}")
        try:
            named = named_widget_values(node, info)
        except WorkflowFormatError as error:
            problems.append(str(error))
            continue
        for widget in widget_inputs(info):
            if (node["type"], widget.name) in substituted_combos:
                continue
            reason = widget.check(named[widget.name])
            if reason:
                problems.append(f"node {node['id']} ({node['type']}).{widget.name}: {reason}")
    return problems
