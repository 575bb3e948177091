"""Message templates: sandboxed Jinja2 rendering, fallbacks and deterministic A/B/n variants.

Variables whose value is None or a blank string count as undefined, so a lead without a
`topic` makes ``{{ topic }}`` fail (and the fallback message is used) rather than render
"None" or an empty gap; ``{{ topic | default('your work') }}`` still works.
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from .model import MESSAGE_ACTIONS, NOTE_ACTIONS, Action

CONTROL = "control"


def _first_name(value: object) -> str:
    """First word of a full name: 'Ada Lovelace' -> 'Ada'."""
    words = str(value).split()
    return words[0] if words else ""


ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
ENV.filters["first_name"] = _first_name  # `title` and `default` are Jinja2 built-ins


class MissingVariable(Exception):
    """A template used a variable the lead does not have (or rendered to nothing)."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"missing template variable: {name}")


class TemplateSecurityError(Exception):
    """The sandbox refused an operation (e.g. access to ``__class__``)."""


def check_syntax(src: str) -> str | None:
    """Return None if `src` compiles, else an error message naming the template line."""
    try:
        ENV.parse(src)
    except TemplateSyntaxError as e:
        lines = src.splitlines()
        near = f" (near {lines[e.lineno - 1].strip()!r})" if 0 < e.lineno <= len(lines) else ""
        return f"template syntax error on template line {e.lineno}: {e.message}{near}"
    return None


@lru_cache(maxsize=1024)
def _compile(src: str) -> Template:
    return ENV.from_string(src)


def _undefined_name(err: UndefinedError) -> str:
    """Best-effort variable name from a StrictUndefined error message."""
    msg = err.message or str(err)
    m = re.match(r"'([^']+)' is undefined", msg) or re.search(r"has no (?:attribute|element) '?([^']+)'?$", msg)
    return m.group(1) if m else msg


# `{Hi|Hey|Hello}`: one brace, at least one pipe, not part of a Jinja `{{`, `{%` or `{#` tag.
_SPINTAX = re.compile(r"(?<!\{)\{(?![{%#])([^{}]*\|[^{}]*)\}(?!\})")


def spin(src: str, seed: str) -> str:
    """Resolve spintax deterministically: the same seed (enrollment and step) always picks the same words."""
    count = 0

    def pick(m: re.Match) -> str:
        nonlocal count
        options = m.group(1).split("|")
        count += 1
        h = int(hashlib.sha256(f"{seed}:{count}:{m.group(1)}".encode()).hexdigest(), 16)
        return options[h % len(options)]

    return _SPINTAX.sub(pick, src)


def render(src: str, variables: dict, seed: str | None = None) -> str:
    """Render `src` in the sandbox, after resolving spintax with ``seed`` (when given).

    Raises MissingVariable for an undefined (or None/blank) variable or an output that is
    blank after stripping, and TemplateSecurityError when the sandbox blocks an operation.
    """
    values = {k: v for k, v in variables.items() if v is not None and not (isinstance(v, str) and not v.strip())}
    if seed is not None:
        src = spin(src, seed)
    try:
        out = _compile(src).render(values)
    except SecurityError as e:
        raise TemplateSecurityError(str(e)) from e
    except UndefinedError as e:
        raise MissingVariable(_undefined_name(e)) from e
    if not out.strip():
        absent = sorted(meta.find_undeclared_variables(ENV.parse(src)) - values.keys())
        raise MissingVariable(absent[0] if absent else "<empty>")
    return out


def choose_variant(action: Action, enrollment_id: int, winner: str | None = None) -> str | None:
    """Deterministically pick an arm ('control' or a variant name); None if there are no variants.

    'control' (the base message) weighs max(0, 100 - sum of variant weights). Once a winner has been
    declared for the step, every lead not yet assigned gets the winner.
    """
    if not action.variants:
        return None
    if winner is not None:
        return winner
    arms = [(CONTROL, max(0, 100 - sum(v.weight for v in action.variants)))]
    arms += [(v.name, v.weight) for v in action.variants]
    total = sum(w for _, w in arms)
    if total <= 0:
        return CONTROL
    point = int(hashlib.sha256(f"{enrollment_id}:{action.key}".encode()).hexdigest(), 16) % total
    for name, weight in arms:
        if point < weight:
            return name
        point -= weight
    return CONTROL  # unreachable


def render_action(action: Action, variant: str | None, variables: dict,
                  seed: str | None = None) -> tuple[str | None, str | None, str | None]:
    """Render an action's text; return (text, source, skip_reason).

    source is "message" or "fallback". On failure text and source are None and skip_reason is
    "missing_variable:<name>" or "template_error:<detail>". Actions without text give ("", "message", None).
    """
    if action.type in NOTE_ACTIONS:
        src = action.note
        if src is None:
            return "", "message", None
    elif action.type in MESSAGE_ACTIONS:
        chosen = next((v for v in action.variants if v.name == variant), None)
        src = chosen.message if chosen else action.message
        if src is None:
            return None, None, "missing_message"
    else:
        return "", "message", None

    missing = None
    for source, template in (("message", src), ("fallback", action.fallback_message)):
        if template is None:
            continue
        try:
            return render(template, variables, seed), source, None
        except MissingVariable as e:
            missing = missing or e.name
        except Exception as e:  # sandbox refusals and runtime errors in user templates
            return None, None, f"template_error:{e}"
    return None, None, f"missing_variable:{missing}"
