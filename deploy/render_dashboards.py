"""Render the Grafana dashboards' panels to PNG from a live Prometheus, for the README and for
machines without Grafana.

    pip install matplotlib
    python deploy/render_dashboards.py --prometheus http://127.0.0.1:9090 --minutes 5 --out docs/

Each panel of deploy/grafana/dashboards/*.json becomes a subplot with the same queries and legends.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import urllib.parse
import urllib.request
from pathlib import Path

DASHBOARDS = Path(__file__).parent / "grafana" / "dashboards"


def query_range(base: str, expr: str, start: float, end: float, step: float) -> list[dict]:  # type: ignore[type-arg]
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as response:
        result: list[dict] = json.loads(response.read())["data"]["result"]  # type: ignore[type-arg]
        return result


def legend(template: str, labels: dict[str, str]) -> str:
    for key, value in labels.items():
        template = template.replace("{{" + key + "}}", value)
    return template


def render(board_path: Path, base: str, minutes: float, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = json.loads(board_path.read_text())
    panels = board["panels"]
    columns = 2
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(14, 3.2 * rows), squeeze=False)
    end = time.time()
    start = end - minutes * 60
    for axis, panel in zip(axes.flat, panels, strict=False):
        for target in panel["targets"]:
            for series in query_range(base, target["expr"], start, end, max(1.0, minutes * 60 / 300)):
                times = [float(t) - end for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                axis.plot(times, values, label=legend(target["legendFormat"], series["metric"]), linewidth=1.2)
        axis.set_title(panel["title"], fontsize=10)
        axis.set_xlabel("seconds before now", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        handles, _ = axis.get_legend_handles_labels()
        if handles:
            axis.legend(fontsize=6, loc="upper left", ncol=2)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    figure.suptitle(f"{board['title']} (rendered from Prometheus, last {minutes:g} min)", fontsize=12)
    figure.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"dashboard-{board_path.stem}.png"
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    for board in sorted(DASHBOARDS.glob("*.json")):
        print(render(board, args.prometheus, args.minutes, args.out))


if __name__ == "__main__":
    main()
