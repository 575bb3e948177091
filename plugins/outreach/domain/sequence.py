"""Parse and validate sequence YAML files into SequenceDef.

The YAML is composed into nodes (never constructed blindly) so every problem is reported
with its 1-based line and a field path such as ``actions.dm_warm.type`` or
``triggers[2].after``. All problems are collected and raised together as ValidationError.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .durations import parse_duration
from .model import (
    ACTION_TYPES,
    ALLOWED_TRIGGERS,
    EVENT_TRIGGERS,
    MESSAGE_ACTIONS,
    MESSAGE_LIMITS,
    NOTE_ACTIONS,
    NOTE_LIMIT,
    TIMEOUT_FOR_SIGNAL,
    TIMEOUT_TRIGGERS,
    TRIGGER_TYPES,
    UNCONDITIONAL_TRIGGERS,
    Action,
    SequenceDef,
    Trigger,
    ValidationError,
    ValidationIssue,
    Variant,
)
from .templates import CONTROL, check_syntax

END = "END"
# at most one of these may leave an action: they all fire on time, not on a signal
TIMEOUT_CLASS = TIMEOUT_TRIGGERS | UNCONDITIONAL_TRIGGERS
_TAG = "tag:yaml.org,2002:"
# wrong key -> (right key, explanation)
_KEY_HINTS = {"on": ("trigger", "use 'trigger:' instead of 'on:' (YAML reads a bare `on` key as the boolean true)")}

TOP_KEYS = ("name", "description", "accounts", "exclude_already_contacted", "start", "actions", "triggers",
            "send_window", "contact_cooldown", "allow_parallel", "frequency_cap", "stop_company_on_reply")
TOP_REQUIRED = ("name", "accounts", "start", "actions", "triggers")
ACTION_KEYS = ("type", "message", "fallback_message", "subject", "note", "variants")
TRIGGER_KEYS = ("from", "trigger", "to", "after", "within")
VARIANT_KEYS = ("name", "weight", "message")


def node_line(node: Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "null" if node.tag == _TAG + "null" else repr(node.value)


class NodeReader:
    """Walks composed YAML nodes, collecting ValidationIssues instead of failing fast."""

    def __init__(self, filename: str):
        self.file = filename
        self.issues: list[ValidationIssue] = []

    def error(self, node: Node | None, field: str, message: str, line: int | None = None) -> None:
        self.issues.append(ValidationIssue(self.file, line or node_line(node), field, message))

    def raise_if_issues(self) -> None:
        if self.issues:
            raise ValidationError(sorted(self.issues, key=lambda i: i.line or 0))

    def compose(self, text: str) -> MappingNode | None:
        """Compose `text`; return the top-level mapping node, or None after recording an issue."""
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            detail = "; ".join(p for p in (e.context, e.problem) if p)
            self.error(None, "(syntax)", f"YAML syntax error: {detail}", line=mark.line + 1 if mark else None)
            return None
        except yaml.YAMLError as e:
            self.error(None, "(syntax)", f"YAML error: {e}")
            return None
        if root is None:
            self.error(None, "(top level)", "file is empty; expected a mapping")
        elif not isinstance(root, MappingNode):
            self.error(root, "(top level)", f"the top level must be a mapping, got {_describe(root)}")
        else:
            return root
        return None

    def mapping(self, node: Node, path: str, allowed=None, required=()) -> dict[str, tuple[Node, Node]] | None:
        """Check `node` is a mapping with plain, unique, known keys; return {key: (key_node, value_node)}.

        Keys are read as written, so a bare `on` stays "on" rather than becoming True.
        """
        if not isinstance(node, MappingNode):
            self.error(node, path, f"must be a mapping, got {_describe(node)}")
            return None
        out: dict[str, tuple[Node, Node]] = {}
        seen: dict[str, Node] = {}
        hinted: set[str] = set()
        for k, v in node.value:
            if not isinstance(k, ScalarNode):
                self.error(k, path, "keys must be plain strings")
                continue
            key, field = k.value, _join(path, k.value)
            if key in seen:
                self.error(k, field, f"duplicate key {key!r} (first defined on line {node_line(seen[key])})")
                continue
            seen[key] = k
            if allowed is not None and key not in allowed:
                hint = _KEY_HINTS.get(key.lower())
                if hint and hint[0] in allowed:
                    hinted.add(hint[0])
                    self.error(k, field, f"unknown key {key!r}: {hint[1]}")
                else:
                    self.error(k, field, f"unknown key {key!r} (allowed: {', '.join(allowed)})")
                continue
            out[key] = (k, v)
        for key in required:
            if key not in seen and key not in hinted:
                self.error(node, _join(path, key), f"missing required key {key!r}")
        return out

    def sequence(self, node: Node, path: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, path, f"must be a list, got {_describe(node)}")
            return None
        return node.value

    def string(self, node: Node, path: str) -> str | None:
        """A non-empty scalar, read as written (`to: END`, `user_id: 1001` -> "1001")."""
        if not isinstance(node, ScalarNode) or node.tag == _TAG + "null" or not node.value.strip():
            self.error(node, path, f"must be a non-empty string, got {_describe(node)}")
            return None
        return node.value

    def boolean(self, node: Node, path: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "bool":
            return SafeConstructor.bool_values[node.value.lower()]
        self.error(node, path, f"must be true or false, got {_describe(node)}")
        return None

    def integer(self, node: Node, path: str) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "int":
            return SafeConstructor().construct_yaml_int(node)
        self.error(node, path, f"must be an integer, got {_describe(node)}")
        return None

    def duration(self, node: Node, path: str) -> int | None:
        """Seconds from an int or a duration string (see parse_duration)."""
        if not isinstance(node, ScalarNode) or node.tag == _TAG + "null":
            self.error(node, path, f"must be a duration like '2d', got {_describe(node)}")
            return None
        raw = self.integer(node, path) if node.tag == _TAG + "int" else node.value
        try:
            return parse_duration(raw)
        except ValueError as e:
            self.error(node, path, str(e))
            return None


def parse_sequence(text: str, filename: str, account_providers: dict[str, str] | None = None) -> SequenceDef:
    """Parse and validate a sequence; raise ValidationError listing every issue.

    account_providers (account name -> provider), when given, enables the account checks.
    """
    r = NodeReader(filename)
    root = r.compose(text)
    seq = _SequenceParser(r, account_providers).parse(root) if root is not None else None
    r.raise_if_issues()
    return seq


def load_sequence(path: str | Path, account_providers: dict[str, str] | None = None) -> SequenceDef:
    """Read and parse the sequence file at `path`."""
    return parse_sequence(Path(path).read_text(encoding="utf-8"), str(path), account_providers)


class _SequenceParser:
    def __init__(self, reader: NodeReader, account_providers: dict[str, str] | None):
        self.r = reader
        self.account_providers = account_providers
        self.actions: dict[str, Action] = {}  # only actions with a valid type
        self.action_nodes: dict[str, Node] = {}  # every declared action key -> key node

    def parse(self, root: MappingNode) -> SequenceDef | None:
        r = self.r
        top = r.mapping(root, "", TOP_KEYS, TOP_REQUIRED)
        get = lambda key, conv: conv(top[key][1], key) if key in top else None  # noqa: E731
        name = get("name", r.string)
        description = get("description", r.string)
        exclude = get("exclude_already_contacted", r.boolean)
        accounts = self._accounts(top["accounts"][1]) if "accounts" in top else []
        if "actions" in top:
            self._actions(top["actions"][1])
        start = get("start", r.string)
        if start is not None and start not in self.action_nodes:
            r.error(top["start"][1], "start", f"start names no action: {start!r}{self._known()}")
        triggers = self._triggers(top["triggers"][1]) if "triggers" in top else []
        if start in self.action_nodes:
            self._check_graph(start, triggers)
        if self.account_providers is not None and "accounts" in top:
            self._check_accounts(top["accounts"][1], accounts)
        window = None
        if "send_window" in top:
            from .accounts import _send_window  # the same window format as accounts

            window = _send_window(r, top["send_window"][1], "send_window")
        # one person, one conversation: cross-sequence policy (defaults: no parallel conversations,
        # a 30-day cooldown for exclude_already_contacted, no frequency cap, replies stop only the person)
        policy = {}
        for key, conv in (("contact_cooldown", r.duration), ("frequency_cap", r.duration),
                          ("allow_parallel", r.boolean), ("stop_company_on_reply", r.boolean)):
            if key in top:
                value = conv(top[key][1], key)
                if value is not None:
                    policy[key] = value
        if r.issues:
            return None
        return SequenceDef(
            name=name,
            accounts=tuple(a for a, _ in accounts),
            start=start,
            actions=dict(self.actions),
            triggers=tuple(t for t, _, _ in triggers),
            exclude_already_contacted=bool(exclude),
            description=description,
            extras={**({"send_window": window} if window else {}), **policy},
        )

    def _known(self) -> str:
        return f" (actions: {', '.join(self.action_nodes)})" if self.action_nodes else ""

    # -- accounts -------------------------------------------------------------------------
    def _accounts(self, node: Node) -> list[tuple[str, Node]]:
        items = self.r.sequence(node, "accounts")
        if items is None:
            return []
        if not items:
            self.r.error(node, "accounts", "must list at least one account")
        out: list[tuple[str, Node]] = []
        for i, item in enumerate(items):
            name = self.r.string(item, f"accounts[{i}]")
            dup = next((j for j, (n, _) in enumerate(out) if n == name), None)
            if dup is not None:
                self.r.error(item, f"accounts[{i}]", f"duplicate account {name!r} (already accounts[{dup}])")
            elif name is not None:
                out.append((name, item))
        return out

    def _check_accounts(self, node: Node, accounts: list[tuple[str, Node]]) -> None:
        used: dict[str, list[str]] = defaultdict(list)
        for a in self.actions.values():
            if a.provider:
                used[a.provider].append(a.key)
        listed = set()
        for i, (name, item) in enumerate(accounts):
            provider = self.account_providers.get(name)
            if provider is None:
                self.r.error(item, f"accounts[{i}]", f"unknown account {name!r}")
                continue
            listed.add(provider)
            if provider not in used:
                self.r.error(item, f"accounts[{i}]",
                             f"account {name!r} is a {provider} account but no action uses {provider}")
        for provider in sorted(used.keys() - listed):
            self.r.error(
                node, "accounts",
                f"actions {', '.join(used[provider])} need a {provider} account, "
                f"but no listed account is a {provider} account",
            )

    # -- actions --------------------------------------------------------------------------
    def _actions(self, node: Node) -> None:
        entries = self.r.mapping(node, "actions")
        if entries is None:
            return
        if not entries and not node.value:
            self.r.error(node, "actions", "must define at least one action")
        for key, (knode, vnode) in entries.items():
            self.action_nodes[key] = knode
            if key == END:
                self.r.error(knode, f"actions.{key}",
                             "'END' is reserved (it ends the enrollment) and cannot name an action")
            action = self._action(key, vnode, f"actions.{key}")
            if action is not None:
                self.actions[key] = action

    def _action(self, key: str, node: Node, path: str) -> Action | None:
        r = self.r
        fields = r.mapping(node, path, ACTION_KEYS, ("type",))
        if fields is None:
            return None
        type_ = r.string(fields["type"][1], f"{path}.type") if "type" in fields else None
        if type_ is not None and type_ not in ACTION_TYPES:
            known = ", ".join(sorted(ACTION_TYPES))
            r.error(fields["type"][1], f"{path}.type", f"unknown action type {type_!r} (known: {known})")
            type_ = None
        applicable = {"type"}
        if type_ in MESSAGE_ACTIONS:
            applicable |= {"message", "fallback_message", "variants"}
        if type_ == "SEND_EMAIL":
            applicable.add("subject")
        if type_ in NOTE_ACTIONS:
            applicable |= {"note", "fallback_message"}
        limit = NOTE_LIMIT if type_ in NOTE_ACTIONS else MESSAGE_LIMITS.get(type_)

        texts: dict[str, str | None] = {}
        for field in ("message", "fallback_message", "subject", "note"):
            if field not in fields:
                continue
            knode, vnode = fields[field]
            if type_ is not None and field not in applicable:
                r.error(knode, f"{path}.{field}", f"{field!r} is not allowed on {type_} actions")
            texts[field] = self._template(vnode, f"{path}.{field}", None if field == "subject" else limit)
        if type_ in MESSAGE_ACTIONS and "message" not in fields:
            r.error(node, f"{path}.message", f"{type_} requires a message")

        variants: tuple[Variant, ...] = ()
        if "variants" in fields:
            knode, vnode = fields["variants"]
            if type_ is not None and "variants" not in applicable:
                r.error(knode, f"{path}.variants", f"'variants' is not allowed on {type_} actions")
            variants = self._variants(vnode, f"{path}.variants", limit)
        if type_ is None:
            return None
        return Action(key=key, type=type_, variants=variants, **texts)

    def _template(self, node: Node, path: str, limit: int | None) -> str | None:
        src = self.r.string(node, path)
        if src is None:
            return None
        problem = check_syntax(src)
        if problem:
            self.r.error(node, path, problem)
        if limit is not None and len(src) > limit:
            self.r.error(node, path, f"is {len(src)} characters long; the limit is {limit}")
        return src

    def _variants(self, node: Node, path: str, limit: int | None) -> tuple[Variant, ...]:
        r = self.r
        items = r.sequence(node, path)
        out: list[Variant] = []
        seen: dict[str, Node] = {}
        total = 0
        for i, item in enumerate(items or ()):
            vpath = f"{path}[{i}]"
            fields = r.mapping(item, vpath, VARIANT_KEYS, VARIANT_KEYS)
            if fields is None:
                continue
            name = r.string(fields["name"][1], f"{vpath}.name") if "name" in fields else None
            if name == CONTROL:
                r.error(fields["name"][1], f"{vpath}.name",
                        "the variant name 'control' is reserved for the base message")
            elif name in seen:
                r.error(fields["name"][1], f"{vpath}.name",
                        f"duplicate variant name {name!r} (first on line {node_line(seen[name])})")
            elif name is not None:
                seen[name] = fields["name"][1]
            weight = r.integer(fields["weight"][1], f"{vpath}.weight") if "weight" in fields else None
            if weight is not None and weight <= 0:
                r.error(fields["weight"][1], f"{vpath}.weight", f"weight must be a positive integer, got {weight}")
                weight = None
            total += weight or 0
            message = self._template(fields["message"][1], f"{vpath}.message", limit) if "message" in fields else None
            if name is not None and weight is not None and message is not None:
                out.append(Variant(name, weight, message))
        if total > 100:
            r.error(node, path,
                    f"variant weights add up to {total}; they must not exceed 100 (the rest goes to 'control')")
        return tuple(out)

    # -- triggers -------------------------------------------------------------------------
    def _triggers(self, node: Node) -> list[tuple[Trigger, int, Node]]:
        """Parse every trigger; return (trigger, index, node) for those whose from/trigger/to resolve.

        Those are the graph's edges, even if another field (e.g. `after`) has an issue, so one bad
        delay does not also make the target look unreachable.
        """
        items = self.r.sequence(node, "triggers")
        out = []
        kinds_from: dict[str, dict[str, int]] = defaultdict(dict)  # from -> kind -> first index
        for i, item in enumerate(items or ()):
            parsed = self._trigger(item, f"triggers[{i}]", kinds_from, i)
            if parsed is not None:
                out.append((parsed, i, item))
        for src, kinds in kinds_from.items():  # REPLY_UNKNOWN replaces a NOT_REPLIED: it needs one
            if "REPLY_UNKNOWN" in kinds and "NOT_REPLIED" not in kinds:
                i = kinds["REPLY_UNKNOWN"]
                self.r.error(items[i], f"triggers[{i}].trigger",
                             f"REPLY_UNKNOWN from {src!r} needs a NOT_REPLIED trigger from the same action "
                             "(it fires instead of NOT_REPLIED when replies could not be seen)")
        return out

    def _trigger(self, node: Node, path: str, kinds_from: dict, index: int) -> Trigger | None:
        r = self.r
        f = r.mapping(node, path, TRIGGER_KEYS, ("from", "trigger"))
        if f is None:
            return None
        src = r.string(f["from"][1], f"{path}.from") if "from" in f else None
        if src is not None and src not in self.action_nodes:
            r.error(f["from"][1], f"{path}.from", f"'from' names no action: {src!r}{self._known()}")
        kind = r.string(f["trigger"][1], f"{path}.trigger") if "trigger" in f else None
        if kind is not None and kind not in TRIGGER_TYPES:
            known = ", ".join(sorted(TRIGGER_TYPES))
            r.error(f["trigger"][1], f"{path}.trigger", f"unknown trigger type {kind!r} (known: {known})")
            kind = None

        to = r.string(f["to"][1], f"{path}.to") if "to" in f else None
        if kind == END:
            if to not in (None, END):
                r.error(f["to"][1], f"{path}.to",
                        f"an END trigger ends the enrollment; 'to' must be END or omitted, got {to!r}")
        elif kind is not None and "to" not in f:
            r.error(node, f"{path}.to", "missing required key 'to' (an action name or END)")
        elif to is not None and to != END and to not in self.action_nodes:
            r.error(f["to"][1], f"{path}.to", f"'to' names no action: {to!r}{self._known()}")

        after = r.duration(f["after"][1], f"{path}.after") if "after" in f else None
        if kind == "REPLY_UNKNOWN" and "after" in f:
            r.error(f["after"][0], f"{path}.after", "REPLY_UNKNOWN takes no 'after': it fires at its NOT_REPLIED's time")
        if kind in TIMEOUT_TRIGGERS and "after" not in f:
            r.error(node, f"{path}.after", f"{kind} requires 'after' (how long to wait for {TIMEOUT_FOR_SIGNAL[kind]})")
        if after is None and kind in UNCONDITIONAL_TRIGGERS and "after" not in f:
            after = 0
        within = None
        if "within" in f:
            if kind is not None and kind not in EVENT_TRIGGERS:
                events = ", ".join(sorted(EVENT_TRIGGERS))
                r.error(f["within"][0], f"{path}.within", f"'within' is only allowed on event triggers ({events})")
            within = r.duration(f["within"][1], f"{path}.within")
            if within == 0:
                r.error(f["within"][1], f"{path}.within", "'within' must be longer than zero")

        action = self.actions.get(src)
        if action is not None and kind is not None:
            knode, field = f["trigger"][1], f"{path}.trigger"
            seen = kinds_from[src]
            timeout_seen = next((j for k, j in seen.items() if k in TIMEOUT_CLASS), None)
            if kind not in ALLOWED_TRIGGERS[action.type]:
                allowed = ", ".join(sorted(ALLOWED_TRIGGERS[action.type]))
                r.error(knode, field, f"{kind} cannot follow {action.type} action {src!r} (allowed: {allowed})")
            elif kind in seen:
                r.error(knode, field, f"duplicate trigger {kind} from {src!r} (also triggers[{seen[kind]}])")
            elif kind in TIMEOUT_CLASS and timeout_seen is not None:
                r.error(knode, field, f"more than one timeout-class trigger from {src!r} "
                                      f"(triggers[{timeout_seen}] already fires on time); "
                                      f"only one of {', '.join(sorted(TIMEOUT_CLASS))} may leave an action")
            seen.setdefault(kind, index)
        if src not in self.action_nodes or kind is None or (to not in (None, END) and to not in self.action_nodes):
            return None
        return Trigger(src, kind, None if kind == END or to == END else to, after, within)

    # -- graph ----------------------------------------------------------------------------
    def _check_graph(self, start: str, triggers: list[tuple[Trigger, int, Node]]) -> None:
        """Report unreachable actions and cycles, using the valid triggers only."""
        edges: dict[str, list[tuple[str, int, Node]]] = defaultdict(list)
        for t, i, node in triggers:
            if t.to is not None:
                edges[t.from_action].append((t.to, i, node))

        reached, todo = {start}, [start]
        while todo:
            for to, _, _ in edges[todo.pop()]:
                if to not in reached:
                    reached.add(to)
                    todo.append(to)
        for key, knode in self.action_nodes.items():
            if key not in reached:
                self.r.error(knode, f"actions.{key}", f"action {key!r} is unreachable from start {start!r}")

        state: dict[str, int] = {}  # 1 = on the current path, 2 = done

        def visit(key: str, path: list[str]) -> None:
            state[key] = 1
            path.append(key)
            for to, i, node in edges[key]:
                if state.get(to) == 1:
                    loop = " -> ".join(path[path.index(to):] + [to])
                    to_node = next(v for k, v in node.value if k.value == "to")
                    self.r.error(to_node, f"triggers[{i}].to", f"cycle in the trigger graph: {loop}")
                elif to not in state:
                    visit(to, path)
            path.pop()
            state[key] = 2

        for key in [start, *self.action_nodes]:
            if key not in state:
                visit(key, [])
