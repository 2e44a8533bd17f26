"""The analysis plan a study commits before its runs: the primary family, its level, absence margin,
planned seeds, interim looks and their alpha spending (docs/method/statistics.md).

    from shapedce.report.plan import AnalysisPlan, load_plan
    plan = load_plan("docs/rl-study/analysis-plan.yaml")   # YAML or JSON, the fields below
    plan = AnalysisPlan(seeds=20, looks="10").validate()   # one interim look at 10 seeds, then 20
    plan.looks_seeds                                         # (10, 20)
    plan.margin_for(ce_gain=0.08)                            # the absence margin in Avg@m

`shapedce report DIR` reads DIR/analysis-plan.yaml when it is there (or `--plan FILE`). Without a plan
the report judges every check as one secondary family, as before.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..dataclass_io import check_ranges, from_dict, parse_yaml
from ..errors import UserError
from .spending import SPENDING
from .stats import MIN_SEEDS

PLAN_FILE = "analysis-plan.yaml"
"""The plan's name inside a reproduce folder."""
MARGIN_KINDS = ("absolute", "relative")


@dataclass(kw_only=True)
class AnalysisPlan:
    """The primary family and how it is judged, fixed before the runs it judges."""

    primary: str = "precision,tail"
    """Comma-separated configurations of the primary family: each is compared with `baseline` on the RL
    gain of held-out Avg@m (after RL minus after mid-training), paired by seed; the claim is "above"."""
    baseline: str = "ce"
    """The configuration every primary check compares with."""
    model: str = ""
    """The model whose runs the primary family judges; empty = the grid's first dense model."""
    alpha: float = 0.025
    """One-sided family-wise level of the primary family, over both kinds of claim (held, did_not_hold)
    and every look. 0.025 one-sided is the report's two-sided 0.05."""
    margin: float = 0.01
    """Absence margin: a gain difference shown below it did_not_hold. With margin_kind absolute, in
    Avg@m (a fraction: 0.01 is 1 point); with relative, a fraction of the baseline's mean RL gain."""
    margin_kind: str = "absolute"
    """absolute (margin in Avg@m) or relative (margin times the baseline's mean gain over the seeds)."""
    effect: float = 0.02
    """The gain difference (Avg@m) the seeds are planned to detect with 80% power; the report prints
    the seeds needed for it as a range."""
    seeds: int = 20
    """Planned seeds: the final look reads the first `seeds` seeds (in seed order) both configurations
    finished; later seeds do not enter the primary family."""
    looks: str = ""
    """Comma-separated seed counts of interim looks before `seeds` (empty: one look, at `seeds`)."""
    spending: str = "obrien-fleming"
    """Alpha-spending function of the looks: obrien-fleming or pocock (Lan-DeMets types)."""
    not_applicable: str = ""
    """Comma-separated finding names (e.g. rl_length) the study's world cannot exhibit."""
    not_applicable_reason: str = ""
    """Why those findings cannot be exhibited (shown with each); required when not_applicable is set."""

    @property
    def configs(self) -> list[str]:
        return [c.strip() for c in self.primary.split(",") if c.strip()]

    @property
    def looks_seeds(self) -> tuple[int, ...]:
        """Every planned look's seed count, the final one (`seeds`) last."""
        return (*(int(x) for x in self.looks.split(",") if x.strip()), self.seeds)

    @property
    def inapplicable(self) -> list[str]:
        return [f.strip() for f in self.not_applicable.split(",") if f.strip()]

    def margin_for(self, ce_gain: float) -> float:
        """The absence margin in Avg@m, given the baseline's mean RL gain (used when relative)."""
        return self.margin if self.margin_kind == "absolute" else self.margin * abs(ce_gain)

    def validate(self) -> AnalysisPlan:
        looks = [x.strip() for x in self.looks.split(",") if x.strip()]
        check_ranges(
            self,
            [
                ("primary", bool(self.configs), "one or more configuration names"),
                ("baseline", bool(self.baseline) and self.baseline not in self.configs, "not in primary"),
                ("alpha", 0 < self.alpha < 0.5, "in (0, 0.5)"),
                ("margin", self.margin > 0, "> 0"),
                ("margin_kind", self.margin_kind in MARGIN_KINDS, " or ".join(MARGIN_KINDS)),
                ("effect", self.effect > 0, "> 0"),
                ("seeds", MIN_SEEDS <= self.seeds <= 10_000, f"in [{MIN_SEEDS}, 10000]"),
                ("looks", all(x.isdigit() for x in looks), "comma-separated seed counts"),
                ("spending", self.spending in SPENDING, " or ".join(SPENDING)),
                (
                    "not_applicable_reason",
                    bool(self.not_applicable_reason.strip()) or not self.inapplicable,
                    "a reason when not_applicable names findings",
                ),
            ],
        )
        seq = self.looks_seeds
        if seq[0] < MIN_SEEDS or any(b <= a for a, b in zip(seq, seq[1:])):
            raise UserError(
                f"looks must be increasing seed counts >= {MIN_SEEDS} below seeds={self.seeds}; "
                f"got {self.looks!r}"
            )
        return self

    def as_dict(self) -> dict:
        return {**asdict(self), "looks_seeds": list(self.looks_seeds)}


def load_plan(path: str | Path) -> AnalysisPlan:
    """The plan in PATH (plain YAML or JSON: the fields of AnalysisPlan), validated."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"analysis plan {path} not found")
    data = parse_yaml(path.read_text(), str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: an analysis plan is a mapping of AnalysisPlan's fields")
    for key in ("looks", "primary", "not_applicable"):  # `looks: 10`, `looks: [5, 10]`: the same as "5,10"
        value = data.get(key)
        if isinstance(value, (int, list)) and not isinstance(value, bool):
            data[key] = ",".join(map(str, value if isinstance(value, list) else [value]))
    return from_dict(AnalysisPlan, data).validate()


def find_plan(root: str | Path, path: str | Path | None = None) -> AnalysisPlan | None:
    """The plan given as PATH, else ROOT/analysis-plan.yaml when it is there, else None."""
    if path is not None:
        return load_plan(path)
    default = Path(root) / PLAN_FILE
    return load_plan(default) if default.is_file() else None
