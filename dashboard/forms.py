"""Dashboard forms: each one validates what a person typed and says which field to change and how."""

from __future__ import annotations

import json
import shlex
from datetime import UTC
from urllib.parse import urlsplit

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from gateway import upstream_addresses
from gateway.calls.call_log import KINDS
from gateway.grants import GrantError, parse_duration
from gateway.models import SLUG_VALIDATOR, Call, NotificationChannel, Server, Tool
from gateway.policy import RISK_CATEGORIES, RISK_LEVELS, SCOPES
from gateway.stdio_rules import command_problem, env_problem, missing_program


class WriteOnlyLines(forms.Textarea):
    """A secrets box: whatever was typed (or stored) is never sent back to the browser, not even after an error."""

    def format_value(self, value):
        return ""


def _key_values(text: str, field: str) -> dict[str, str]:
    pairs = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"line {number}: write KEY=VALUE (one per line)", code=field)
        pairs[key.strip()] = value.strip()
    return pairs


SESSION_FIELDS = ("allow_sampling", "allow_elicitation", "allow_roots", "isolate_sessions", "on_definition_change",
                  "hold_new_tools")


class ServerForm(forms.Form):
    slug = forms.CharField(max_length=50, validators=[SLUG_VALIDATOR],
                           help_text="used in the gateway URL: /mcp/<slug>/")
    name = forms.CharField(max_length=200, required=False, help_text="display name (default: the slug)")
    transport = forms.ChoiceField(choices=Server.Transport.choices, widget=forms.RadioSelect)
    command = forms.CharField(required=False, max_length=4000, label="Command line (stdio)",
                              help_text="split like a shell would; no shell runs it, "
                                        "e.g. mcp-server-time --local-timezone UTC")
    url = forms.CharField(required=False, max_length=2000, label="URL (Streamable HTTP or SSE)",
                          help_text="e.g. http://127.0.0.1:3001/mcp; put credentials in the headers, not here")
    env = forms.CharField(required=False, widget=WriteOnlyLines(attrs={"rows": 3, "autocomplete": "off"}),
                          label="Environment (stdio)", help_text="KEY=VALUE per line; stored encrypted, never shown")
    headers = forms.CharField(required=False, widget=WriteOnlyLines(attrs={"rows": 3, "autocomplete": "off"}),
                              label="Headers (HTTP/SSE)",
                              help_text="Name=value per line; stored encrypted, never shown")
    clear_secrets = forms.BooleanField(required=False, label="Remove the stored environment and headers")
    timeout_seconds = forms.IntegerField(min_value=1, max_value=3600, initial=60, label="Timeout (seconds)")
    enabled = forms.BooleanField(required=False, initial=True, help_text="disabled servers refuse every call")
    allow_sampling = forms.BooleanField(required=False, initial=True, label="May ask agents to sample",
                                        help_text="sampling/createMessage: the server spends the agent's model")
    allow_elicitation = forms.BooleanField(required=False, initial=True, label="May ask agents' users",
                                           help_text="elicitation/create: the server asks the person at the agent")
    allow_roots = forms.BooleanField(required=False, initial=True, label="May list agents' roots",
                                     help_text="roots/list: the server learns the agent's folders")
    isolate_sessions = forms.BooleanField(required=False, label="Isolate sessions",
                                          help_text="for servers that keep state per session (a browser, a shell): "
                                                    "each agent session gets an upstream session (for stdio, a "
                                                    "process) of its own instead of a shared one")
    on_definition_change = forms.ChoiceField(
        choices=Server.OnChange.choices, initial=Server.OnChange.BLOCK, required=False,
        label="When a tool's definition changes",
        help_text="a changed description or schema can smuggle new instructions to agents: holding the tool refuses "
                  "its calls and leaves it out of listings until you approve the new definition")
    hold_new_tools = forms.BooleanField(required=False, label="Hold new tools too",
                                        help_text="a tool that appears on a server already in use waits for your "
                                                  "approval before agents may see or call it")

    def __init__(self, *args, instance: Server | None = None, may_change_commands: bool = False, **kwargs):
        self.instance, self.may_change_commands = instance, may_change_commands
        self.secrets_cleared = False
        if instance is not None:
            kwargs.setdefault("initial", {
                "slug": instance.slug, "name": instance.name, "transport": instance.transport,
                "command": shlex.join(instance.command) if instance.command else "", "url": instance.url,
                "timeout_seconds": instance.timeout_seconds, "enabled": instance.enabled,
                **{name: getattr(instance, name) for name in SESSION_FIELDS}})
        super().__init__(*args, **kwargs)
        if instance is not None:
            self.fields["slug"].disabled = True
            self.fields["env"].help_text = "KEY=VALUE per line; leave empty to keep what is stored"
            self.fields["headers"].help_text = ("Name=value per line; leave empty to keep what is stored (a new "
                                                "host, port or scheme removes them unless you enter them again)")
        if not may_change_commands:
            self.fields["command"].help_text = ONLY_ADMINS
            self.fields["env"].help_text = ONLY_ADMINS
            if instance is not None and instance.transport == Server.Transport.STDIO:
                for name in ("transport", "command", "env", "clear_secrets"):
                    self.fields[name].disabled = True

    def clean_on_definition_change(self):
        return self.cleaned_data["on_definition_change"] or Server.OnChange.BLOCK  # never looser than the default

    def clean_slug(self):
        slug = self.cleaned_data["slug"]
        if self.instance is None and Server.objects.filter(slug=slug).exists():
            raise ValidationError(f"a server called {slug!r} exists already; pick another slug or edit that one")
        return slug

    def clean_command(self):
        try:
            return shlex.split(self.cleaned_data["command"])
        except ValueError as exc:
            raise ValidationError(f"cannot split the command line ({exc}); check the quotes") from None

    def clean_env(self):
        return _key_values(self.cleaned_data["env"], "env")

    def clean_headers(self):
        return _key_values(self.cleaned_data["headers"], "headers")

    def clean(self):
        data = super().clean()
        transport = data.get("transport")
        if not self.may_change_commands and self._changes_what_runs(data):
            self.add_error("command", ONLY_ADMINS)
            return data
        if transport == Server.Transport.STDIO:
            if not data.get("command"):
                self.add_error("command", "a stdio server needs the command that starts it")
            if data.get("headers"):
                self.add_error("headers", "headers are for HTTP/SSE servers; a stdio server takes environment values")
            new_command = self.instance is None or data.get("command") != self.instance.command
            for field, problem in (("command", command_problem(data.get("command") or [])
                                        or (missing_program(data.get("command") or []) if new_command else None)),
                                   ("env", env_problem(data.get("env") or {}))):
                if problem:
                    self.add_error(field, problem)
        elif transport in (Server.Transport.HTTP, Server.Transport.SSE):
            self._clean_url(data)
            if data.get("env"):
                self.add_error("env", "environment values are for stdio servers; an HTTP server takes headers")
        return data

    def _changes_what_runs(self, data) -> bool:
        stdio = Server.Transport.STDIO
        before = self.instance
        if before is None or before.transport != stdio:
            return data.get("transport") == stdio
        return (data.get("transport") != stdio or data.get("command") != before.command or bool(data.get("env"))
                or bool(data.get("clear_secrets")))

    def _clean_url(self, data) -> None:
        parts = urlsplit(data.get("url", ""))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.add_error("url", "write an http:// or https:// URL, e.g. http://127.0.0.1:3001/mcp")
        elif parts.username or parts.password:
            self.add_error("url", "put credentials in the headers, not in the URL (URLs are shown on pages and logs)")
        else:
            try:  # the upstream's address is allowed (gateway/upstream_addresses.py), then Django can store it
                upstream_addresses.check_url(data["url"])
                Server._meta.get_field("url").run_validators(data["url"])
            except (upstream_addresses.AddressRefused, ValidationError) as exc:
                self.add_error("url", "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc))

    def save(self) -> Server:
        server = self.build()
        server.save()
        return server

    def build(self) -> Server:
        """The server as the form describes it, validated and not saved ("Test connection" lists it as is)."""
        data = self.cleaned_data
        server = self.instance or Server(slug=data["slug"])
        server.name = data["name"] or server.name or server.slug
        server.transport, server.timeout_seconds, server.enabled = (
            data["transport"], data["timeout_seconds"], data["enabled"])
        for name in SESSION_FIELDS:
            setattr(server, name, data[name])
        stdio = data["transport"] == Server.Transport.STDIO
        before = _destination(server) if server.pk is not None else None
        server.command, server.url = (data["command"], "") if stdio else ([], data["url"])
        if before is not None and before != _destination(server) and (server.env_sealed or server.headers_sealed):
            # Stored credentials were given for the old destination: a new one gets only what is entered now.
            server.env, server.headers = {}, {}
            self.secrets_cleared = not (data["env"] or data["headers"])
        if data["clear_secrets"]:
            server.env, server.headers = {}, {}
        if stdio:
            server.headers = {}
            if data["env"]:
                server.env = data["env"]
        else:
            server.env = {}
            if data["headers"]:
                server.headers = data["headers"]
        server.full_clean()
        return server


ONLY_ADMINS = ("only an administrator can set what a stdio server runs on the gateway's host (its command line "
               "and environment): ask one to register or change it")


def _destination(server: Server) -> tuple:
    """Where stored secrets go: the program that gets the environment, or the scheme, host and port of the URL."""
    if server.transport == Server.Transport.STDIO:
        return ("stdio", tuple(server.command))
    parts = urlsplit(server.url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(parts.scheme))


def _refilter(label: str) -> dict:
    """A filter control: named for screen readers, and a change re-filters the list (class refilter)."""
    return {"aria-label": label, "class": "refilter"}


class CatalogueFilter(forms.Form):
    q = forms.CharField(required=False, label="Search")
    category = forms.ChoiceField(required=False, choices=[("", "any category")] + [(c, c) for c in RISK_CATEGORIES],
                                 widget=forms.Select(attrs=_refilter("risk category")))
    level = forms.ChoiceField(required=False, choices=[("", "any level")] + [(c, c) for c in RISK_LEVELS],
                              widget=forms.Select(attrs=_refilter("risk level")))
    action = forms.ChoiceField(required=False, choices=[("", "any action")] + [
        (a, a) for a in ("allow", "limited", "approve", "deny", "hide")],
        widget=forms.Select(attrs=_refilter("what the policy does")))
    changed = forms.BooleanField(required=False, label="changed since approved",
                                 widget=forms.CheckboxInput(attrs={"class": "refilter"}))


class OverrideForm(forms.Form):
    category = forms.ChoiceField(choices=Tool.Category.choices)
    level = forms.ChoiceField(choices=Tool.Level.choices)
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
                             help_text="why a person knows better than the classifier")


