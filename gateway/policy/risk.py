"""Risk classification of MCP tools: a category and a level from a tool's name, description, schema and hints.

Pure and standard-library only: no Django, no I/O. It runs over every tool of every upstream on each catalogue
refresh, so it is cheap (set look-ups and a few regular expressions per tool) and total: odd input (None, a schema
that is not an object, unicode or empty names, huge descriptions) never raises. Should a bug raise anyway, the
answer fails closed: destructive/critical, with a reason saying the classification failed.

Categories, least to most severe: read < write < execute < destructive < financial (category_rank).
Levels: low < medium < high < critical (level_rank).

Every rule below keeps or raises what the earlier ones decided; none lowers it.

1. Name. The name is NFKC-normalised (full-width letters become ASCII) and split into lower-case words at
   underscores, hyphens, dots, slashes, spaces, camelCase humps, acronyms and digits ("getHTTPStatus",
   "file-share.delete", "repo_get_branches"). Each word is looked up in five families (_VERBS):
     read         list get query read search show describe status info check lookup fetch download verify ...
     write        create update set add edit put patch write rename attach enable disable import upload mount
                  clone restore generate ...
     execute      run start stop restart sync exec trigger invoke call scrub replicate upgrade install deploy
                  send apply commit abort lock unlock scan refresh pull join leave ...
     destructive  delete destroy remove wipe erase purge drop format reset shutdown reboot kill revoke detach
                  export rollback replace overwrite uninstall clear ...
     financial    pay charge transfer refund purchase withdraw payout buy ...
   A word that is "re" or "un" plus a family word joins that family ("rerun", "unmount").
   Getter nouns (config, version, state, summary, settings, choices, ...) count as read words.
   Several words: the most severe family wins ("save_and_send" is execute, "list_and_delete" destructive).
   Financial outranks destructive: money that has left cannot be restored from a snapshot or a backup, while
   most destructive operations on a NAS can be; it is also the narrower label. Both default to critical.
   Money nouns (invoice, billing, payment, subscription, ...) make a tool financial unless the name's only
   verbs read ("get_invoice" is read; "create_invoice" and a bare "invoice" are financial).
   Restart vs reboot: restarting one service or VM is execute; reboot and shutdown stop the whole machine and
   every service on it, so they are destructive. Export is destructive: on storage systems it detaches a pool
   and everything on it; elsewhere it moves data out, which is no less worth a second look.
2. Names with no family word. If the last word looks like a plural noun ("team_members", "open_sessions"),
   the usual shape of a listing, the tool is read. Anything else is unknown and classified execute (level high):
   an action we cannot name must not pass as a harmless read. A homoglyph or misspelt verb lands here too.
3. Description (raise only). Third-person verbs anywhere ("deletes", "wipes", "executes", "creates", "pays",
   "shuts down"), third-person forms that double as plural nouns ("runs", "charges", "exports") only as the
   first word of a sentence, and a leading imperative ("Delete the dataset.") raise the category. A word with a
   negation among the three words before it ("does not delete", "without removing") is ignored. Danger phrases
   ("permanently", "irreversible", "cannot be undone", "unrecoverable", "all data", "data loss") raise the level.
4. Level. The category sets a default that is also a floor: read low, write medium, execute high, destructive
   critical, financial critical (PolicyLayer's severities). Then:
     - an operation selector with an enum ("action": START/STOP, "method": GET/DELETE) lifts the level to the
       default of the most severe verb it can select (an HTTP passthrough that can DELETE is critical);
     - a name, or a non-numeric parameter, that mentions secrets (password, secret, credential, token, keytab)
       makes the level at least medium: reading secrets is not a low-risk read;
     - one step up, at most one in all from the name and schema together: a boolean parameter named confirm,
       force, recursive or cascade, or one whose name holds a destructive verb ("delete_users", "destroy"); a
       free-text parameter that picks the operation or carries code (action, method, command, script, sql, ...);
       a write whose name touches access or security (permissions, acl, privilege, role, sudo, password, ssh,
       kernel, ...);
     - one more step for a danger phrase in the description, and one more for openWorldHint (rule 5).
   Levels are capped at critical. The TrueNAS reference data grades some destructive tools medium or high and
   some writes low; we do not go below the category default: policies key on PolicyLayer's taxonomy, where the
   severity follows the category, and a gateway errs high.
5. Annotations come from an untrusted server: they may raise, never lower.
     destructiveHint true  -> at least destructive
     readOnlyHint false    -> at least write
     openWorldHint true    -> level one step up
     readOnlyHint true, destructiveHint false, idempotentHint -> no effect (a reason records a hint the name
     contradicts). Keys may be camelCase or snake_case; values True or "true"; objects with model_dump() work.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

CATEGORIES = ("read", "write", "execute", "destructive", "financial")
LEVELS = ("low", "medium", "high", "critical")

DEFAULT_LEVEL = {
    "read": "low",
    "write": "medium",
    "execute": "high",
    "destructive": "critical",
    "financial": "critical",
}

UNKNOWN_CATEGORY = "execute"

_MAX_NAME = 256
_MAX_DESCRIPTION = 8192
_MAX_PROPERTIES = 200
_MAX_ENUM = 64


@dataclass(frozen=True)
class Classification:
    category: str
    level: str
    reasons: tuple[str, ...]


def category_rank(category: str) -> int:
    """Position of a category in CATEGORIES (read 0 ... financial 4). Case-insensitive; ValueError if unknown."""
    return _rank(category, CATEGORIES, "category")


def level_rank(level: str) -> int:
    """Position of a level in LEVELS (low 0 ... critical 3). Case-insensitive; ValueError if unknown."""
    return _rank(level, LEVELS, "level")


def _rank(value: object, order: tuple[str, ...], what: str) -> int:
    if isinstance(value, str):
        key = value.strip().lower()
        if key in order:
            return order.index(key)
    raise ValueError(f"unknown risk {what}: {value!r}")


# --- vocabulary -------------------------------------------------------------------------------------------------

_VERBS: dict[str, frozenset[str]] = {
    "read": frozenset(
        """
        list ls listdir get query read search find show display describe status info check lookup fetch view
        inspect peek stat count summarize retrieve download browse explain validate verify preview estimate compare
        diff whoami poll watch tail dump
        """.split()
    ),
    "write": frozenset(
        """
        create new add insert update upsert set unset edit modify change put patch write save store rename move
        copy clone attach link enable disable configure import upload mount tag label mark pin keep assign grant
        register append promote dismiss restore acknowledge ack approve comment post reply annotate mkdir chown chmod
        touch generate initialize init setup schedule subscribe follow star merge
        """.split()
    ),
    "execute": frozenset(
        """
        run start stop restart sync resync exec execute trigger invoke call scrub replicate upgrade install deploy
        redeploy send apply activate deactivate commit abort cancel pause resume suspend lock unlock scan refresh
        reload pull push join leave connect disconnect build compile launch spawn eval migrate rotate ping
        notify dispatch emit broadcast publish retry flush signal
        """.split()
    ),
    "destructive": frozenset(
        """
        delete del destroy remove rm rmdir unlink wipe erase purge drop truncate format reset shutdown poweroff halt
        reboot kill terminate revoke detach export rollback revert overwrite replace uninstall deregister unregister
        discard clear prune nuke shred
        """.split()
    ),
    "financial": frozenset(
        """
        pay charge transfer refund purchase withdraw payout buy sell trade checkout disburse remit
        """.split()
    ),
}

# Money nouns: financial unless every verb in the name only reads.
_MONEY_NOUNS = frozenset(
    """
    invoice invoices billing payment payments subscription subscriptions payouts refunds charges wallet
    """.split()
)

# Nouns that name what a getter returns ("server_version", "cluster_state"): read words, like the read verbs.
_GETTER_NOUNS = frozenset(
    """
    information config configuration settings version state summary stats statistics details detail health metrics
    usage available choices options history
    """.split()
)

# Endings of singular words that look plural ("access", "status", "analysis", "canvas", "macos").
_PLURAL_EXCEPTIONS = ("ss", "us", "is", "as", "os")

_SECRET_STEMS = ("password", "passwd", "secret", "credential", "keytab", "token", "privatekey", "private_key", "apikey")

_ID_TYPES = ("number", "integer")

# Destructive verbs that, in a boolean option's name ("delete_users", "destroy"), widen what a call takes with it.
_HARM_WORDS = frozenset("delete destroy remove wipe erase purge drop truncate overwrite kill".split())

# Subjects where a change can lock people out or hand out power: writes to them go one step up.
_SENSITIVE_SUBJECTS = frozenset(
    """
    permission permissions acl acls privilege privileges role roles sudo sudoers password passwd auth
    authentication ssh firewall kernel sysctl
    """.split()
)

_FLAG_WORDS = frozenset({"confirm", "confirmed", "force", "forced", "recursive", "recursively", "cascade"})
_SELECTOR_PROPS = frozenset({"action", "actions", "method", "operation", "op", "verb", "command", "cmd"})
_CODE_PROPS = frozenset({"command", "cmd", "commands", "script", "shell", "code", "sql", "expression", "eval", "exec"})

_NEGATIONS = frozenset({"not", "never", "without", "no", "nor", "doesn't", "don't", "won't", "cannot", "can't"})


def _forms(table: dict[str, str]) -> dict[str, str]:
    return {form: family for family, forms in table.items() for form in forms.split()}


# Third-person forms that, anywhere in a description, reveal what the tool does.
_DESCRIPTION_VERBS = _forms(
    {
        "write": "creates modifies renames",
        "execute": "executes invokes triggers restarts deploys installs upgrades",
        "destructive": "deletes destroys removes wipes erases purges truncates overwrites reboots kills terminates "
        "revokes uninstalls detaches",
        "financial": "pays withdraws",
    }
)
# Forms that are also common plural nouns ("lists the runs", "shows charges"): they count only as the first word
# of a sentence ("Runs the task now.").
_SENTENCE_VERBS = _forms(
    {
        "write": "writes edits uploads inserts updates sets adds",
        "execute": "runs starts stops sends",
        "destructive": "drops formats resets exports",
        "financial": "charges refunds purchases transfers bills",
    }
)

_DESCRIPTION_PHRASES = (
    (re.compile(r"\bshuts?\s+down\b"), "shuts down", "destructive"),
    (re.compile(r"\brolls?\s+back\b"), "rolls back", "destructive"),
    (re.compile(r"\btransfers?\s+(?:funds|money|payments?)\b"), "transfers money", "financial"),
    (re.compile(r"\bsends?\s+(?:money|funds|payments?)\b"), "sends money", "financial"),
)

_DANGER = re.compile(
    r"\b(permanent(?:ly)?|irreversibl[ey]|(?:cannot|can't|can\s+not)\s+be\s+undone|unrecoverabl[ey]|all\s+data"
    r"|data\s+loss|lose\s+(?:all\s+)?data)\b"
)

_WORD = re.compile(r"[a-z']+")
_SENTENCE_END = re.compile(r"[.!?;:\n]+(?:\s|$)|\n")
_SPLIT = re.compile(r"[\W_]+")


# --- helpers ----------------------------------------------------------------------------------------------------


def tokenize(name: object) -> list[str]:
    """Split a tool name into lower-case words: snake_case, kebab-case, camelCase, dotted and digit boundaries."""
    if not isinstance(name, str):
        return []
    text = unicodedata.normalize("NFKC", name[:_MAX_NAME])
    words: list[str] = []
    for chunk in _SPLIT.split(text):
        if chunk:
            words.extend(_split_case(chunk))
    return words


def _split_case(chunk: str) -> list[str]:
    parts: list[str] = []
    start = 0
    n = len(chunk)
    for i in range(1, n):
        prev, cur = chunk[i - 1], chunk[i]
        boundary = (
            (prev.islower() and cur.isupper())
            or (prev.isdigit() != cur.isdigit())
            # end of an acronym: "HTTPStatus" -> "HTTP", "Status"
            or (prev.isupper() and cur.isupper() and i + 1 < n and chunk[i + 1].islower())
        )
        if boundary:
            parts.append(chunk[start:i])
            start = i
    parts.append(chunk[start:])
    return [p.lower() for p in parts if p]


_ORDER_DESC = ("financial", "destructive", "execute", "write", "read")


def _family(word: str) -> str | None:
    """The verb family of one word ("rerun" and "unmount" take the family of "run" and "mount"), or None."""
    for category in _ORDER_DESC:
        if word in _VERBS[category]:
            return category
    for prefix in ("re", "un"):
        rest = word[len(prefix) :]
        if word.startswith(prefix) and len(rest) >= 3:
            for category in _ORDER_DESC:
                if rest in _VERBS[category]:
                    return category
    return None


def _looks_plural(word: str) -> bool:
    return len(word) >= 4 and word.isalpha() and word.endswith("s") and not word.endswith(_PLURAL_EXCEPTIONS)


def _max_category(a: str, b: str) -> str:
    return a if CATEGORIES.index(a) >= CATEGORIES.index(b) else b


def _raise_level(level: str, steps: int = 1) -> str:
    return LEVELS[min(len(LEVELS) - 1, LEVELS.index(level) + steps)]


def _at_least(level: str, floor: str) -> str:
    return level if LEVELS.index(level) >= LEVELS.index(floor) else floor


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _falsy(value: object) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def _hints(annotations: object) -> dict[str, object]:
    """Annotation hints keyed by lower-case name without underscores ("readonlyhint")."""
    if annotations is None:
        return {}
    if not isinstance(annotations, dict):
        dump = getattr(annotations, "model_dump", None)
        if not callable(dump):
            return {}
        annotations = dump()
        if not isinstance(annotations, dict):
            return {}
    return {str(k).replace("_", "").lower(): v for k, v in annotations.items()}


def _is_boolean(prop: dict) -> bool:
    kind = prop.get("type")
    if kind == "boolean" or (isinstance(kind, list) and "boolean" in kind):
        return True
    return kind is None and isinstance(prop.get("default"), bool)


def _free_text(prop: dict) -> bool:
    """A property that takes any string: no enum, no const, type string or unspecified."""
    return "enum" not in prop and "const" not in prop and prop.get("type", "string") in ("string", ["string"])


def _name_category(words: list[str], reasons: list[str]) -> str:
    category: str | None = None
    seen: set[str] = set()
    families: set[str] = set()  # families of verbs (getter nouns excluded), to explain a mixed name
    for word in words:
        if word in seen:
            continue
        seen.add(word)
        family = _family(word)
        if family is not None:
            reasons.append(f"name verb '{word}' → {family}")
            families.add(family)
        elif word in _GETTER_NOUNS:
            family = "read"
            reasons.append(f"name noun '{word}' (what a getter returns) → read")
        else:
            continue
        category = family if category is None else _max_category(category, family)

    money = next((w for w in words if w in _MONEY_NOUNS), None)
    if money and category != "read":
        reasons.append(f"name mentions '{money}' (money) → financial")
        category = "financial"
    elif money:
        reasons.append(f"name mentions '{money}' but only reads it → read")

    if category is not None:
        if len(families) > 1:
            reasons.append(f"most severe word wins → {category}")
        return category
    if words and _looks_plural(words[-1]):
        reasons.append(f"no verb in name; '{words[-1]}' looks like a plural noun (a listing) → read")
        return "read"
    reasons.append(f"no known verb in name → {UNKNOWN_CATEGORY} (an unknown action is treated with caution)")
    return UNKNOWN_CATEGORY


def _negated(words: list[str], index: int) -> bool:
    """Whether one of the three words before words[index] is a negation ("does not delete")."""
    return any(w in _NEGATIONS for w in words[max(0, index - 3) : index])


def _negated_at(text: str, start: int) -> bool:
    """Whether one of the three words before text[start] is a negation."""
    before = _WORD.findall(text[max(0, start - 40) : start])
    return any(w in _NEGATIONS for w in before[-3:])


def _description(description: str, category: str, reasons: list[str]) -> tuple[str, int]:
    """Raise the category from the description; return (category, level steps from danger phrases)."""
    text = unicodedata.normalize("NFKC", description[:_MAX_DESCRIPTION]).lower().replace("\u2019", "'")
    said: list[tuple[str, str]] = []
    first_sentence = True
    for sentence in _SENTENCE_END.split(text):
        words = _WORD.findall(sentence)
        for index, word in enumerate(words):
            family = _DESCRIPTION_VERBS.get(word)
            if family is None and index == 0:
                family = _SENTENCE_VERBS.get(word)
                if family is None and first_sentence:
                    family = _family(word)  # a leading imperative: "Delete the dataset."
            if family is not None and not _negated(words, index):
                said.append((word, family))
        if words:
            first_sentence = False
    for pattern, label, family in _DESCRIPTION_PHRASES:
        match = pattern.search(text)
        if match and not _negated_at(text, match.start()):
            said.append((label, family))
    best = category
    for word, family in said:
        if CATEGORIES.index(family) > CATEGORIES.index(best):
            reasons.append(f"description says '{word}' → {family}")
            best = family
    for match in _DANGER.finditer(text):
        if not _negated_at(text, match.start()):
            reasons.append(f"description says '{match.group(0)}' → level raised")
            return best, 1
    return best, 0


def _schema(input_schema: dict, reasons: list[str]) -> tuple[int, str | None, bool]:
    """Look at the top-level properties. Return (level steps, floor level from selector enums, mentions secrets)."""
    props = input_schema.get("properties")
    if not isinstance(props, dict):
        return 0, None, False
    flag = selector = None
    floor: str | None = None
    secret = False
    for index, (raw_key, prop) in enumerate(props.items()):
        if index >= _MAX_PROPERTIES:
            break
        key = str(raw_key)
        lowered = key.lower()
        prop = prop if isinstance(prop, dict) else {}
        words = tokenize(key)
        if flag is None and _is_boolean(prop):
            if _FLAG_WORDS & set(words):
                flag = f"schema has boolean '{key}' → level raised"
            elif _HARM_WORDS & set(words):
                flag = f"schema has boolean '{key}' naming a destructive action → level raised"
        enum = prop.get("enum")
        if lowered in _SELECTOR_PROPS and isinstance(enum, list):
            worst = None
            for value in enum[:_MAX_ENUM]:
                for word in tokenize(value) if isinstance(value, str) else ():
                    family = _family(word)
                    if family and (worst is None or CATEGORIES.index(family) > CATEGORIES.index(worst[1])):
                        worst = (str(value), family)
            if worst and (floor is None or LEVELS.index(DEFAULT_LEVEL[worst[1]]) > LEVELS.index(floor)):
                floor = DEFAULT_LEVEL[worst[1]]
                reasons.append(f"schema '{key}' can select '{worst[0]}' ({worst[1]}) → level at least {floor}")
        elif selector is None and (lowered in _SELECTOR_PROPS or lowered in _CODE_PROPS) and _free_text(prop):
            selector = f"schema argument '{key}' chooses what runs → level raised"
        if not secret and prop.get("type") not in _ID_TYPES and any(stem in lowered for stem in _SECRET_STEMS):
            secret = True  # a numeric "credentials" is a reference to a secret, not the secret
    steps = 0
    for reason in (flag, selector):
        if reason:
            reasons.append(reason)
            steps += 1
    return steps, floor, secret


# --- the classifier ---------------------------------------------------------------------------------------------


def classify(
    name: str,
    description: str | None = None,
    input_schema: dict | None = None,
    annotations: dict | None = None,
) -> Classification:
    """Classify one tool. Total: never raises; see the module docstring for the rules."""
    try:
        return _classify(name, description, input_schema, annotations)
    except Exception as exc:  # a classifier bug must fail closed, not break the catalogue refresh
        return Classification(
            "destructive", "critical", (f"classification failed ({type(exc).__name__}) → destructive",)
        )


def the_more_severe(kept: Classification, new: Classification) -> Classification:
    """Category and level each the more severe of the two: what a changed definition gets until a person reviews
    it, so that an upstream cannot move its own tool to a more permissive classification (a description that
    stops saying "deletes" does not make a deletion a read)."""
    category = kept.category if category_rank(kept.category) >= category_rank(new.category) else new.category
    level = kept.level if level_rank(kept.level) >= level_rank(new.level) else new.level
    if (category, level) == (new.category, new.level):
        return new
    held = (f"the approved definition was classified {kept.category}/{kept.level}: kept until a person approves "
            "the changed one")
    return Classification(category, level, (*new.reasons, held))


def _classify(name: object, description: object, input_schema: object, annotations: object) -> Classification:
    reasons: list[str] = []
    words = tokenize(name)
    category = _name_category(words, reasons)
    name_category = category

    steps = 0
    if isinstance(description, str) and description:
        category, steps = _description(description, category, reasons)

    floor: str | None = None
    secret = any(stem in w for w in words for stem in _SECRET_STEMS)
    structural = 0
    if isinstance(input_schema, dict):
        structural, floor, schema_secret = _schema(input_schema, reasons)
        secret = secret or schema_secret

    sensitive = next((w for w in words if w in _SENSITIVE_SUBJECTS), None)
    if sensitive and category == "write":
        reasons.append(f"name changes '{sensitive}' (access or security) → level raised")
        structural += 1
    if structural > 1:
        reasons.append("name and schema signals raise the level one step in all")
    steps += min(structural, 1)

    hints = _hints(annotations)
    if _truthy(hints.get("destructivehint")) and CATEGORIES.index(category) < CATEGORIES.index("destructive"):
        reasons.append("annotation destructiveHint → destructive")
        category = "destructive"
    if _falsy(hints.get("readonlyhint")) and category == "read":
        reasons.append("annotation readOnlyHint false → write")
        category = "write"
    if _truthy(hints.get("readonlyhint")) and name_category != "read":
        reasons.append(f"annotation readOnlyHint ignored: the name says {name_category}")
    if _falsy(hints.get("destructivehint")) and category in ("destructive", "financial"):
        reasons.append(f"annotation destructiveHint false ignored: classified {category}")
    if _truthy(hints.get("openworldhint")):
        reasons.append("annotation openWorldHint → level raised")
        steps += 1

    level = DEFAULT_LEVEL[category]
    if floor is not None:
        level = _at_least(level, floor)
    if secret and LEVELS.index(level) < LEVELS.index("medium"):
        reasons.append("name or parameters mention secrets → level at least medium")
        level = "medium"
    if steps:
        level = _raise_level(level, steps)
    return Classification(category, level, tuple(reasons))
