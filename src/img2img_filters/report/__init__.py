"""Reports: one self-contained HTML page per run, or one page comparing runs.

``write_run_report(run_dir)`` writes ``run_dir/report.html`` (``img2img train``
does so at the end of every run; ``img2img report RUN_DIR`` rebuilds it);
``write_comparison_report(run_dirs, path)`` puts several runs side by side
(``img2img report RUN_A RUN_B -o OUT.html``). Pages embed their figures as PNG
``data:`` URIs and carry their own stylesheet: one file, readable offline.
"""

from __future__ import annotations

from img2img_filters.report.compare import write_comparison_report
from img2img_filters.report.figures import plot_loss_comparison
from img2img_filters.report.folder import REPORT_FILE, RunFiles, read_run
from img2img_filters.report.single import metric_rows, write_run_report

__all__ = [
    "REPORT_FILE",
    "RunFiles",
    "metric_rows",
    "plot_loss_comparison",
    "read_run",
    "write_comparison_report",
    "write_run_report",
]
