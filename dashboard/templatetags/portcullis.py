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


# Inline SVG, not emoji: a symbol must not depend on the fonts of the person's machine (boxes without an emoji font).
# The same shapes are files in static/icons/ for the stylesheet's badges; keep the two in step.
_ICONS = {
    "allow": '<path d="M3 8.5l3.2 3.2L13 4.8" fill="none" stroke="currentColor" stroke-width="2"/>',
    "deny": '<path d="M4 4l8 8M12 4l-8 8" stroke="currentColor" stroke-width="2"/>',
    "hide": '<circle cx="8" cy="8" r="5.6" fill="none" stroke="currentColor" stroke-width="1.6"/>'
            '<path d="M4.1 11.9l7.8-7.8" stroke="currentColor" stroke-width="1.6"/>',
    "approve": '<circle cx="8" cy="5" r="2.7" fill="currentColor"/>'
               '<path d="M2.8 14.5c0-3.1 2.3-5 5.2-5s5.2 1.9 5.2 5z" fill="currentColor"/>',
    "limited": '<circle cx="8" cy="8.5" r="5.8" fill="none" stroke="currentColor" stroke-width="1.6"/>'
               '<path d="M8 5v3.6l2.6 1.6M6 1.2h4" fill="none" stroke="currentColor" stroke-width="1.6"/>',
    "error": '<path d="M8 2.5v7" stroke="currentColor" stroke-width="2.2"/><circle cx="8" cy="13" r="1.3" '
             'fill="currentColor"/>',
    "expired": '<path d="M4 1.8h8M4 14.2h8M5 2c0 4 6 4 6 6s-6 2-6 6M11 2c0 4-6 4-6 6s6 2 6 6" fill="none" '
               'stroke="currentColor" stroke-width="1.4"/>',
    "warn": '<path d="M8 1.8l6.6 12H1.4z" fill="none" stroke="currentColor" stroke-width="1.5" '
            'stroke-linejoin="round"/><path d="M8 6v3.8" stroke="currentColor" stroke-width="1.6"/>'
            '<circle cx="8" cy="11.9" r=".95" fill="currentColor"/>',
}


@register.simple_tag
def icon(name: str) -> SafeString:
    return format_html('<svg class="icon icon-{}" viewBox="0 0 16 16" aria-hidden="true" focusable="false">{}</svg>',
                       name, mark_safe(_ICONS.get(name, "")))  # noqa: S308 - constant markup above


@register.simple_tag
def action_badge(action: str) -> SafeString:
    """The word, with its symbol drawn by the stylesheet (static/icons/): no markup per badge on 279-row pages."""
    return format_html('<span class="badge act-{}">{}</span>', action, action)


@register.filter
def rule_count(layer) -> int:
    from gateway.policy.layers import rule_count as count

    return count(layer)


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
