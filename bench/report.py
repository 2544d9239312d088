"""The benchmark's report: the targets, as ratios to figures of the same run, the Markdown tables
and the JSON summary (``python -m bench --json FILE``).

The targets are ratios, not absolute rates: the machine (its CPUs, the other work on it) moves
every figure, the bare Flask hello-world's included, so a figure is judged against the
framework's ceiling measured in the same run and under the same server settings
(bench/hello.py), the password sign-in against Argon2id alone measured in the same run, and
PostgreSQL against SQLite.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from bench import load

#: The figures of the JSON summary, by the scenario names of bench/run.py.
KEYS = {
    "passkey sign-in (code flow)": "passkey_sign_in",
    "password + TOTP sign-in": "password_totp_sign_in",
    "refresh grant (rotation)": "refresh",
    "client credentials": "client_credentials",
    "userinfo": "userinfo",
    "introspection": "introspection",
}
PACED = "passkey at 70 % load"
#: At least this many times the same run's hello-world per server CPU-second.
HELLO_TARGETS = {
    "passkey_sign_in": 0.03,
    "refresh": 0.15,
    "client_credentials": 0.25,
    "userinfo": 0.35,
    "introspection": 0.35,
}
#: Password + TOTP sign-ins: at least this share of the rate of Argon2id verification alone.
ARGON2_TARGET_RATIO = 0.85
#: Each figure on PostgreSQL: at least this share of the same figure on SQLite.
POSTGRES_TARGET_RATIO = 0.8
#: The passkey sign-in's p99 latency at 70 % of its saturation rate, open loop.
P99_TARGET_MS = 50.0
P99_KEY = "passkey_p99_ms_at_70_percent"
#: A run is a quiet machine's when each yardstick, measured at both ends of the run, moved by at
#: most this share between them (the larger over the smaller, minus one). Every ratio is judged
#: against the yardsticks pooled over both ends, so a machine whose speed moved more than this
#: during the run can put a ratio on either side of its target by as much (docs/performance.md,
#: "A quiet machine").
QUIET_DRIFT = 0.10


@dataclass
class Report:
    database: str
    server: str
    rows: list[load.Measurement] = field(default_factory=list)
    hello: load.Measurement | None = None
    argon2_per_cpu_second: float = float("nan")
    memory: dict[str, list[float]] = field(default_factory=dict)
    statements: dict[str, dict[str, float]] = field(default_factory=dict)
    #: ``--groups``: per interleaved round, passkey sign-ins per server CPU-second with the
    #: groups (restricted client, groups scope) and without (bench.run.compare_groups).
    group_rounds: list[tuple[float, float]] = field(default_factory=list)
    groups_label: str = ""

    def find(self, name: str) -> load.Measurement | None:
        return next((row for row in self.rows if row.name == name), None)

    def figures(self) -> dict[str, float]:
        """Per server CPU-second by JSON key, and the paced passkey sign-in's p99 in ms."""
        found = {KEYS[m.name]: m.per_cpu_second for m in self.rows if m.name in KEYS}
        paced = self.find(PACED)
        if paced is not None:
            found[P99_KEY] = paced.percentile(99) * 1000
        return found


@dataclass(frozen=True)
class Verdict:
    ratio: float
    ratio_text: str
    target_text: str
    #: None: not measured (no server CPU counted, no latency).
    met: bool | None


def verdict(key: str, value: float, hello: float, argon2: float) -> Verdict | None:
    """The target of one figure and where ``value`` stands against it (None: no target)."""
    if key in HELLO_TARGETS:
        ratio, target = _ratio(value, hello), HELLO_TARGETS[key]
        return Verdict(
            ratio, f"{ratio:.3f} x hello", f">= {target:g} x hello", _at_least(ratio, target)
        )
    if key == "password_totp_sign_in":
        ratio = _ratio(value, argon2)
        return Verdict(
            ratio,
            f"{ratio:.2f} x Argon2id",
            f">= {ARGON2_TARGET_RATIO:g} x Argon2id",
            _at_least(ratio, ARGON2_TARGET_RATIO),
        )
    if key == P99_KEY:
        met = None if math.isnan(value) else value < P99_TARGET_MS
        return Verdict(value, f"p99 {value:.1f} ms", f"p99 < {P99_TARGET_MS:g} ms", met)
    return None


def _at_least(ratio: float, target: float) -> bool | None:
    return None if math.isnan(ratio) else ratio >= target


def _ratio(value: float, base: float) -> float:
    if not base or math.isnan(base) or math.isnan(value):
        return float("nan")
    return value / base


def _met_text(met: bool | None) -> str:
    return {True: "yes", False: "no", None: "n/a"}[met]


# -- Markdown -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Yardstick:
    """A yardstick's rate (per CPU-second) at the start and at the end of a run."""

    name: str
    before: float
    after: float

    @property
    def moved(self) -> float:
        """The larger end over the smaller, minus one: 0.25 when one end is 1.25 x the other."""
        low, high = sorted((self.before, self.after))
        return high / low - 1 if low > 0 else math.inf


