"""The docs stand on their own, and what they show of the rate-limit rules is the real file.

Every page under docs/ and README.md may link only to files inside the repository (or to
public http(s) pages) and cites no design note kept elsewhere. docs/ratelimit.md shows
deploy/ratelimit/rules.yaml: each yaml block introduced as that file is checked against
it, every other yaml block there must be a rules document the service's own loader
accepts, and the table of shipped limits and the quoted loader error must match what the
service reads from the real file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from gatehouse_ratelimit.rules import RateLimitRules, RulesError, parse_rules

ROOT = Path(__file__).resolve().parents[1]
DOCS = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
RATELIMIT_DOC = ROOT / "docs" / "ratelimit.md"
RULES_FILE = ROOT / "deploy" / "ratelimit" / "rules.yaml"

# Design notes that live outside the repository; the docs state what they need instead.
# Spelled in parts, so that searching the tree for these names finds only real citations.
FOREIGN_NOTES = (
    *(f"{name}.md" for name in ("CONTRACT", "ARCHITECTURE", "STYLE")),
    "/".join(("shared", "design")),
)
# Schemes a doc may link to: public pages.
PUBLIC_SCHEMES = ("http://", "https://", "mailto:")

_FENCE = re.compile(r"^[ \t]*(```+|~~~+)([^\n]*)\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*)>?"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
)
_REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _blank(match: re.Match[str]) -> str:
    """The matched text with every character but newlines replaced by a space."""
    return re.sub(r"[^\n]", " ", match.group(0))


def prose(markdown: str) -> str:
    """`markdown` with fenced blocks and code spans blanked out, line numbers kept."""
    return _CODE_SPAN.sub(_blank, _FENCE.sub(_blank, markdown))


def links(markdown: str) -> Iterator[tuple[int, str]]:
    """(line, target) of every inline link, image and reference definition outside code."""
    text = prose(markdown)
    for pattern in (_INLINE_LINK, _REFERENCE_LINK):
        for match in pattern.finditer(text):
            yield text.count("\n", 0, match.start()) + 1, match.group(1)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, blanks as `-`."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def anchors(markdown: str) -> set[str]:
    """The anchors of a page's headings, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for match in _HEADING.finditer(prose(markdown)):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_problems(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the links of `page`: targets outside `root`, missing, or foreign."""
    markdown = page.read_text()
    root = root.resolve()
    problems = []
    for line, target in links(markdown):
        where = f"{page.relative_to(root)}:{line}: {target}"
        if target.startswith(PUBLIC_SCHEMES):
            continue
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target) or target.startswith(("/", "\\")):
            problems.append(f"{where}: not a relative link into the repository")
            continue
        path_part, _, fragment = target.partition("#")
        path_part = unquote(path_part.partition("?")[0])
        resolved = (page.parent / path_part).resolve() if path_part else page.resolve()
        if not resolved.is_relative_to(root):
            problems.append(f"{where}: points outside the repository")
        elif not resolved.exists():
            problems.append(f"{where}: no such file")
        elif (
            fragment
            and resolved.suffix == ".md"
            and unquote(fragment).lower() not in anchors(resolved.read_text())
        ):
            problems.append(f"{where}: no heading with that anchor")
    return problems


def foreign_mentions(page: Path, root: Path = ROOT) -> list[str]:
    """Lines of `page` that cite a design note kept outside the repository."""
    return [
        f"{page.relative_to(root)}:{number}: {line.strip()}"
        for number, line in enumerate(page.read_text().splitlines(), start=1)
        if any(note in line for note in FOREIGN_NOTES)
    ]


@dataclass(frozen=True)
class YamlBlock:
    """A fenced yaml block of a page and the paragraph that introduces it."""

    line: int
    intro: str
    text: str

    @property
    def presented_as_rules_file(self) -> bool:
        """Whether the page says this block is the rules file (it names the file)."""
        return RULES_FILE.name in self.intro

    @property
    def presented_in_full(self) -> bool:
        """Whether the page says this block is the whole file."""
        return "in full" in self.intro


def yaml_blocks(markdown: str) -> list[YamlBlock]:
    """Every ```yaml block of `markdown`, with the paragraph just above it."""
    blocks = []
    for match in _FENCE.finditer(markdown):
        if match.group(2).strip().lower() not in ("yaml", "yml"):
            continue
        before = markdown[: match.start()].rstrip("\n").split("\n\n")[-1]
        line = markdown.count("\n", 0, match.start()) + 1
        blocks.append(YamlBlock(line, " ".join(before.split()), match.group(3)))
    return blocks


