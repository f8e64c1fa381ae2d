"""The gateway's data: servers and their tools, versioned policies, grants, the audit log, approvals, counters.

The dashboard reads and writes these same models; domain logic lives in small methods here and in the
modules named for their concern (policy.py, ratelimit.py, audit.py, catalogue.py, grants.py, policies.py).
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from gateway import vault
from gateway.ordered_json import OrderedJSONField

SLUG_VALIDATOR = RegexValidator(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
                                "use 1-50 lowercase letters, digits and hyphens, not starting or ending with a hyphen")


class Server(models.Model):
    class Transport(models.TextChoices):
        STDIO = "stdio", "stdio"
        HTTP = "http", "Streamable HTTP"
        SSE = "sse", "HTTP+SSE (legacy)"

    class Health(models.TextChoices):
        UNKNOWN = "unknown"
        OK = "ok"
        ERROR = "error"

    slug = models.CharField(max_length=50, unique=True, validators=[SLUG_VALIDATOR])
    name = models.CharField(max_length=200)
    transport = models.CharField(max_length=10, choices=Transport.choices)
    # stdio: the argv, started without a shell.
    command = models.JSONField(default=list, blank=True)
    # http / sse: the upstream URL.
    url = models.URLField(max_length=2000, blank=True)
    # Encrypted JSON of str→str; read through .env / .headers, never printed in full.
    env_sealed = models.TextField(blank=True, default="")
    headers_sealed = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True)
    timeout_seconds = models.PositiveIntegerField(default=60)
    # What the server may ask an agent through the gateway (server→client requests). Sampling spends the agent's
    # model, roots reveal the agent's paths: an operator may switch each off. Only an agent session that declared
    # an allowed one gets an upstream session of its own (gateway/protocol/sessions.py); the rest share one.
    allow_sampling = models.BooleanField(default=True)
    allow_elicitation = models.BooleanField(default=True)
    allow_roots = models.BooleanField(default=True)
    # A server that keeps state per session (a browser, a shell): every agent session gets its own upstream session.
    isolate_sessions = models.BooleanField(default=False)

    class OnChange(models.TextChoices):
        BLOCK = "block", "hold it until a person approves the new definition"
        FLAG = "flag", "flag it and keep it callable"

    # What a change to an approved tool definition does (gateway/catalogue/sync.py): hold the tool (refused, not
    # listed) until a person approves the new definition, or only flag it.
    on_definition_change = models.CharField(max_length=5, choices=OnChange.choices, default=OnChange.BLOCK)
    hold_new_tools = models.BooleanField(default=False)  # a tool new on an established server is held the same way
    health = models.CharField(max_length=10, choices=Health.choices, default=Health.UNKNOWN)
    last_contact_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")  # redacted before it is stored
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        # Narrower than changing a server: what a stdio server runs runs on the gateway's host (gateway/stdio_rules.py).
        permissions = [("change_server_command",
                        "Can register or change what a stdio server runs (its command line and environment)")]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from gateway.stdio_rules import command_problem, env_problem

        if self.transport != self.Transport.STDIO:
            return
        problems = {"command": command_problem(self.command), "env": env_problem(self.env)}
        if any(problems.values()):
            raise ValidationError({field: text for field, text in problems.items() if text})

    @property
    def env(self) -> dict[str, str]:
        return vault.unseal(self.env_sealed)

    @env.setter
    def env(self, value: dict[str, str]) -> None:
        self.env_sealed = vault.seal(value)

    @property
    def headers(self) -> dict[str, str]:
        return vault.unseal(self.headers_sealed)

    @headers.setter
    def headers(self, value: dict[str, str]) -> None:
        self.headers_sealed = vault.seal(value)

    def allowed_client_capabilities(self) -> frozenset[str]:
        """The server→client capabilities this server may use: of sampling, elicitation and roots."""
        return frozenset(name for name, allowed in (("sampling", self.allow_sampling),
                                                    ("elicitation", self.allow_elicitation),
                                                    ("roots", self.allow_roots)) if allowed)

    def target_display(self) -> str:
        """Where the upstream is, safe to show: argv or URL (URL credentials removed)."""
        if self.transport == self.Transport.STDIO:
            import shlex

            return shlex.join(self.command)
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Tool(models.Model):
    class Category(models.TextChoices):
        READ = "read"
        WRITE = "write"
        EXECUTE = "execute"
        DESTRUCTIVE = "destructive"
        FINANCIAL = "financial"

    class Level(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"
        CRITICAL = "critical"

    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=255)
    title = models.CharField(max_length=500, blank=True, default="")
    description = models.TextField(blank=True, default="")
    input_schema = OrderedJSONField(default=dict)
    output_schema = OrderedJSONField(null=True, blank=True)
    annotations = OrderedJSONField(default=dict, blank=True)
    # The whole definition as the upstream last listed it; the hash covers all of it.
    definition = OrderedJSONField(default=dict)
    definition_hash = models.CharField(max_length=64)
    approved_hash = models.CharField(max_length=64, blank=True, default="")
    # The definition that was approved (trust on first use or a person), to review a later change side by side.
    approved_definition = OrderedJSONField(null=True, blank=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")  # the person who approved the current definition (None: TOFU)
    approved_at = models.DateTimeField(null=True, blank=True)
    position = models.PositiveIntegerField(default=0)  # the upstream's listing order
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    gone_at = models.DateTimeField(null=True, blank=True)  # no longer listed by the upstream
    risk_category = models.CharField(max_length=12, choices=Category.choices)
    risk_level = models.CharField(max_length=10, choices=Level.choices)
    risk_reasons = models.JSONField(default=list, blank=True)
    risk_overridden = models.BooleanField(default=False)
    risk_override_reason = models.TextField(blank=True, default="")
    # A dispatcher ("umbrella") tool that runs many actions (gateway/policy/dispatch.py): the shape a person
    # confirmed (`dispatch`), or the one the gateway detected and suggests (`dispatch_suggested`).
    dispatch = models.JSONField(null=True, blank=True)
    dispatch_suggested = models.JSONField(null=True, blank=True)
    # An action of a dispatcher (a virtual tool: its name is the action's): the dispatcher, and the values of the
    # dispatcher's other selecting arguments for this action (e.g. {"/category": "cloud"}).
    via = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="actions")
    match = models.JSONField(default=dict, blank=True)
    # Refused at call time and left out of listings until a person accepts it (an action first seen in a call).
    held_reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["server", "position", "name"]
        constraints = [models.UniqueConstraint(fields=["server", "name"], name="tool_unique_per_server")]

    def __str__(self) -> str:
        return f"{self.server.slug}/{self.name}"

    @property
    def changed_since_approved(self) -> bool:
        return bool(self.approved_hash) and self.approved_hash != self.definition_hash


class PolicyVersion(models.Model):
    """Every version of a server's policy (grant null) or of a grant's own policy for a server; one active each."""

    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="policy_versions")
    grant = models.ForeignKey("Grant", on_delete=models.CASCADE, null=True, blank=True, related_name="policy_versions")
    number = models.PositiveIntegerField()
    document = OrderedJSONField()  # canonical form, as export_policy prints it, key order kept
    # A grant's version: its own rules on top of the server's version `base` (document = the two merged, what
    # decides its calls). Null layer on a grant's version: a complete copy made before grant rules were layered.
    layer = OrderedJSONField(null=True, blank=True)
    base = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    is_active = models.BooleanField(default=False)
    summary = models.TextField(blank=True, default="")
    note = models.TextField(blank=True, default="")  # why, in the words of the person who saved it
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor = models.CharField(max_length=200, blank=True, default="")  # "alice" or "cli:apply_policy (root)"
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["server", "grant", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["server", "number"], condition=Q(grant__isnull=True),
                                    name="policy_number_unique_server"),
            models.UniqueConstraint(fields=["server", "grant", "number"], condition=Q(grant__isnull=False),
                                    name="policy_number_unique_grant"),
            models.UniqueConstraint(fields=["server"], condition=Q(is_active=True, grant__isnull=True),
                                    name="policy_one_active_server"),
            models.UniqueConstraint(fields=["server", "grant"], condition=Q(is_active=True, grant__isnull=False),
                                    name="policy_one_active_grant"),
        ]

    def __str__(self) -> str:
        owner = f"{self.server.slug}" + (f" for grant {self.grant.name}" if self.grant_id else "")
        return f"policy v{self.number} of {owner}"


class Grant(models.Model):
    name = models.CharField(max_length=100, unique=True, validators=[SLUG_VALIDATOR])
    token_prefix = models.CharField(max_length=16, unique=True)
    token_digest = models.CharField(max_length=64)
    servers = models.ManyToManyField(Server, related_name="grants", blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class Call(models.Model):
    """One row of the audit log per tools/call, written before the upstream sees the request."""

    class Decision(models.TextChoices):
        ALLOW = "allow"
        DENY = "deny"
        HIDE = "hide"
        APPROVE = "approve"

    class Outcome(models.TextChoices):
        PENDING = "pending", "in flight"
        REFUSED = "refused", "refused by the gateway"
        OK = "ok"
        TOOL_ERROR = "tool_error", "tool error"
        PROTOCOL_ERROR = "protocol_error", "protocol error"
        TIMEOUT = "timeout"
        INTERRUPTED = "interrupted", "interrupted: outcome unknown"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Every index is written on every call: the grant and server columns lead the composite indexes below (which
    # also serve ON DELETE), and calls are never looked up by policy version, so those get no index of their own.
    grant = models.ForeignKey(Grant, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls",
                              db_index=False)
    grant_name = models.CharField(max_length=100, blank=True, default="")  # kept if the grant is deleted
    server = models.ForeignKey(Server, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls",
                               db_index=False)
    server_slug = models.CharField(max_length=50)
    tool_name = models.CharField(max_length=255)
    via = models.CharField(max_length=255, blank=True, default="")  # the dispatcher when tool_name is its action
    arguments = models.JSONField(default=dict)  # redacted before it is stored
    argument_hash = models.CharField(max_length=64, blank=True, default="")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    refusal = models.CharField(max_length=12, blank=True, default="")  # policy | hidden | arguments | limit | error | …
    reason = models.TextField(blank=True, default="")
    rule = models.CharField(max_length=500, blank=True, default="")  # JSON Pointer into the policy
    policy_version = models.ForeignKey(PolicyVersion, null=True, blank=True, on_delete=models.SET_NULL,
                                       db_index=False)
    counters = models.JSONField(default=list, blank=True)  # reservation keys touched
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING)
    error = models.TextField(blank=True, default="")  # redacted
    latency_ms = models.FloatField(null=True, blank=True)
    result_size = models.PositiveIntegerField(null=True, blank=True)
    approval = models.ForeignKey("Approval", null=True, blank=True, on_delete=models.SET_NULL, related_name="calls")
    worker = models.CharField(max_length=100, blank=True, default="")  # process that owns a pending row
    finished_at = models.DateTimeField(null=True, blank=True)
    # The hash chain (gateway/calls/audit_chain.py): the writer's chain, the row's place in it, the digest over the
    # previous row's digest and this row's admission, and the digest over this row's settlement.
    chain = models.CharField(max_length=16, blank=True, default="")
    seq = models.BigIntegerField(null=True, blank=True)
    digest = models.CharField(max_length=64, blank=True, default="")
    outcome_digest = models.CharField(max_length=64, blank=True, default="")

    @property
    def awaiting_approval(self) -> bool:
        """Held, then the agent was told to call again once an operator approves: not a refusal by the policy."""
        return (self.outcome == self.Outcome.REFUSED and self.refusal == "approval"
                and self.reason.startswith("approval pending"))

    FAILED_OUTCOMES = (Outcome.TOOL_ERROR, Outcome.PROTOCOL_ERROR, Outcome.TIMEOUT, Outcome.INTERRUPTED)
    WHAT_HAPPENED = {"ok": "ran: ok", "failed": "ran: failed", "policy": "denied by policy",
                     "arguments": "arguments refused", "limit": "rate-limited", "pending-approval": "pending approval",
                     "operator": "denied by an operator", "in-flight": "in flight"}

    @property
    def what_happened_text(self) -> str:
        return self.WHAT_HAPPENED[self.what_happened]

    @property
    def what_happened(self) -> str:
        """The call log's kind of this call (a key of gateway.calls.call_log.KINDS)."""
        if self.outcome == self.Outcome.OK:
            return "ok"
        if self.outcome in self.FAILED_OUTCOMES:
            return "failed"
        if self.outcome == self.Outcome.PENDING:
            return "pending-approval" if self.decision == self.Decision.APPROVE else "in-flight"
        if self.refusal == "approval":
            return "pending-approval" if self.awaiting_approval else "operator"
        return {"arguments": "arguments", "limit": "limit"}.get(self.refusal, "policy")

    @property
    def outcome_text(self) -> str:
        return "pending approval" if self.awaiting_approval else self.get_outcome_display()

    @property
    def outcome_class(self) -> str:
        return "awaiting-approval" if self.awaiting_approval else self.outcome

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["server", "-created_at"], name="call_server_time"),
            models.Index(fields=["grant", "-created_at"], name="call_grant_time"),
            models.Index(fields=["tool_name", "-created_at"], name="call_tool_time"),
            models.Index(fields=["decision", "-created_at"], name="call_decision_time"),
            models.Index(fields=["outcome", "-created_at"], name="call_outcome_time"),
            models.Index(fields=["worker"], condition=Q(outcome="pending"), name="call_pending_worker"),
        ]

    def __str__(self) -> str:
        return f"call {self.pk} {self.server_slug}/{self.tool_name} {self.decision}/{self.outcome}"