def quiet(yardsticks: list[Yardstick]) -> bool:
    """Whether every yardstick moved by at most :data:`QUIET_DRIFT` over the run."""
    return all(y.moved <= QUIET_DRIFT for y in yardsticks)


def steadiness(yardsticks: list[Yardstick]) -> dict[str, Any]:
    """The JSON summary's ``"yardsticks"`` (each one's two ends and how far it moved) and
    ``"quiet"``."""
    return {
        "yardsticks": {
            y.name: {
                "before": _number(y.before),
                "after": _number(y.after),
                "moved": _number(y.moved),
            }
            for y in yardsticks
        },
        "quiet": quiet(yardsticks),
    }


def render_steadiness(yardsticks: list[Yardstick]) -> str:
    ends = "; ".join(
        f"{y.name} {y.before:,.1f} then {y.after:,.1f} (moved {100 * y.moved:.0f} %)"
        for y in yardsticks
    )
    verdict = (
        "a quiet machine"
        if quiet(yardsticks)
        else f"not a quiet machine: a yardstick moved more than {100 * QUIET_DRIFT:.0f} %, and a "
        "ratio near its target may fall on either side of it"
    )
    return f"Yardsticks at the start and at the end of the run: {ends}. This run: {verdict}.\n"


def render(
    reports: list[Report], argon2: float, machine: str, yardsticks: list[Yardstick] | None = None
) -> str:
    lines = [f"# idp benchmark\n\n{machine}\n"]
    lines.append(f"Argon2id verification alone (idp's parameters): {argon2:.1f} per CPU-second\n")
    if yardsticks:
        lines.append(render_steadiness(yardsticks))
    lines.append(
        "Targets are ratios to figures of this run: to the Flask hello-world under the same "
        f"server settings, to Argon2id alone (password + TOTP), to SQLite (PostgreSQL >= "
        f"{POSTGRES_TARGET_RATIO:g} x); the passkey sign-in's p99 at 70 % of its saturation "
        f"rate < {P99_TARGET_MS:g} ms.\n"
    )
    for report in reports:
        hello = report.hello.per_cpu_second if report.hello else float("nan")
        lines.append(f"## {report.database}, {report.server}\n")
        lines.append(
            "| figure | per server CPU-s | ratio | target | met | wall /s | p50 ms | p99 ms "
            "| done | errors |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for m in report.rows:
            key = P99_KEY if m.name == PACED else KEYS.get(m.name, "")
            value = m.percentile(99) * 1000 if key == P99_KEY else m.per_cpu_second
            judged = verdict(key, value, hello, argon2)
            ratio, target, met = (
                (judged.ratio_text, judged.target_text, _met_text(judged.met))
                if judged
                else ("", "", "")
            )
            lines.append(
                f"| {m.name} | {m.per_cpu_second:,.1f} | {ratio} | {target} | {met} "
                f"| {m.rate:,.1f} | {m.percentile(50) * 1000:.1f} | {m.percentile(99) * 1000:.1f} "
                f"| {m.completed} | {m.errors} |"
            )
        if report.hello:
            h = report.hello
            lines.append(
                f"| hello-world (Flask) | {h.per_cpu_second:,.1f} | 1 x hello | | | {h.rate:,.1f} "
                f"| {h.percentile(50) * 1000:.1f} | {h.percentile(99) * 1000:.1f} "
                f"| {h.completed} | {h.errors} |"
            )
        workers = report.memory.get("workers", [])
        master = report.memory.get("master", [])
        lines.append(
            f"\nResident memory: workers {', '.join(f'{w:.0f}' for w in workers)} MiB; "
            f"master {', '.join(f'{m:.0f}' for m in master)} MiB"
        )
        for name, verbs in report.statements.items():
            writes = sum(verbs.get(v, 0) for v in ("INSERT", "UPDATE", "DELETE"))
            detail = ", ".join(f"{v} {n:g}" for v, n in sorted(verbs.items()) if n)
            lines.append(f"\nSQL per {name}: {writes:g} writes ({detail})")
        if report.group_rounds:
            lines.append(render_group_rounds(report.groups_label, report.group_rounds))
        for m in report.rows:
            for sample in m.samples:
                lines.append(f"\n  {m.name} error: {sample}")
        lines.append("")
    for server, (sqlite, postgresql) in _database_pairs(reports).items():
        lines.append(render_postgres_against_sqlite(server, sqlite, postgresql))
    return "\n".join(lines)


def _database_pairs(reports: list[Report]) -> dict[str, tuple[Report, Report]]:
    """Per server, its SQLite and PostgreSQL reports when both ran."""
    by = {(r.server, r.database): r for r in reports}
    return {
        server: (by[(server, "sqlite")], by[(server, "postgresql")])
        for server, database in by
        if database == "sqlite" and (server, "postgresql") in by
    }


def postgres_ratios(sqlite: Report, postgresql: Report) -> dict[str, float]:
    lite, pg = sqlite.figures(), postgresql.figures()
    return {key: _ratio(pg[key], lite[key]) for key in KEYS.values() if key in lite and key in pg}


def render_postgres_against_sqlite(server: str, sqlite: Report, postgresql: Report) -> str:
    lite, pg = sqlite.figures(), postgresql.figures()
    lines = [
        f"## PostgreSQL against SQLite, {server}\n",
        "| figure | SQLite per server CPU-s | PostgreSQL per server CPU-s | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for name, key in KEYS.items():
        if key not in lite or key not in pg:
            continue
        ratio = _ratio(pg[key], lite[key])
        met = _at_least(ratio, POSTGRES_TARGET_RATIO)
        lines.append(
            f"| {name} | {lite[key]:,.1f} | {pg[key]:,.1f} | {ratio:.2f} "
            f"| >= {POSTGRES_TARGET_RATIO:g} x SQLite | {_met_text(met)} |"
        )
    lines.append("")
    return "\n".join(lines)


def render_group_rounds(label: str, rounds: list[tuple[float, float]]) -> str:
    """The interleaved comparison of ``bench.run.compare_groups`` and its verdict against the
    budget: a sign-in with groups no more than 5 % below one without (docs/performance.md)."""
    lines = [
        f"\nPasskey sign-in with groups ({label}) against without, interleaved rounds, per server "
        "CPU-second:\n",
        "| round | with groups | without | ratio |",
        "|---|---|---|---|",
    ]
    ratios = [with_ / without for with_, without in rounds]
    for n, ((with_, without), ratio) in enumerate(zip(rounds, ratios, strict=True), start=1):
        lines.append(f"| {n} | {with_:,.1f} | {without:,.1f} | {ratio:.3f} |")
    median = statistics.median(ratios)
    verdict_ = "within" if median >= 1 - GROUPS_BUDGET else "OVER"
    lines.append(
        f"\nMedian ratio {median:.3f}: {verdict_} the budget of {GROUPS_BUDGET:.0%} below the "
        "sign-in without groups."
    )
    return "\n".join(lines)


#: A sign-in for a user in 20 groups at a client with 3 claim maps costs at most 5 % more.
GROUPS_BUDGET = 0.05


# -- JSON -----------------------------------------------------------------------------------------
def summary(reports: list[Report], argon2: float, **extra: Any) -> dict[str, Any]:
    """``{"hello_world": N, "argon2id": N, "sqlite": {...}, "postgresql": {...}}`` for the first
    server run (the default, granian), completions per server CPU-second; beside them the ratios,
    the targets, whether each is met, and ``extra`` (the machine, the scale). Other servers
    (``--servers granian,gunicorn``) have the same shape under ``"servers"``."""
    servers = list(dict.fromkeys(r.server for r in reports))
    if not servers:
        return {"hello_world": None, "argon2id": _number(argon2), **extra}
    first = _server_summary([r for r in reports if r.server == servers[0]], argon2)
    out = {**first, "server": servers[0], **extra}
    if len(servers) > 1:
        out["servers"] = {
            server: _server_summary([r for r in reports if r.server == server], argon2)
            for server in servers[1:]
        }
    return out


def _server_summary(reports: list[Report], argon2: float) -> dict[str, Any]:
    hello = next((r.hello.per_cpu_second for r in reports if r.hello), float("nan"))
    out: dict[str, Any] = {"hello_world": _number(hello), "argon2id": _number(argon2)}
    ratios: dict[str, Any] = {}
    met: dict[str, Any] = {}
    for report in reports:
        figures = report.figures()
        out[report.database] = {key: _number(value) for key, value in figures.items()}
        judged = {key: verdict(key, value, hello, argon2) for key, value in figures.items()}
        ratios[report.database] = {
            key: _number(v.ratio, 4) for key, v in judged.items() if v and key != P99_KEY
        }
        met[report.database] = {key: v.met for key, v in judged.items() if v}
    pairs = _database_pairs(reports)
    if pairs:
        sqlite, postgresql = next(iter(pairs.values()))
        pg_ratios = postgres_ratios(sqlite, postgresql)
        ratios["postgresql_to_sqlite"] = {k: _number(v, 4) for k, v in pg_ratios.items()}
        met["postgresql_to_sqlite"] = {
            k: _at_least(v, POSTGRES_TARGET_RATIO) for k, v in pg_ratios.items()
        }
    out["ratios"] = ratios
    out["met"] = met
    out["targets"] = targets()
    return out


def targets() -> dict[str, Any]:
    described: dict[str, Any] = {
        key: {"at_least": value, "times": "hello_world"} for key, value in HELLO_TARGETS.items()
    }
    described["password_totp_sign_in"] = {"at_least": ARGON2_TARGET_RATIO, "times": "argon2id"}
    described["postgresql_to_sqlite"] = {"at_least": POSTGRES_TARGET_RATIO, "times": "sqlite"}
    described[P99_KEY] = {"below_ms": P99_TARGET_MS}
    return described


def _number(value: float, digits: int = 3) -> float | None:
    """JSON has no NaN: a figure that could not be measured (no server CPU counted) is null."""
    return None if math.isnan(value) else round(value, digits)