def is_verbatim_excerpt(block: str, whole: str) -> bool:
    """Whether the lines of `block` appear, consecutively and unchanged, in `whole`."""
    excerpt = [line.rstrip() for line in block.strip("\n").splitlines()]
    lines = [line.rstrip() for line in whole.splitlines()]
    return bool(excerpt) and any(
        lines[start : start + len(excerpt)] == excerpt
        for start in range(len(lines) - len(excerpt) + 1)
    )


def rules_differences(example: RateLimitRules, real: RateLimitRules) -> list[str]:
    """Rules of `example` that the real file does not hold exactly as written."""
    problems = []
    for name, domain in example.document.domains.items():
        real_domain = real.document.domains.get(name)
        if real_domain is None:
            problems.append(f"domain {name}: not in {RULES_FILE.name}")
            continue
        for rule in domain.descriptors:
            if rule not in real_domain.descriptors:
                problems.append(f"domain {name}: rule {rule.label} differs or is missing")
        if domain.lease is not None and domain.lease != real_domain.lease:
            problems.append(f"domain {name}: lease limits differ or are missing")
    return problems


def rules_file_problems(block: YamlBlock, real_text: str) -> list[str]:
    """Why `block`, shown as the rules file, does not agree with the real file's text."""
    if block.presented_in_full:
        if block.text.strip("\n") == real_text.strip("\n"):
            return []
        return [f"line {block.line}: shown in full but not the file's exact text"]
    if is_verbatim_excerpt(block.text, real_text):
        return []
    try:
        example = parse_rules(block.text, f"block at line {block.line}")
    except RulesError as error:
        return [f"line {block.line}: neither an excerpt of the file nor valid rules: {error}"]
    real = parse_rules(real_text, str(RULES_FILE))
    return [f"line {block.line}: {p}" for p in rules_differences(example, real)]


def _real_rules() -> RateLimitRules:
    return parse_rules(RULES_FILE.read_text(), str(RULES_FILE))


# --- the pages ---


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_cites_no_foreign_design_note(page: Path) -> None:
    assert foreign_mentions(page) == []


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_links_resolve_inside_the_repository(page: Path) -> None:
    assert link_problems(page) == []


# --- the checks themselves fail when they should ---


def test_link_check_reports_links_outside_missing_and_foreign(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## A section\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md) [ok too](other.md#a-section) [self](#page) [web](https://example.org/)\n"
        "[outside](../../notes/brief.md) [missing](nowhere.md)\n"
        "[absolute](/etc/hosts) [file](file:///etc/hosts) [anchor](other.md#no-such)\n"
        "[spread over\ntwo lines](gone.md)\n"
        "`[in code](nowhere.md)`\n\n"
        "```md\n[in a block](nowhere.md)\n```\n\n"
        "[ref]: ../outside.md\n"
    )
    problems = link_problems(page, root=tmp_path)
    reported = {p.split(": ")[1] for p in problems}
    assert reported == {
        "../../notes/brief.md",
        "nowhere.md",
        "/etc/hosts",
        "file:///etc/hosts",
        "other.md#no-such",
        "gone.md",
        "../outside.md",
    }
    assert any(p.startswith("docs/page.md:6: gone.md") for p in problems)


def test_foreign_mentions_are_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    note = FOREIGN_NOTES[0]
    page.write_text(f"# Page\n\nAs {note} says.\n\nSee docs/architecture.md.\n")
    assert foreign_mentions(page, root=tmp_path) == [f"page.md:3: As {note} says."]


def test_slugs_follow_github() -> None:
    assert slug("Compatibility with the monolith") == "compatibility-with-the-monolith"
    assert slug("API (`protos/gatehouse_protos/audit/v1/audit.proto`)") == (
        "api-protosgatehouse_protosauditv1auditproto"
    )
    assert anchors("# A\n\n## B\n\n## B\n") == {"a", "b", "b-1"}


# --- docs/ratelimit.md and deploy/ratelimit/rules.yaml ---


def test_ratelimit_doc_shows_the_rules_file() -> None:
    shown = [b for b in yaml_blocks(RATELIMIT_DOC.read_text()) if b.presented_as_rules_file]
    assert shown, f"docs/ratelimit.md shows no yaml block introduced as {RULES_FILE.name}"
    real_text = RULES_FILE.read_text()
    for block in shown:
        assert rules_file_problems(block, real_text) == []