class Approval(models.Model):
    """A held call waiting for (or given) a person's decision; bound to the exact call it was asked for."""

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        EXPIRED = "expired"
        USED = "used"  # an approved call ran; the approval is spent

    public_id = models.CharField(max_length=32, unique=True)  # shown to agents and people ("ab12…")
    grant = models.ForeignKey(Grant, on_delete=models.CASCADE, related_name="approvals")
    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="approvals")
    tool = models.ForeignKey(Tool, null=True, on_delete=models.SET_NULL, related_name="approvals")
    tool_name = models.CharField(max_length=255)
    argument_hash = models.CharField(max_length=64)
    arguments = models.JSONField(default=dict)  # redacted
    policy_version = models.ForeignKey(PolicyVersion, null=True, on_delete=models.SET_NULL)
    tool_hash = models.CharField(max_length=64)
    rule = models.CharField(max_length=500, blank=True, default="")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    why = models.TextField(blank=True, default="")  # why it was held when not just an approve rule (a limit reached)
    # Two-person approval: how many different people must approve; the first one's approval while it waits.
    approvers_needed = models.PositiveSmallIntegerField(default=1)
    first_approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                          related_name="+")
    first_approved_at = models.DateTimeField(null=True, blank=True)
    # Approved for every identical call until this time ("these exact arguments for N minutes"); else once.
    approved_until = models.DateTimeField(null=True, blank=True)

    @property
    def approvers_text(self) -> str:
        """Who approved, as the audit row says it."""
        names = [u.get_username() for u in (self.first_approved_by, self.decided_by) if u is not None]
        return " and ".join(names)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["grant", "server", "tool_name", "argument_hash", "state"], name="approval_lookup"),
            models.Index(fields=["state", "-created_at"], name="approval_state_time"),
        ]

    def __str__(self) -> str:
        return f"approval {self.public_id} {self.tool_name} {self.state}"


