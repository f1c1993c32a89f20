"""Writing a split: the files, a leakage check between every pair of them, and the split card."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.dedup import MinHasher, UnionFind, fold, near_duplicate_groups
from tunesmith.data.formats import FIELDS, Format
from tunesmith.data.io import is_csv, write_csv, write_jsonl
from tunesmith.data.leakage import leakage_between
from tunesmith.data.normalize import dedup_text
from tunesmith.data.split import SPLIT_NAMES, parse_ratios, split_indices, split_report
from tunesmith.data.validate import ValidationReport, validate_file
from tunesmith.errors import ConfigError, DataError
from tunesmith.reports import markdown_table, write_bundle


def write_split(source: Path, report: ValidationReport, ratios: tuple[float, ...], seed: int,
                stratify: str | None, out_dir: Path, drop_columns: list[str] | None = None,
                max_group_share: float | None = None) -> dict[str, Any]:
    values = [r.value for r in report.records]
    extra = extra_columns(values, report.format, stratify) if is_csv(source) else {}
    if drop_columns:
        unknown = sorted(set(drop_columns) - {k for v in values for k in v})
        if unknown:
            raise ConfigError(f"--drop-columns: {source} has no column {', '.join(map(repr, unknown))}")
        values = [{k: v for k, v in value.items() if k not in drop_columns} for value in values]
    lines = [r.line for r in report.records]
    texts = [fold(dedup_text(v, report.format)) for v in values]
    hasher = MinHasher()
    signatures = np.stack([hasher.signature(t) for t in texts]) if texts else np.empty((0, 64), np.uint32)
    groups = near_duplicate_groups(signatures, texts.__getitem__)
    names = SPLIT_NAMES if len(ratios) == 3 else ("train", "test")
    index_of = {line: i for i, line in enumerate(lines)}
    # One near-duplicate rule for grouping and for the leakage check: the check looks for pairs
    # within two splits only, where a crowded LSH band (linked neighbour to neighbour over the
    # whole file, dedup.candidate_pairs) can be small enough to compare every pair, so it may
    # find a pair the grouping did not. Any pair it finds joins the two groups and the split is
    # made again, until the check finds none: zero leakage by construction.
    for _ in range(MAX_REGROUPINGS):
        parts = split_indices(values, ratios, seed, stratify, groups)
        leaks = _leaks(names, parts, lines, texts, signatures)
        joined = [(index_of[e["a_line"]], index_of[e["b_line"]]) for found in leaks.values() for e in found.examples]
        if not joined:
            break
        groups = _joined(groups, joined)
    cut = 0
    if max_group_share is not None:  # the trade-off asked for: labels stratified, large groups cut, the leak reported
        whole_parts = parts
        parts = split_indices(values, ratios, seed, stratify, groups, max_group_share)
        cut = _groups_cut(groups, whole_parts, parts)
        leaks = _leaks(names, parts, lines, texts, signatures)
    files = {}
    columns = list(dict.fromkeys(k for v in values for k in v)) if is_csv(source) else None
    for name, part in zip(names, parts):
        if columns is not None:  # a CSV in gives CSV splits out, with its columns in its order
            files[name] = out_dir / f"{source.stem}.{name}{source.suffix.lower()}"
            write_csv(files[name], (values[i] for i in part), columns)
        else:
            files[name] = out_dir / f"{source.stem}.{name}.jsonl"
            write_jsonl(files[name], (values[i] for i in part))
    card = {"source": str(source), "ratios": list(ratios), "seed": seed, "stratify": stratify,
            "files": {n: str(p) for n, p in files.items()},
            "near_duplicate_groups": sum(1 for g, n in _sizes(groups).items() if n > 1),
            "max_group_share": max_group_share, "groups_split_across": cut,
            "extra_columns": extra, "dropped_columns": sorted(drop_columns or []),
            **split_report(values, parts, names, stratify, ratios),
            "leakage": {pair: {"exact": found.exact, "near": found.near} for pair, found in leaks.items()}}
    card["card"] = write_bundle(out_dir, f"{source.stem}.split", data=card, markdown=_markdown(card))["json"]
    return card


def extra_columns(values: list[dict[str, Any]], fmt: Format | None, stratify: str | None) -> dict[str, int]:
    """A CSV's columns beyond what its format reads (and the stratify field): each with how many
    rows fill it — an empty ``Unnamed: 3`` says 0, an annotator id says every row."""
    known = set(FIELDS.get(fmt, ())) | ({stratify} if stratify else set())
    columns = dict.fromkeys(k for v in values for k in v)
    return {c: sum(1 for v in values if str(v.get(c) or "").strip()) for c in columns if c not in known}


MAX_REGROUPINGS = 25  # each round joins every pair found: a few rounds where the grouping missed a few pairs,
                      # 11 where it found none at all (the test); past this the card reports what is left


def _leaks(names, parts, lines, texts, signatures) -> dict[str, Any]:
    """The leakage check between every pair of splits, every overlap listed."""
    leaks = {}
    for (na, pa), (nb, pb) in itertools.combinations(zip(names, parts), 2):
        leaks[f"{na}-{nb}"] = leakage_between(na, [lines[i] for i in pa], [texts[i] for i in pa],
                                              nb, [lines[i] for i in pb], [texts[i] for i in pb],
                                              max_examples=len(lines), signatures=signatures[pa + pb])
    return leaks


def _groups_cut(groups: list[int], before: list[list[int]], after: list[list[int]]) -> int:
    """How many groups have members in more than one split ``after`` (none had ``before``)."""
    where: dict[int, set[int]] = {}
    for s, part in enumerate(after):
        for i in part:
            where.setdefault(groups[i], set()).add(s)
    return sum(1 for splits in where.values() if len(splits) > 1)


def _joined(groups: list[int], pairs: list[tuple[int, int]]) -> list[int]:
    """``groups`` with the groups of each pair's two records made one."""
    joined = UnionFind(len(groups))
    for i, group in enumerate(groups):
        joined.union(i, group)
    for i, j in pairs:
        joined.union(i, j)
    return [joined.find(i) for i in range(len(groups))]