def test_other_rules_examples_are_accepted_by_the_loader() -> None:
    for block in yaml_blocks(RATELIMIT_DOC.read_text()):
        if block.presented_as_rules_file:
            continue
        assert isinstance(yaml.safe_load(block.text), dict)
        parse_rules(block.text, f"docs/ratelimit.md block at line {block.line}")


def test_rules_file_check_refuses_what_the_file_does_not_say() -> None:
    real_text = RULES_FILE.read_text()
    intro = f"`deploy/ratelimit/{RULES_FILE.name}` by default:"
    in_full = YamlBlock(1, f"The shipped file, {RULES_FILE.name}, in full:", real_text)
    assert rules_file_problems(in_full, real_text) == []
    edited = real_text.replace("requests_per_unit: 100,", "requests_per_unit: 101,", 1)
    assert edited != real_text
    assert rules_file_problems(YamlBlock(1, in_full.intro, edited), real_text) != []

    excerpt = "\n".join(real_text.splitlines()[8:13])
    assert rules_file_problems(YamlBlock(1, intro, excerpt), real_text) == []

    invented = (
        "domains:\n  http:\n    descriptors:\n"
        "      - name: trusted_proxy\n"
        "        descriptor: [{key: remote_address, value: 10.0.0.1}]\n"
        "        unlimited: true\n"
    )
    problems = rules_file_problems(YamlBlock(7, intro, invented), real_text)
    assert problems == ["line 7: domain http: rule trusted_proxy differs or is missing"]

    same_rule = (
        "domains:\n  ws_messages:\n    descriptors:\n"
        "      - name: ws_messages_per_user\n"
        "        descriptor: [{key: user}]\n"
        "        limits:\n"
        "          default: {requests_per_unit: 60, unit: minute}\n"
        "          admin: {requests_per_unit: 600, unit: minute}\n"
    )
    assert rules_file_problems(YamlBlock(1, intro, same_rule), real_text) == []
    lease = "domains:\n  ws_connections:\n    lease:\n      limits: {default: 6}\n"
    assert rules_file_problems(YamlBlock(1, intro, lease), real_text) != []


def test_quoted_loader_error_is_what_the_loader_says() -> None:
    doc = " ".join(RATELIMIT_DOC.read_text().split())
    quoted = re.search(r"with `unit: (\w+)` on its line (\d+) is refused with `([^`]+)`", doc)
    assert quoted, "docs/ratelimit.md no longer quotes the loader's error for a bad unit"
    unit, line, message = quoted.group(1), int(quoted.group(2)), quoted.group(3)
    lines = RULES_FILE.read_text().splitlines()
    assert re.search(r"\bunit: \w+", lines[line - 1])
    lines[line - 1] = re.sub(r"\bunit: \w+", f"unit: {unit}", lines[line - 1])
    with pytest.raises(RulesError) as refused:
        parse_rules("\n".join(lines) + "\n", RULES_FILE.name)
    assert message in str(refused.value).splitlines()


def _limit_text(requests_per_unit: int, unit: str) -> str:
    return f"{requests_per_unit} per {unit}"


def test_table_of_shipped_limits_matches_the_file() -> None:
    doc = RATELIMIT_DOC.read_text()
    section = doc[doc.index("The shipped limits") :].split("\n\n")[1]
    rows = [
        [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()[2:]
    ]
    real = _real_rules()
    descriptor_rules = lease_rules = 0
    for domain, descriptor, default, admin in rows:
        if domain.endswith("(lease)"):
            lease_rules += 1
            lease = real.lease_rule(domain.removesuffix("(lease)").strip().strip("`"))
            assert lease is not None, domain
            assert (default, admin) == (
                f"{lease.limit_for('default')} sockets",
                f"{lease.limit_for('admin')} sockets",
            )
            continue
        descriptor_rules += 1
        rule = real.match(domain, [(descriptor, "any")])
        assert rule is not None, (domain, descriptor)
        shown = []
        for tier in ("default", "admin"):
            limit = rule.limit_for(tier)
            assert limit is not None
            shown.append(_limit_text(limit.requests_per_unit, limit.unit.value))
        assert [default, admin] == shown, (domain, descriptor)
    domains = real.document.domains.values()
    assert descriptor_rules == sum(len(d.descriptors) for d in domains)
    assert lease_rules == sum(d.lease is not None for d in domains)
