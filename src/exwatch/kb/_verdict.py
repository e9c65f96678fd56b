"""Per-wave verdicts for a build: state, a sentence saying why, and the update that fixes it.

The fixed-build test follows builds.md section 3 (HealthChecker's
``Test-ExchangeBuildGreaterOrEqualThanSecurityPatch``), per CVE and never by "build >= X":

1. Collect the product's CUs that received update Y (e.g. Mar21SU), each with its Y build.
2. Take the newest of them (the highest build: within one update the newest CU has the highest
   third part). A build of a *later* CU contains Y, because every CU includes every fix released
   before it; a build at or above the newest Y build is therefore fixed.
3. Otherwise the build is fixed only if its own CU received Y and its revision is at least that
   CU's Y build. A CU that never received Y and lies below the newest Y CU needs a CU update.

So 2016 CU20 RTM ``15.1.2242.4`` is fixed for ProxyLogon (a CU after CU19, the newest Mar21SU CU)
but not for ProxyShell (CU20 itself received Apr21SU at ``15.1.2242.8``).

Cases the algorithm does not settle are decided here and said in the reason:
- only the CU is known (``15.1.2176``) and that CU received Y: ``unknown``, both outcomes stated;
- an unpublished revision of a known CU: judged like the nearest lower known build of that CU
  (revisions only grow with each update of a CU), which the algorithm above already does;
- an unpublished CU between the newest CU that received Y and the next CU (which contains Y):
  ``unknown`` (it may predate Y or not); an unpublished CU below the newest Y CU: ``vulnerable``;
- products with linear update rollups (Exchange 2010) have a minimum build instead (RU32).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from exwatch.kb._build import Build, parse_build
from exwatch.kb._catalogue import UNKNOWN_PRODUCT, Catalogue, CatalogueEntry, CuInfo, product_of
from exwatch.kb._waves import Cve, Wave, WaveData


class State(StrEnum):
    """Per-wave states (kb decides the first four and unknown; probes decide mitigated) and host states."""

    VULNERABLE = "vulnerable"
    PATCHED = "patched"
    MITIGATED = "mitigated"
    NOT_AFFECTED = "not_affected"
    UNKNOWN = "unknown"
    NOT_EXCHANGE = "not_exchange"
    UNREACHABLE = "unreachable"


# Which state a wave takes when its CVEs disagree: any open CVE makes the wave open.
_PRIORITY = {State.VULNERABLE: 0, State.UNKNOWN: 1, State.PATCHED: 2, State.NOT_AFFECTED: 3}


@dataclass(frozen=True, slots=True)
class Fix:
    """What fixes a wave on this build: SU builds for its CU, the first later CU containing the fix, prose."""

    security_update: tuple[str, ...] = ()
    cumulative_update: str | None = None
    text: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (contract: security_update, cumulative_update, text)."""
        return {
            "security_update": list(self.security_update),
            "cumulative_update": self.cumulative_update,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class CveVerdict:
    """The state of one CVE on one build, with the clause explaining it."""

    cve: str
    state: State
    clause: str  # contains "{cves}" where the CVE ids go
    fix_build: Build | None = None  # the build that fixes it on this CU (SU build or minimum build)
    fix_name: str = ""  # the update that fixes it (e.g. Mar21SU, "Exchange 2010 SP3 Update Rollup 32")
    later_cu_after: tuple[int, int, int] | None = None  # CUs after this key contain the fix


@dataclass(frozen=True, slots=True)
class WaveVerdict:
    """The verdict for one wave: state, reason, per-CVE states and the fix."""

    wave: str
    state: State
    reason: str
    cve_verdicts: tuple[CveVerdict, ...]
    fix: Fix

    @property
    def cves(self) -> dict[str, State]:
        """CVE id -> state."""
        return {c.cve: c.state for c in self.cve_verdicts}

    @property
    def fix_text(self) -> str:
        """The fix as one sentence."""
        return self.fix.text

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: state, reason, cves, fix."""
        return {
            "state": self.state.value,
            "reason": self.reason,
            "cves": {c.cve: c.state.value for c in self.cve_verdicts},
            "fix": self.fix.to_dict(),
        }


@dataclass(frozen=True)
class Verdict:
    """What the knowledge base says about one build, per wave."""

    build: Build
    product: str
    cu: str | None
    support: str  # supported | out_of_support | unknown (not a known Exchange version)
    known: bool  # the exact build (or its alias) is in the catalogue
    note: str  # what the build is, in words
    entry: CatalogueEntry | None
    same_as: Build | None
    waves: dict[str, WaveVerdict] = field(default_factory=dict)

    @property
    def vulnerable(self) -> bool:
        """True if any wave is vulnerable."""
        return any(w.state is State.VULNERABLE for w in self.waves.values())

    @functools.cached_property
    def _template(self) -> dict[str, Any]:
        return {
            "build": str(self.build),
            "product": self.product,
            "cu": self.cu,
            "support": self.support,
            "known": self.known,
            "same_as": str(self.same_as) if self.same_as else None,
            "note": self.note,
            "catalogue_entry": self.entry.to_dict() if self.entry else None,
            "waves": {wid: w.to_dict() for wid, w in self.waves.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of ``exwatch kb verdict`` (CONTRACTS.md), plus known/note/catalogue_entry.

        A fresh copy each call (callers may change it), built from a template made once per verdict:
        a scan asks for it once per host.
        """
        t = self._template
        out = dict(t)
        entry = t["catalogue_entry"]
        if entry is not None:
            out["catalogue_entry"] = {**entry, "fixes": list(entry["fixes"])}
        out["waves"] = {
            wid: {
                "state": w["state"],
                "reason": w["reason"],
                "cves": dict(w["cves"]),
                "fix": {**w["fix"], "security_update": list(w["fix"]["security_update"])},
            }
            for wid, w in t["waves"].items()
        }
        return out


@dataclass(frozen=True, slots=True)
class _SuIndex:
    """For one product and one update: the Y build of each CU that received it, and the newest one."""

    by_cu: dict[tuple[int, int, int], CatalogueEntry]
    newest: CatalogueEntry


def su_base(name: str) -> str:
    """``Aug23SUv2`` -> ``Aug23SU``: a re-release fixes what the first release fixed."""
    return re.sub(r"v\d+$", "", name)


_MONTHS = {
    "Jan": "January",
    "Feb": "February",
    "Mar": "March",
    "Apr": "April",
    "May": "May",
    "Jun": "June",
    "Jul": "July",
    "Aug": "August",
    "Sep": "September",
    "Oct": "October",
    "Nov": "November",
    "Dec": "December",
}


class Engine:
    """Verdicts over one catalogue and one set of waves; results cached per build."""

    def __init__(
        self,
        catalogue: Catalogue,
        waves: WaveData,
        aliases: dict[Build, tuple[Build, str]] | None = None,
        today: date | None = None,
        as_of: date | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.data = waves
        self.aliases = aliases or {}
        # as_of: the knowledge of that day. The catalogue given holds only the builds released by then
        # (see :meth:`KnowledgeBase.engine_as_of`); a fix released later does not exist yet.
        self.as_of = as_of
        self.today = as_of or today or date.today()
        self._su: dict[tuple[str, str], _SuIndex | None] = {}
        self._verdict = functools.lru_cache(maxsize=200_000)(self._compute)
        self._by_text = functools.lru_cache(maxsize=200_000)(self._from_text)

    # -- lookups -------------------------------------------------------------------------------

    def su_index(self, product: str, update: str) -> _SuIndex | None:
        """The CUs of ``product`` that received ``update`` (memoised)."""
        key = (product, update)
        if key not in self._su:
            by_cu: dict[tuple[int, int, int], CatalogueEntry] = {}
            for e in self.catalogue.entries:
                if e.product == product and e.su_name and su_base(e.su_name) == update:
                    # Entries are in ascending order: the first per CU is that CU's first Y build.
                    by_cu.setdefault(e.build.cu_key, e)
            newest = max(by_cu.values(), key=lambda e: e.build.sort_key) if by_cu else None
            self._su[key] = _SuIndex(by_cu, newest) if newest else None
        return self._su[key]

    def update_title(self, update: str) -> str:
        """``Mar21SU`` -> ``March 2021 security update (KB5000871)``."""
        u = self.data.updates.get(update)
        if u is not None:
            return f"{u.title} ({u.kb})" if u.kb else u.title
        m = re.fullmatch(r"([A-Z][a-z]{2})(\d{2})(SU|HU)(v\d+)?", update)
        if m:
            kind = "security update" if m.group(3) == "SU" else "hotfix update"
            return f"{_MONTHS.get(m.group(1), m.group(1))} 20{m.group(2)} {kind}"
        return update

    def support_of(self, product: str) -> str:
        """supported | out_of_support | unknown, as of ``today``."""
        if product not in self.data.end_of_support:
            return "unknown"
        eos = self.data.end_of_support[product]
        return "supported" if eos is None or self.today <= eos else "out_of_support"

    def cu_label(self, info: CuInfo | None) -> str:
        """A CU's name for sentences (``CU19``)."""
        return info.name if info else "?"

    # -- verdict -------------------------------------------------------------------------------

    def verdict(self, b: Build) -> Verdict:
        """The verdict for a build (cached)."""
        return self._verdict(b)

    def verdict_text(self, text: str) -> Verdict:
        """The verdict for a build string (cached by the string: a scan meets the same few hundred)."""
        return self._by_text(text)

    def _from_text(self, text: str) -> Verdict:
        return self._verdict(parse_build(text))

    def _compute(self, b: Build) -> Verdict:
        same_as: Build | None = None
        alias_reason = ""
        if b in self.aliases and b not in self.catalogue.by_build:
            same_as, alias_reason = self.aliases[b]
        judged = same_as or b
        product = product_of(judged)
        info = self.catalogue.cu(judged)
        entry = None if judged.cu_only else self.catalogue.by_build.get(judged)
        if product == UNKNOWN_PRODUCT:
            note = f"{b} is not a known Exchange version"
        elif info is None:
            note = f"{b} is {product}, but {judged.cu_key[2]} is not a published CU of {product}"
            if judged.cu_only:
                note += " (only the CU is known)"
        else:
            note = f"{b} is {product} {info.name}"
            if entry is not None and entry.su_name:
                note += f" {entry.su_name}"
            if same_as is not None:
                note += f" (same as {same_as}: {alias_reason.rstrip('.')})"
            elif judged.cu_only:
                note += " (only the CU is known)"
            elif entry is None:
                lower = self.catalogue.nearest_lower(judged)
                if lower is None:
                    note += (
                        f" (build not in the catalogue; below the CU's release build {info.release.build})"
                    )
                else:
                    what = f"{info.name} {lower.su_name}".strip() if lower.su_name else info.name
                    note += f" (build not in the catalogue; nearest lower known build {lower.build}, {what})"
        waves = {w.id: self._wave(judged, product, info, w, b if same_as else None) for w in self.data.waves}
        return Verdict(
            build=b,
            product=product,
            cu=entry.cu if entry is not None else (info.name if info else None),
            support=self.support_of(product),
            known=entry is not None,
            note=note,
            entry=entry,
            same_as=same_as,
            waves=waves,
        )

    def _wave(
        self, b: Build, product: str, info: CuInfo | None, wave: Wave, alias_of: Build | None = None
    ) -> WaveVerdict:
        results = tuple(self._cve(b, product, info, self.data.cves[c]) for c in wave.cves)
        state = min((r.state for r in results), key=lambda s: _PRIORITY[s])
        groups: dict[tuple[State, str], list[str]] = {}
        for r in sorted(results, key=lambda r: _PRIORITY[r.state]):
            groups.setdefault((r.state, r.clause), []).append(r.cve)
        what = self._describe(b, product, info)
        if alias_of is not None:
            what = what.replace(f"({b})", f"({alias_of}, reported for {b})")
        clauses = [clause.format(cves=", ".join(cves)) for (_, clause), cves in groups.items()]
        reason = f"{what}: " + "; ".join(clauses) + "."
        return WaveVerdict(wave.id, state, reason, results, self._fix(b, product, info, wave, state, results))

    def _describe(self, b: Build, product: str, info: CuInfo | None) -> str:
        if product == UNKNOWN_PRODUCT:
            return f"{b} is not a known Exchange version"
        if info is None:
            return f"{product} {b} (not a published CU)"
        entry = None if b.cu_only else self.catalogue.by_build.get(b)
        name = f"{product} {info.name}"
        if entry is not None and entry.su_name:
            name += f" {entry.su_name}"
        if b.cu_only:
            return f"{name} (only the CU is known)"
        if entry is not None:
            return f"{name} ({b})"
        lower = self.catalogue.nearest_lower(b)
        if lower is None:
            return f"{name} ({b}, not in the catalogue, below the CU's release build {info.release.build})"
        return f"{name} ({b}, not in the catalogue, judged as its nearest lower known build {lower.build})"

    def _cve(self, b: Build, product: str, info: CuInfo | None, cve: Cve) -> CveVerdict:
        if product == UNKNOWN_PRODUCT:
            return CveVerdict(cve.id, State.UNKNOWN, "not a known Exchange version, {cves} cannot be judged")
        if product in self.data.contains_all_fixes:
            return CveVerdict(
                cve.id, State.PATCHED, f"{product} post-dates the fix of {{cves}} and contains it"
            )
        if product not in cve.affected:
            return CveVerdict(
                cve.id, State.NOT_AFFECTED, f"{product} is not among the products affected by {{cves}}"
            )
        if product in cve.fixed_in_build:
            if self.as_of is not None and cve.fixed_in_build[product].build not in self.catalogue.by_build:
                return self._not_yet(cve, cve.fixed_in_build[product].name)
            return self._cve_min_build(b, product, cve)
        su = self.su_index(product, cve.fixed_by)
        title = self.update_title(cve.fixed_by)
        if su is None and self.as_of is not None:
            return self._not_yet(cve, title)
        if su is None:
            return CveVerdict(
                cve.id,
                State.UNKNOWN,
                f"the catalogue holds no {cve.fixed_by} build for {product}: {{cves}} unknown",
            )
        own = su.by_cu.get(b.cu_key)
        if own is not None:
            return self._cve_own_cu(b, info, cve, own, su.newest.build.cu_key, title)
        return self._cve_other_cu(b, product, info, cve, su)

    def _cve_own_cu(
        self,
        b: Build,
        info: CuInfo | None,
        cve: Cve,
        own: CatalogueEntry,
        later: tuple[int, int, int],
        title: str,
    ) -> CveVerdict:
        """The build's own CU received the fixing update (as ``own``): patched from that build on."""
        if b.cu_only:
            return CveVerdict(
                cve.id,
                State.UNKNOWN,
                f"only the CU is known and {self.cu_label(info)} received the {title}: {{cves}} patched "
                f"at {own.build} or later, vulnerable below it",
                own.build,
                cve.fixed_by,
                later,
            )
        if b.sort_key >= own.build.sort_key:
            return CveVerdict(
                cve.id,
                State.PATCHED,
                f"has the {cve.fixed_by} ({own.build} or later), which fixes {{cves}}",
                own.build,
                cve.fixed_by,
                later,
            )
        return CveVerdict(
            cve.id,
            State.VULNERABLE,
            f"lacks the {title}, installed on {self.cu_label(info)} as {own.build}: {{cves}} open",
            own.build,
            cve.fixed_by,
            later,
        )

    def _cve_other_cu(
        self, b: Build, product: str, info: CuInfo | None, cve: Cve, su: _SuIndex
    ) -> CveVerdict:
        """The build's CU never received the fixing update: open below the newest CU that did, else fixed
        by a later CU (or unknown for an unpublished CU between the two)."""
        newest = su.newest
        newest_cu = self.catalogue.cus[newest.build.cu_key]
        later = newest.build.cu_key
        if b.cu_key < newest.build.cu_key:
            if info is not None:
                clause = (
                    f"no {cve.fixed_by} was released for {info.name} (only for {self._cu_names(su)}): "
                    f"{{cves}} open until a CU update"
                )
            else:
                clause = (
                    f"an unpublished CU below {newest_cu.name}, the newest CU to receive the {cve.fixed_by}, "
                    f"cannot contain that update: {{cves}} open"
                )
            return CveVerdict(cve.id, State.VULNERABLE, clause, None, cve.fixed_by, later)
        # A CU after the newest CU that received Y.
        if info is not None:
            return CveVerdict(
                cve.id,
                State.PATCHED,
                f"{info.name} is later than {newest_cu.name}, the newest CU that needed the {cve.fixed_by}, "
                f"and contains its fix for {{cves}}",
                None,
                cve.fixed_by,
                later,
            )
        previous = self.catalogue.previous_cu(product, b.cu_key)
        if previous is not None and previous.key > newest.build.cu_key:
            return CveVerdict(
                cve.id,
                State.PATCHED,
                f"an unpublished CU after {previous.name}, which already contains the {cve.fixed_by} fix for {{cves}}",
                None,
                cve.fixed_by,
                later,
            )
        following = self.catalogue.next_cu(product, b.cu_key)
        until = f"and {following.name}, the first CU to contain it" if following else "and any later CU"
        return CveVerdict(
            cve.id,
            State.UNKNOWN,
            f"an unpublished CU between {newest_cu.name}, the newest CU to receive the {cve.fixed_by}, {until}: "
            f"whether it has the fix for {{cves}} cannot be told",
            None,
            cve.fixed_by,
            later,
        )

    def _not_yet(self, cve: Cve, update: str) -> CveVerdict:
        """As of a day before the fixing update: the CVE is open and nothing fixes it yet."""
        return CveVerdict(
            cve.id,
            State.VULNERABLE,
            f"as of {self.as_of}, no update fixing {{cves}} had been released (the {update} came later): open",
        )

    def _cu_names(self, su: _SuIndex) -> str:
        names = [self.catalogue.cus[k].name for k in sorted(su.by_cu)]
        if len(names) <= 3:
            return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
        return f"{names[0]} to {names[-1]}"

    def _cve_min_build(self, b: Build, product: str, cve: Cve) -> CveVerdict:
        fix = cve.fixed_in_build[product]
        name = f"{fix.name} ({fix.build}{', ' + fix.kb if fix.kb else ''})"
        if b.cu_only:
            if b.cu_key > fix.build.cu_key or (b.cu_key == fix.build.cu_key and fix.build.revision == 0):
                state = State.PATCHED
            elif b.cu_key == fix.build.cu_key:
                state = State.UNKNOWN
            else:
                state = State.VULNERABLE
        else:
            state = State.PATCHED if b.sort_key >= fix.build.sort_key else State.VULNERABLE
        clause = {
            State.PATCHED: f"at or above {name}, which fixes {{cves}}",
            State.VULNERABLE: f"below {name}, which fixes {{cves}}: open",
            State.UNKNOWN: f"only the update level is known; {name} fixes {{cves}}",
        }[state]
        return CveVerdict(cve.id, state, clause, fix.build, fix.name)

    def _fix(
        self,
        b: Build,
        product: str,
        info: CuInfo | None,
        wave: Wave,
        state: State,
        results: tuple[CveVerdict, ...],
    ) -> Fix:
        if state is State.NOT_AFFECTED:
            return Fix(text=f"Nothing to install: {product} is not affected by {wave.name}.")
        if state is State.PATCHED:
            done = f"Nothing to install: this build contains the {wave.name} fixes."
            for r in results:
                update = self.data.updates.get(r.fix_name)
                if (
                    r.fix_build is not None
                    and update
                    and update.regular_cus
                    and b.cu_key not in update.regular_cus
                ):
                    done += f" Note: {update.one_off_note}."
                    break
            return Fix(text=done)
        if product == UNKNOWN_PRODUCT:
            return Fix(text="Identify the product first: this is not a known Exchange version.")
        open_ = [r for r in results if r.state in (State.VULNERABLE, State.UNKNOWN)]
        su_builds = sorted({r.fix_build for r in open_ if r.fix_build is not None}, key=lambda x: x.sort_key)
        text: list[str] = []
        if su_builds:
            top = su_builds[-1]
            top_name = next(r.fix_name for r in open_ if r.fix_build == top)
            if top_name in self.data.updates or re.fullmatch(r"[A-Z][a-z]{2}\d{2}(SU|HU)(v\d+)?", top_name):
                cu = self.cu_label(info)
                text.append(
                    f"Install the {self.update_title(top_name)} or a later update for {product} {cu}: "
                    f"build {top} or later fixes {wave.name}"
                )
                if state is State.UNKNOWN:
                    text[-1] += " (check the exact build on the server: ExSetup.exe's file version)"
            else:
                text.append(f"Install {top_name} ({top}) or later")
        later_keys = [r.later_cu_after for r in results if r.later_cu_after is not None]
        cumulative: str | None = None
        if later_keys:
            after = max([*later_keys, b.cu_key])
            following = self.catalogue.next_cu(product, after)
            if following is not None:
                cumulative = str(following.release.build)
                lead = "or update to" if su_builds else "No security update exists for this CU; update to"
                text.append(f"{lead} {following.name} ({following.release.build}) or later")
            elif not su_builds:
                # No later CU contains the fix: go to the newest CU that received it, then install it.
                newest = max(
                    (self.su_index(product, r.fix_name) for r in open_ if r.fix_name),
                    key=lambda s: s.newest.build.sort_key if s else (0, 0, 0, 0),
                    default=None,
                )
                if newest is not None:
                    target = self.catalogue.cus[newest.newest.build.cu_key]
                    text.append(
                        f"No security update exists for this CU; update to {target.name} and install "
                        f"{newest.newest.su_name} ({newest.newest.build}) or later"
                    )
        if not text and self.as_of is not None and any(r.fix_build is None and not r.fix_name for r in open_):
            text.append(f"No update fixing {wave.name} had been released by {self.as_of}")
        support = self.support_of(product)
        if support == "out_of_support":
            eos = self.data.end_of_support.get(product)
            text.append(f"{product} is out of support since {eos}; plan a move to a supported version")
        sentence = "; ".join(text) + "." if text else "No fix is known."
        return Fix(tuple(str(x) for x in su_builds), cumulative, sentence[0].upper() + sentence[1:])