class Counter(models.Model):
    """One rate-limit window's count. Reserved with a conditional upsert; see gateway/calls/ratelimit.py."""

    key = models.CharField(max_length=400, primary_key=True)
    n = models.PositiveIntegerField(default=0)
    window_end = models.BigIntegerField(db_index=True)  # epoch seconds; rows past it are swept

    def __str__(self) -> str:
        return f"{self.key}={self.n}"


class ServerChange(models.Model):
    """Every change to a server's registration: who, when, what (secret values never: only which keys changed)."""

    server = models.ForeignKey(Server, null=True, on_delete=models.SET_NULL, related_name="changes")
    slug = models.CharField(max_length=50)  # kept when the server is deleted
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor = models.CharField(max_length=200)  # "alice" or "cli:register_server"
    created_at = models.DateTimeField(default=timezone.now)
    summary = models.CharField(max_length=500)
    details = models.JSONField(default=list)  # one line per changed thing

    class Meta:
        ordering = ["-created_at", "-pk"]


class McpSession(models.Model):
    """A session-era agent session, readable by every gateway process: any replica serves any of its requests.
    The upstream side is not here: a process serves a session on its shared link for the server, or on a link of
    its own when the session is private (gateway/protocol/sessions.py)."""

    id = models.CharField(primary_key=True, max_length=64)
    grant = models.ForeignKey(Grant, on_delete=models.CASCADE, related_name="sessions")
    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="sessions")
    token_digest = models.CharField(max_length=128)  # the opening token's digest: another grant's token gets 404
    protocol_version = models.CharField(max_length=20)
    capabilities = models.JSONField(default=dict, blank=True)  # what the agent declared at initialize
    private = models.BooleanField(default=False)  # needs an upstream session of its own
    legacy = models.BooleanField(default=False)  # an HTTP+SSE stream: lives as long as its stream
    process = models.CharField(max_length=100, blank=True, default="")  # the process that opened it
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["grant", "last_seen_at"], condition=Q(ended_at__isnull=True),
                                name="session_open_grant"),
                   models.Index(fields=["server"], condition=Q(ended_at__isnull=True), name="session_open_server")]


