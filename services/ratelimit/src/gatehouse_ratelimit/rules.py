"""The rules: a YAML file of domains → descriptors → limits by tier, validated and hot-reloaded.

```yaml
domains:
  http:
    descriptors:
      - name: per_user
        descriptor: [{key: user}]
        limits:
          default: {requests_per_unit: 100, unit: minute}
          admin: {requests_per_unit: 1000, unit: minute}
  ws_connections:
    lease:
      limits: {default: 5, admin: 20}
```

A descriptor rule matches a request descriptor with the same keys in the same order;
an entry with a `value` matches only that value, and the rule with the most values
wins. A tier missing from `limits` falls back to `default`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from watchfiles import awatch

from gatehouse_ratelimit.metrics import RULES_RELOAD_SUCCESS, RULES_RELOADS

log = structlog.get_logger(__name__)

DEFAULT_TIER = "default"


class Unit(StrEnum):
    """The length of a limit's sliding window."""

    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @property
    def seconds(self) -> int:
        """The window's length in seconds."""
        return _UNIT_SECONDS[self]


_UNIT_SECONDS = {Unit.SECOND: 1, Unit.MINUTE: 60, Unit.HOUR: 3600, Unit.DAY: 86400}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The largest limit a rule or an override may set.
MAX_REQUESTS_PER_UNIT = 10_000_000


class Limit(_Strict):
    """At most `requests_per_unit` hits in any sliding window one `unit` long."""

    requests_per_unit: int = Field(ge=1, le=MAX_REQUESTS_PER_UNIT)
    unit: Unit


class EntryRule(_Strict):
    """One entry of a descriptor rule: a key, and optionally the only value it matches."""

    key: str = Field(min_length=1)
    value: str | None = None


class DescriptorRule(_Strict):
    """Limits by tier for request descriptors of this shape, or `unlimited`."""

    name: str = ""
    descriptor: list[EntryRule] = Field(min_length=1)
    limits: dict[str, Limit] = Field(default_factory=dict)
    unlimited: bool = False
    shadow_mode: bool = False

    @model_validator(mode="after")
    def _limits_or_unlimited(self) -> DescriptorRule:
        if self.unlimited and self.limits:
            raise ValueError("an unlimited rule takes no limits")
        if not self.unlimited and DEFAULT_TIER not in self.limits:
            raise ValueError(f"limits need a '{DEFAULT_TIER}' tier (or set unlimited: true)")
        return self

    @property
    def label(self) -> str:
        """The rule's name, or its descriptor written out (`user`, `remote_address=10.0.0.1`)."""
        if self.name:
            return self.name
        return ".".join(e.key if e.value is None else f"{e.key}={e.value}" for e in self.descriptor)

    def limit_for(self, tier: str) -> Limit | None:
        """The limit of `tier` (falling back to the default tier); None when unlimited."""
        if self.unlimited:
            return None
        return self.limits.get(tier) or self.limits[DEFAULT_TIER]


class LeaseRule(_Strict):
    """Concurrent leases allowed per holder key, by tier."""

    limits: dict[str, int]

    @model_validator(mode="after")
    def _has_default(self) -> LeaseRule:
        if DEFAULT_TIER not in self.limits:
            raise ValueError(f"limits need a '{DEFAULT_TIER}' tier")
        if any(n < 1 for n in self.limits.values()):
            raise ValueError("lease limits must be at least 1")
        return self

    def limit_for(self, tier: str) -> int:
        """The leases allowed to one key of `tier` (falling back to the default tier)."""
        return self.limits.get(tier) or self.limits[DEFAULT_TIER]


class DomainRules(_Strict):
    """A domain's descriptor rules and its optional lease rule."""

    descriptors: list[DescriptorRule] = Field(default_factory=list)
    lease: LeaseRule | None = None

    @model_validator(mode="after")
    def _no_duplicates(self) -> DomainRules:
        seen: set[tuple[tuple[str, str | None], ...]] = set()
        for rule in self.descriptors:
            shape = tuple((e.key, e.value) for e in rule.descriptor)
            if shape in seen:
                raise ValueError(f"two rules for the descriptor {rule.label}")
            seen.add(shape)
        return self