class ReplayForm(forms.Form):
    """Which recorded calls a draft is replayed against: the last N, or a time range (UTC)."""

    last = forms.IntegerField(required=False, min_value=1, max_value=1_000_000, initial=1000,
                              label="The last calls", widget=forms.NumberInput(attrs={"aria-label": "last calls"}))
    since = forms.DateTimeField(required=False, label="or from (UTC)",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local", "aria-label": "from"}))
    until = forms.DateTimeField(required=False, label="until (UTC)",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local", "aria-label": "until"}))

    def clean(self):
        data = super().clean()
        for key in ("since", "until"):
            if data.get(key) is not None and data[key].tzinfo is None:
                data[key] = data[key].replace(tzinfo=UTC)
        if data.get("since") and data.get("until") and data["until"] <= data["since"]:
            raise ValidationError("the range ends before it starts")
        if data.get("until") and not data.get("since"):
            raise ValidationError("give the start of the range too")
        return data


class DispatcherForm(forms.Form):
    """A dispatcher's shape (docs/POLICY.md, "Dispatcher tools") and, optionally, actions to add."""

    action = forms.CharField(max_length=200, label="The argument that names the action",
                             help_text="a JSON pointer, like /action")
    match = forms.CharField(max_length=500, required=False, label="Arguments that must agree with the action",
                            help_text="JSON pointers, comma-separated, like /category (empty: none)")
    params = forms.CharField(max_length=200, required=False, label="Where the action's own arguments are",
                             help_text="a JSON pointer, like /params (empty: the call's other arguments)")
    accept_new = forms.BooleanField(required=False, label="Let actions it has not seen run where the policy's "
                                                          "default allows",
                                    help_text="otherwise an unknown action is refused and waits for your review")
    source = forms.ChoiceField(required=False, label="Add actions", choices=[
        ("", "only those its schema lists (and those you paste below)"),
        ("truenas", "the 278 actions of the TrueNAS server"),
        ("listing", "ask the server: its listing action (TrueNAS-style categories)")])
    actions = forms.CharField(required=False, label="Actions to add (JSON)",
                              widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
                              help_text='a list of {"name", "description", "inputSchema", "match"}')

    def clean_match(self) -> list[str]:
        return [part.strip() for part in self.cleaned_data["match"].split(",") if part.strip()]

    def clean_actions(self) -> list:
        text = self.cleaned_data["actions"].strip()
        if not text:
            return []
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValidationError(f"not JSON: {exc}") from None
        data = data.get("actions") if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise ValidationError('a JSON list of actions, like [{"name": "backup_run"}]')
        return data


WINDOW_CHOICES = [("minute", "minute"), ("hour", "hour"), ("day", "day")]


class BulkLimitForm(forms.Form):
    max = forms.IntegerField(min_value=1, max_value=1_000_000, initial=30,
                             widget=forms.NumberInput(attrs={"aria-label": "calls at most"}))
    window = forms.ChoiceField(choices=WINDOW_CHOICES, initial="minute",
                               widget=forms.Select(attrs={"aria-label": "per window"}))
    scope = forms.ChoiceField(choices=[(s, f"per {s}") for s in SCOPES], initial="grant",
                              widget=forms.Select(attrs={"aria-label": "counted per"}))
    counter = forms.CharField(required=False, max_length=64,
                              widget=forms.TextInput(attrs={"placeholder": "shared counter (optional)",
                                                            "aria-label": "shared counter name"}),
                              help_text="one shared counter for all of them; empty: each tool its own")


class ImportForm(forms.Form):
    file = forms.FileField(help_text="a policy JSON file, as export_policy prints or PolicyLayer writes",
                           widget=forms.ClearableFileInput(attrs={"aria-label": "policy file to import"}))


class GrantForm(forms.Form):
    name = forms.CharField(max_length=100, validators=[SLUG_VALIDATOR],
                           help_text="lowercase letters, digits and hyphens, e.g. build-agent")
    servers = forms.ModelMultipleChoiceField(queryset=Server.objects.all(), widget=forms.CheckboxSelectMultiple,
                                             help_text="the servers this agent may call through the gateway")
    expires = forms.CharField(required=False, max_length=20, label="Expires after",
                              help_text="e.g. 90m, 12h, 30d, 2w; empty: never")

    def clean_expires(self):
        text = self.cleaned_data["expires"].strip()
        if not text:
            return None
        try:
            return parse_duration(text)
        except GrantError as exc:
            raise ValidationError(str(exc)) from None


class CallFilterForm(forms.Form):
    PERIODS = [("", "any time (or from … until …)"), ("hour", "last hour"), ("day", "last day"),
               ("week", "last week")]

    server = forms.CharField(required=False)
    grant = forms.CharField(required=False)
    tool = forms.CharField(required=False)
    decision = forms.ChoiceField(required=False, choices=[("", "any decision")] + list(Call.Decision.choices),
                                 widget=forms.Select(attrs=_refilter("decision")))
    outcome = forms.ChoiceField(required=False, choices=[("", "any outcome")] + list(Call.Outcome.choices),
                                widget=forms.Select(attrs=_refilter("outcome")))
    kind = forms.ChoiceField(required=False, widget=forms.Select(attrs=_refilter("what happened")),
                             choices=[("", "anything happened")] + [(k, text) for k, (text, _) in KINDS.items()])
    period = forms.ChoiceField(required=False, choices=PERIODS, widget=forms.Select(attrs=_refilter("when")))
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(
        attrs={**_refilter("from (UTC)"), "type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(
        attrs={**_refilter("until (UTC)"), "type": "datetime-local"}))
    group = forms.BooleanField(required=False, label="group repeats",
                               widget=forms.CheckboxInput(attrs={"class": "refilter"}))
    q = forms.CharField(required=False, label="Search")
    before = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            self.add_error("until", "the end of the range must come after its start")
        return data


class DecisionForm(forms.Form):
    """A person's answer to a held call: which button, and the reason (required to deny; decide() checks it)."""

    DECISIONS = [("approve", "Approve"), ("always", "Approve & always allow for this grant"), ("deny", "Deny")]
    decision = forms.ChoiceField(choices=DECISIONS, error_messages={
        "required": "choose Approve, Approve & always allow, or Deny",
        "invalid_choice": "choose Approve, Approve & always allow, or Deny"})
    reason = forms.CharField(required=False, max_length=2000,
                             error_messages={"max_length": "shorten the reason to at most 2000 characters"})
    # How far an approval reaches: this call once (empty), or identical calls for the next N minutes.
    minutes = forms.TypedChoiceField(required=False, coerce=int, empty_value=None,
                                     choices=[("", "this call once"), ("15", "15 minutes"), ("60", "1 hour"),
                                              ("240", "4 hours")],
                                     error_messages={"invalid_choice": "choose this call once, 15 minutes, 1 hour "
                                                                       "or 4 hours"})

    @property
    def approve(self) -> bool:
        return self.cleaned_data["decision"] in ("approve", "always")

    @property
    def always(self) -> bool:
        return self.cleaned_data["decision"] == "always"

    def first_error(self) -> str:
        return next(iter(self.errors.values()))[0]


class NotificationChannelForm(forms.Form):
    """A notification channel: what it is, where it sends (write-only secrets), and what it is told about."""

    name = forms.SlugField(max_length=100, help_text="A short name, e.g. ops-slack.",
                           error_messages={"required": "give the channel a name",
                                           "invalid": "use letters, digits, - and _ only"})
    kind = forms.ChoiceField(choices=NotificationChannel.Kind.choices)
    url = forms.CharField(required=False, max_length=2000, label="Webhook URL",
                          widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
                          help_text="Kept encrypted and never shown again; leave empty to keep the current one.")
    signing_secret = forms.CharField(required=False, max_length=500, label="Signing secret",
                                     widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
                                     help_text="JSON webhooks only: at least 16 characters. Each message carries "
                                               "X-Portcullis-Timestamp and X-Portcullis-Signature (sha256= HMAC of "
                                               "the timestamp, a dot and the body). Leave empty to keep it.")
    recipients = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                 help_text="Email only: one address per line (the SMTP server is set in the "
                                           "environment: EMAIL_HOST, EMAIL_PORT, …).")
    events = forms.MultipleChoiceField(choices=NotificationChannel.Event.choices,
                                       widget=forms.CheckboxSelectMultiple,
                                       error_messages={"required": "choose at least one thing to be told about"})
    servers = forms.ModelMultipleChoiceField(queryset=Server.objects.order_by("slug"), required=False,
                                             widget=forms.CheckboxSelectMultiple,
                                             help_text="None chosen: every server.")
    min_risk = forms.ChoiceField(required=False, label="Approvals of at least this risk",
                                 choices=[("", "any risk"), ("low", "low"), ("medium", "medium"), ("high", "high"),
                                          ("critical", "critical")])
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args, channel: NotificationChannel | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channel = channel

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        taken = NotificationChannel.objects.filter(name=name)
        if self.channel is not None:
            taken = taken.exclude(pk=self.channel.pk)
        if taken.exists():
            raise forms.ValidationError(f"a channel named {name} exists already: choose another name")
        return name

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        stored = self.channel.secrets if self.channel is not None else {}
        url = (data.get("url") or "").strip() or stored.get("url", "")
        secret = (data.get("signing_secret") or "") or stored.get("signing_secret", "")
        if kind in ("slack", "teams", "webhook"):
            if not url:
                self.add_error("url", "enter the webhook URL the messages are posted to")
            elif not url.startswith(("https://", "http://")):
                self.add_error("url", "the webhook URL must start with https:// (or http:// on a private network)")
        if kind == "webhook" and len(secret) < 16:
            self.add_error("signing_secret", "enter a signing secret of at least 16 characters: receivers check "
                                             "each message's signature with it")
        if kind == "email":
            addresses = [r.strip() for r in (data.get("recipients") or "").split() if r.strip()]
            if not addresses:
                self.add_error("recipients", "enter at least one email address")
            for address in addresses:
                try:
                    validate_email(address)
                except forms.ValidationError:
                    self.add_error("recipients", f"{address} is not an email address")
            data["recipients"] = "\n".join(addresses)
        data["secrets"] = {"url": url, "signing_secret": secret if kind == "webhook" else ""} if kind != "email" \
            else {}
        return data