class GatewayProcess(models.Model):
    """A running gateway process and its heartbeat: peers settle the pending calls of one that stopped beating,
    and the dashboard shows who is serving."""

    id = models.CharField(primary_key=True, max_length=100)  # gateway.calls.audit.WORKER_ID
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    draining = models.BooleanField(default=False)
    sessions = models.PositiveIntegerField(default=0)  # agent sessions it holds a view of
    upstreams = models.JSONField(default=dict, blank=True)  # server slug → upstream connections (stdio: processes)


class AuditChain(models.Model):
    """One writer's hash chain of audit rows (gateway/calls/audit_chain.py): its anchor (the head the writer
    reported at its last heartbeat: rows up to it must all be in the table or the archive) and where the rows
    still in the table begin (what archiving moved out)."""

    id = models.CharField(primary_key=True, max_length=16)
    worker = models.CharField(max_length=100, blank=True, default="")
    key_id = models.CharField(max_length=12, blank=True, default="")
    started_at = models.DateTimeField(default=timezone.now)
    head_seq = models.BigIntegerField(default=0)
    head_digest = models.CharField(max_length=64, blank=True, default="")
    head_at = models.DateTimeField(null=True, blank=True)
    archived_seq = models.BigIntegerField(default=0)
    archived_digest = models.CharField(max_length=64, blank=True, default="")


