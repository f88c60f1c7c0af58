"""The fidelity certificate of a run, as its report shows it: how exact the copy is.

``metrics.json`` is read back as untrusted input: a figure of the wrong type reads ``—``.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from img2img_filters.report.page import (
    MISSING,
    Cell,
    Table,
    format_count,
    format_float,
    format_psnr,
)
from img2img_filters.report.render import render

__all__ = ["certificate_rows", "certificate_section"]

#: Worst regions listed in the report at most (the certificate may hold more).
MAX_REGIONS_SHOWN = 10


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _share_text(certificate: dict[str, Any]) -> str:
    share, bits = certificate.get("exact_share"), certificate.get("bit_depth")
    if not _number(share) or not _number(bits):
        return "not measured (float targets have no rounding step)"
    return f"{100 * share:.3f}% of values equal the target at {int(bits)} bits"


def certificate_rows(certificate: Any) -> list[tuple[str, str]]:
    """The certificate's figures as ``(label, text)`` rows; none when there is no certificate."""
    if not isinstance(certificate, dict):
        return []
    percentiles = certificate.get("abs_error_percentiles")
    percentiles = percentiles if isinstance(percentiles, dict) else {}
    quantiles = " / ".join(
        format_float(percentiles.get(key), ".3e") for key in ("p50", "p99", "p99.9")
    )
    rows = [
        (
            "PSNR, mean / worst image",
            f"{format_psnr(certificate.get('psnr'))} / {format_psnr(certificate.get('psnr_min'))}",
        ),
        (
            "SSIM, mean / worst image",
            f"{format_float(certificate.get('ssim'), '.6f')} / "
            f"{format_float(certificate.get('ssim_min'), '.6f')}",
        ),
        ("Largest absolute error", format_float(certificate.get("max_abs_error"), ".3e")),
        ("Absolute error: median / 99th / 99.9th percentile", quantiles),
        ("Exact after rounding", _share_text(certificate)),
        (
            "Measured on",
            f"{format_count(certificate.get('images'))} validation images, "
            f"{format_count(certificate.get('values'))} values",
        ),
    ]
    probe = certificate.get("probe")
    if isinstance(probe, dict) and isinstance(probe.get("summary"), str):
        rows.insert(0, ("The operator, as the probe found it", probe["summary"]))
    return rows


def _regions_table(regions: Any) -> Table | None:
    if not isinstance(regions, list) or not regions:
        return None
    rows = []
    for region in regions[:MAX_REGIONS_SHOWN]:
        if not isinstance(region, dict):
            continue
        rows.append(
            [
                Cell(format_count(region.get(key)), numeric=True)
                for key in ("image", "y", "x", "size")
            ]
            + [Cell(format_float(region.get("mean_abs_error"), ".3e"), numeric=True)]
        )
    header = ["validation image", "top (y)", "left (x)", "side", "mean absolute error"]
    caption = "The crops where the copy is furthest from the target, worst first."
    return Table(header, rows, caption) if rows else None


def certificate_section(metrics: Any) -> Markup | None:
    """The HTML of the certificate's section, or ``None`` when the run has no certificate."""
    certificate = metrics.get("certificate") if isinstance(metrics, dict) else None
    rows = certificate_rows(certificate)
    if not rows:
        return None
    values = [(label, Cell(text if text else MISSING)) for label, text in rows]
    html = render(
        "certificate.html.j2", rows=values, regions=_regions_table(certificate.get("worst_regions"))
    )
    return Markup(html)
