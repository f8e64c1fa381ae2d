"""Asking before what is wide or cannot be undone (revoke, roll back, disable a server, discard or save a draft,
"always allow"): the action's own POST, sent without `confirm`, answers with a page that says what will change and
asks; the same form sent back with `confirm=1` (and, for what cannot be undone, the thing's name typed) acts.

The check is on the server, so a stray click, a replayed form or a script without the confirmation changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.http import HttpResponse
from django.shortcuts import render


@dataclass
class Question:
    title: str  # "Revoke grant ux-agent?"
    consequences: list[str]  # what will change, in the product's words
    button: str  # "Revoke ux-agent"
    cancel_url: str
    danger: bool = True
    type_to_confirm: str = ""  # a name the person types first: for what cannot be undone
    undo: str = ""  # how to take it back, where that is possible
    hidden: dict[str, str] = field(default_factory=dict)  # the action's own fields, sent back as they came
    details: list[str] = field(default_factory=list)  # lines shown in full below (a diff summary)
    note: str = ""  # the label of a "why" box sent back as `note` (saving a policy asks for a change note)


def ask_first(request, question: Question) -> HttpResponse | None:
    """None when this POST carries the confirmation; otherwise the page that asks (400 if a typed name is wrong)."""
    if request.method == "POST" and request.POST.get("confirm") == "1":
        typed = request.POST.get("confirm_name", "").strip()
        if not question.type_to_confirm or typed == question.type_to_confirm:
            return None
        error = f"type {question.type_to_confirm} exactly to confirm" if typed else \
            f"type {question.type_to_confirm} to confirm"
        return render(request, "dashboard/confirm.html", {"q": question, "error": error}, status=400)
    return render(request, "dashboard/confirm.html", {"q": question, "error": ""})