class CallTask(models.Model):
    """A held call a stateless-era agent follows as a task (the tasks extension; gateway/protocol/held_tasks.py):
    the agent got the task id at once and polls tasks/get; the gateway owns the call and keeps its outcome here."""

    class Status(models.TextChoices):
        WORKING = "working"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    id = models.CharField(primary_key=True, max_length=40)  # the task id the agent polls with
    grant = models.ForeignKey(Grant, on_delete=models.CASCADE, related_name="+")
    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="+")
    call = models.ForeignKey(Call, null=True, on_delete=models.SET_NULL, related_name="+")
    approval = models.ForeignKey("Approval", null=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.WORKING)
    status_message = models.TextField(blank=True, default="")
    result = models.JSONField(null=True, blank=True)  # the CallToolResult, when completed
    error = models.JSONField(null=True, blank=True)  # the JSON-RPC error, when failed
    worker = models.CharField(max_length=100, blank=True, default="")  # the process that owns the call
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()


class NotificationChannel(models.Model):
    """Where people are told what needs them (gateway/notify/): a Slack or Teams incoming webhook, a generic JSON
    webhook signed with HMAC-SHA256, or email. The webhook URL and signing secret are sealed (gateway/vault.py):
    written, never shown again."""

    class Kind(models.TextChoices):
        SLACK = "slack", "Slack incoming webhook"
        TEAMS = "teams", "Microsoft Teams incoming webhook"
        WEBHOOK = "webhook", "JSON webhook (signed)"
        EMAIL = "email", "Email"

    class Event(models.TextChoices):
        APPROVAL_PENDING = "approval_pending", "a call waits for approval"
        TOOL_HELD = "tool_held", "a tool is held for review (changed or new)"
        UPSTREAM_DOWN = "upstream_down", "an upstream server is down"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    secrets_sealed = models.TextField(blank=True, default="")  # {"url": …, "signing_secret": …}
    recipients = models.TextField(blank=True, default="")  # email addresses, one per line
    events = models.JSONField(default=list)
    servers = models.ManyToManyField(Server, blank=True, related_name="+")  # none: every server
    min_risk = models.CharField(max_length=10, blank=True, default="")  # approvals at or above this level only
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def secrets(self) -> dict[str, str]:
        return vault.unseal(self.secrets_sealed)

    @secrets.setter
    def secrets(self, value: dict[str, str]) -> None:
        self.secrets_sealed = vault.seal({k: v for k, v in value.items() if v})


