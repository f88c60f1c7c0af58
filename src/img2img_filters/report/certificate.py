"""The fidelity certificate of a run, as its report shows it: how exact the copy is.

``metrics.json`` is read back as untrusted input: a figure of the wrong type reads ``—``.
"""

from __future__ import annotations

from typing import Any

from img2img_filters.report.page import (
    MISSING,
    cell,
    escape,
    format_count,
    format_float,
    format_psnr,
    key_value_table,
    table,
)

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


def _regions_table(regions: Any) -> str:
    if not isinstance(regions, list) or not regions:
        return ""
    rows = []
    for region in regions[:MAX_REGIONS_SHOWN]:
        if not isinstance(region, dict):
            continue
        rows.append(
            [
                cell(format_count(region.get(key)), numeric=True)
                for key in ("image", "y", "x", "size")
            ]
            + [cell(format_float(region.get("mean_abs_error"), ".3e"), numeric=True)]
        )
    header = ["validation image", "top (y)", "left (x)", "side", "mean absolute error"]
    caption = "The crops where the copy is furthest from the target, worst first."
    return table(header, rows, caption=caption) if rows else ""


def certificate_section(metrics: Any) -> str | None:
    """The HTML of the certificate's section, or ``None`` when the run has no certificate."""
    certificate = metrics.get("certificate") if isinstance(metrics, dict) else None
    rows = certificate_rows(certificate)
    if not rows:
        return None
    intro = (
        "<p>How exact the copy is, on the validation photos. A perfect copy of an 8-bit "
        "target that is not rounded scores only about 59 dB; the share of values that are "
        "exact after rounding to the target's depth is the honest ceiling.</p>"
    )
    values = [(label, escape(text if text else MISSING)) for label, text in rows]
    return (
        intro
        + key_value_table(values, raw_values=True)
        + _regions_table(certificate.get("worst_regions"))
    )
