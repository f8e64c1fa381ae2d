"""Template filters that keep upstream-supplied text inert and make risk and actions readable without colour."""

from __future__ import annotations

import json
import unicodedata

from django import template
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

# Characters that reorder or hide text (Trojan Source): shown as a visible marker instead of taking effect.
_INVISIBLE = {
    **{chr(c): f"U+{c:04X}" for c in range(0x202A, 0x202F)},  # LRE RLE PDF LRO RLO
    **{chr(c): f"U+{c:04X}" for c in range(0x2066, 0x206A)},  # LRI RLI FSI PDI
    "\u200e": "U+200E", "\u200f": "U+200F", "\u061c": "U+061C",  # marks
    "\u200b": "U+200B", "\u200c": "U+200C", "\u200d": "U+200D", "\u2060": "U+2060", "\ufeff": "U+FEFF",
}


def _reveal(text: str) -> str:
    out = []
    for ch in text:
        if ch in _INVISIBLE:
            out.append(f'<span class="ctl" title="invisible control character">[{_INVISIBLE[ch]}]</span>')
        elif unicodedata.category(ch) == "Cc" and ch not in "\n\t":
            out.append(f'<span class="ctl">[U+{ord(ch):04X}]</span>')
        else:
            out.append(escape(ch))
    return "".join(out)


@register.filter
def inert(value: object) -> SafeString:
    """Escape everything and reveal bidi/invisible characters; for text an upstream server wrote."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    if text.isascii() and all(c.isprintable() or c in "\n\t" for c in text):
        return escape(text)  # the common case, fast
    return mark_safe(_reveal(text))  # noqa: S308 - every character went through escape() or is our own markup


@register.filter
def pretty_json(value: object) -> SafeString:
    return inert(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False))


@register.filter
def truncation_note(arguments: object) -> str:
    """What a person should know when a row kept only the start of the arguments (gateway/calls/audit.py)."""
    kept = arguments.get("_truncated") if isinstance(arguments, dict) and len(arguments) == 1 else None
    if not isinstance(kept, dict):
        return ""
    return (f"The arguments were {kept.get('bytes')} bytes of JSON; only the first "
            f"{len(str(kept.get('prefix', '')).encode())} are kept (prefix). sha256 of the full arguments: "
            f"{kept.get('sha256')}")


@register.simple_tag
def risk_badge(category: str, level: str = "") -> SafeString:
    """Colour plus words: 'destructive · critical' reads the same in greyscale."""
    label = category if not level else f"{category} · {level}"
    return format_html('<span class="badge risk-{} lvl-{}" title="risk: {}">{}</span>',
                       category, level or "none", label, label)


_ACTION_TEXT = {"allow": "✓ allow", "deny": "✕ deny", "hide": "⊘ hide", "approve": "✋ approve",
                "limited": "⏱ limited", "error": "! error"}


@register.simple_tag
def action_badge(action: str) -> SafeString:
    return format_html('<span class="badge act-{}">{}</span>', action, _ACTION_TEXT.get(action, action))


@register.filter
def get_item(mapping, key):
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.simple_tag
def pending_approvals() -> int:
    """Approvals waiting for a person, for the navigation badge and the tab title: one COUNT query per page."""
    from django.utils import timezone

    from gateway.calls.approvals import pending_count

    return pending_count(timezone.now())