class NotificationDelivery(models.Model):
    """One message to one channel, with its attempts: the delivery log."""

    class State(models.TextChoices):
        PENDING = "pending", "waiting to be sent"
        SENDING = "sending"
        DELIVERED = "delivered"
        FAILED = "failed", "failed (gave up)"

    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=20)
    subject = models.CharField(max_length=300)
    link = models.CharField(max_length=500, blank=True, default="")
    payload = models.JSONField(default=dict)  # what the generic webhook gets; never arguments or secrets
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="delivery_due")]


class AuditStream(models.Model):
    """The audit log's stream to a syslog receiver or HTTP endpoint (gateway/calls/audit_stream.py): the last row
    delivered, the process holding the sender's lease, and the last failure."""

    id = models.CharField(primary_key=True, max_length=20)
    last_id = models.BigIntegerField(default=0)
    delivered = models.BigIntegerField(default=0)
    holder = models.CharField(max_length=100, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)


class ShadowPolicy(models.Model):
    """A draft of a server's policy run in shadow (gateway/calls/shadowing.py): decided beside the policy in force
    on every live call, never enforced; where it would have decided differently, a ShadowDivergence is kept."""

    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="shadows")
    document = OrderedJSONField()  # the draft as it was when the shadow started
    base_number = models.PositiveIntegerField(default=0)  # the active version it was compared with at the start
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["-started_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["server"], condition=Q(ended_at__isnull=True),
                                               name="shadow_one_running_per_server")]


class ShadowDivergence(models.Model):
    """A live call the shadow draft would have decided differently from the policy in force."""

    shadow = models.ForeignKey(ShadowPolicy, on_delete=models.CASCADE, related_name="divergences")
    call = models.ForeignKey("Call", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    tool_name = models.CharField(max_length=255)
    grant_name = models.CharField(max_length=100, blank=True, default="")
    actual = models.CharField(max_length=10)  # a kind of gateway.policy.replay.KINDS: what the call got
    shadow_kind = models.CharField(max_length=10)  # what the draft would have given it
    reason = models.TextField(blank=True, default="")  # the draft's refusal, as the agent would have read it

    class Meta:
        ordering = ["-created_at", "-pk"]