def _sizes(groups: list[int]) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    return sizes


def _markdown(card: dict[str, Any]) -> str:
    lines = [f"# Split of `{card['source']}`", "",
             f"ratios {card['ratios']}, seed {card['seed']}, stratified on `{card['stratify']}`" if card["stratify"]
             else f"ratios {card['ratios']}, seed {card['seed']}", "",
             f"{card['near_duplicate_groups']} near-duplicate group(s), each kept inside one split." if not card.get("max_group_share")
             else f"{card['near_duplicate_groups']} near-duplicate group(s); --max-group-share {card['max_group_share']:g} "
                  f"cut {card['groups_split_across']} of them across splits (their pairs are the leakage below).", ""]
    deviation, worst = card.get("max_label_share_deviation_pp", {}), card.get("worst_label_deviation", {})
    lines += markdown_table(["split", "records", "max label-share deviation (pp)", "worst label: count / expected"],
                            [[name, n, "-" if deviation.get(name) is None else f"{deviation[name]:.2f}",
                              "-" if not worst.get(name) else
                              f"{worst[name]['label']}: {worst[name]['count']} / {worst[name]['expected']:g} "
                              f"({worst[name]['relative']:.0%} off)"]
                             for name, n in card["records"].items()])
    if card.get("rare_labels"):
        lines += ["", f"Labels too rare to appear in every split: {', '.join(card['rare_labels'])}"]
    if card.get("extra_columns"):
        lines += ["", "Columns beyond the format's, kept in the splits (`--drop-columns` leaves them out): "
                  + ", ".join(f"`{c}` ({n} rows filled)" for c, n in card["extra_columns"].items())]
    for name, off in card.get("labels_off", {}).items():
        lines += ["", f"{name}: labels outside ±20 % of their expected count (±1 below 5), because their "
                      "near-duplicate groups are too large to place: "
                  + ", ".join(f"{label} ({v['count']} for {v['expected']:g})" for label, v in off.items())]
    lines += ["", *markdown_table(["leakage", "exact", "near"], [[pair, v["exact"], v["near"]]
                                                                 for pair, v in card["leakage"].items()])]
    return "\n".join(lines) + "\n"


def split_file(path: str | Path, ratios: str | tuple[float, ...] = (0.8, 0.1, 0.1), seed: int = 0,
               stratify: str | None = None, out_dir: str | Path | None = None, fmt: str | None = None,
               drop_columns: list[str] | None = None, max_group_share: float | None = None) -> dict[str, Any]:
    """Validate ``path``, split it by ``ratios`` (``"0.8,0.1,0.1"`` or a tuple) and write the split
    files, their leakage check and the split card beside it (or in ``out_dir``)."""
    try:
        ratios = parse_ratios(ratios) if isinstance(ratios, str) else tuple(ratios)
    except ValueError as e:
        raise ConfigError(f"--ratios: {e}") from None
    report = validate_file(path, fmt, min_examples=len(ratios))
    if not report.ok:
        raise DataError(report.summary(), report)
    values = [r.value for r in report.records]
    if max_group_share is not None and not 0 < max_group_share <= 1:
        raise ConfigError(f"--max-group-share: a share of a label's records in (0, 1], got {max_group_share}")
    if stratify and not all(stratify in v for v in values):
        raise DataError(f"{path}: cannot stratify on {stratify!r}: not every record has that field")
    return write_split(Path(path), report, ratios, seed, stratify, Path(out_dir) if out_dir else Path(path).parent,
                       drop_columns, max_group_share)