class RulesDocument(_Strict):
    """The whole rules file."""

    domains: dict[str, DomainRules]


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class RateLimitRules:
    """A validated rules document, ready for lookups; immutable, swapped whole on reload."""

    document: RulesDocument
    digest: str

    def match(self, domain: str, entries: Sequence[tuple[str, str]]) -> DescriptorRule | None:
        """The most specific rule of `domain` for a descriptor's (key, value) entries."""
        rules = self.document.domains.get(domain)
        if rules is None:
            return None
        best: DescriptorRule | None = None
        best_values = -1
        for rule in rules.descriptors:
            if len(rule.descriptor) != len(entries):
                continue
            if all(
                e.key == key and (e.value is None or e.value == value)
                for e, (key, value) in zip(rule.descriptor, entries, strict=True)
            ):
                values = sum(e.value is not None for e in rule.descriptor)
                if values > best_values:
                    best, best_values = rule, values
        return best

    def lease_rule(self, domain: str) -> LeaseRule | None:
        """The lease rule of `domain`, if it has one."""
        rules = self.document.domains.get(domain)
        return rules.lease if rules else None

    def knows(self, domain: str) -> bool:
        """Whether the rules name `domain` (metrics label other domains `other`)."""
        return domain in self.document.domains


def _node_line(root: yaml.Node, loc: Sequence[int | str]) -> int:
    """The 1-based line of the deepest YAML node that `loc` reaches from `root`."""
    node = root
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1


def parse_rules(text: str, source: str = "rules") -> RateLimitRules:
    """Validate a rules document; RulesError lists each problem as `source:line: field: why`."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise RulesError(f"{where}: not valid YAML: {error}") from error
    if root is None or not isinstance(data, dict):
        raise RulesError(f"{source}:1: expected a mapping with a 'domains' key")
    try:
        document = RulesDocument.model_validate(data)
    except ValidationError as error:
        problems = [
            f"{source}:{_node_line(root, e['loc'])}: "
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
            for e in error.errors()
        ]
        raise RulesError("\n".join(problems)) from error
    for name in document.domains:
        if not name:
            raise RulesError(f"{source}: a domain name is empty")
    return RateLimitRules(document, hashlib.sha256(text.encode()).hexdigest())


def load_rules(path: Path) -> RateLimitRules:
    """Read and validate the rules file at `path`."""
    try:
        text = path.read_text()
    except OSError as error:
        raise RulesError(f"{path}: cannot read: {error.strerror or error}") from error
    return parse_rules(text, str(path))


def resolve_rules_path(configured: Path, cwd: Path | None = None) -> Path:
    """Where the rules file is: absolute as given; relative to the working directory when
    it exists there; else relative to the source checkout holding this package."""
    if configured.is_absolute():
        return configured
    here = (cwd or Path.cwd()) / configured
    if here.exists():
        return here
    checkout = Path(__file__).resolve().parents[4] / configured
    return checkout if checkout.exists() else here


class RulesFile:
    """The current rules of a file, replaced when the file changes and the new text is valid.

    Readers take `.rules` once per request, so a reload never disturbs a decision in
    flight; a broken new file leaves the old rules in place and logs why.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rules = load_rules(path)
        RULES_RELOAD_SUCCESS.set(1)

    def reload(self) -> bool:
        """Re-read the file; True when new rules took effect."""
        try:
            rules = load_rules(self.path)
        except RulesError as error:
            RULES_RELOADS.labels("error").inc()
            RULES_RELOAD_SUCCESS.set(0)
            log.error("rules reload failed; keeping the previous rules", error=str(error))
            return False
        RULES_RELOAD_SUCCESS.set(1)
        if rules.digest == self.rules.digest:
            return False
        self.rules = rules
        RULES_RELOADS.labels("ok").inc()
        log.info("rules reloaded", path=str(self.path), domains=sorted(rules.document.domains))
        return True

    async def watch(self, stop: asyncio.Event, debounce_ms: int = 200) -> None:
        """Reload on every change in the file's folder (editors and config maps replace
        files by renaming) until `stop` is set."""
        async for _ in awatch(self.path.parent, stop_event=stop, debounce=debounce_ms):
            self.reload()
