"""load.png: latency percentiles and throughput over the run, from locust's history CSV."""

from __future__ import annotations

from pathlib import Path

from tools.load.results import AGGREGATED, Series

PERCENTILE_LABELS = {"50%": "p50", "95%": "p95", "99%": "p99"}


def plot_history(history: dict[str, Series], path: Path, title: str) -> None:
    """Three panels sharing the time axis: all requests' p50/p95/p99, each name's p95,
    and requests/s and failures/s with the user count behind them."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt

    if AGGREGATED not in history:
        raise ValueError("the history has no Aggregated rows: did locust run at all?")
    total = history[AGGREGATED]
    names = sorted(name for name in history if name != AGGREGATED)

    figure, (latency, by_name, throughput) = plt.subplots(
        3, 1, figsize=(11, 10), sharex=True, constrained_layout=True
    )
    figure.suptitle(title)

    for percentile, label in PERCENTILE_LABELS.items():
        latency.plot(total.seconds, total.percentiles_ms[percentile], label=label)
    latency.set_title("all requests: response time over locust's last ~10 s")
    for name in names:
        series = history[name]
        by_name.plot(series.seconds, series.percentiles_ms["95%"], label=name)
    by_name.set_title("p95 response time by request")
    for axes in (latency, by_name):
        # Cheap listings and long generations differ by orders of magnitude.
        axes.set_yscale("log")
        axes.set_ylabel("ms")
        axes.grid(True, which="both", alpha=0.3)
        # Outside the axes: inside, the legend hides the lines it names.
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")

    throughput.plot(total.seconds, total.requests_per_s, label="requests/s")
    throughput.plot(total.seconds, total.failures_per_s, label="failures/s", color="tab:red")
    throughput.set_ylabel("per second")
    throughput.set_xlabel("seconds since start")
    throughput.set_ylim(bottom=0)
    throughput.grid(True, alpha=0.3)
    users = throughput.twinx()
    users.plot(total.seconds, total.users, label="users", color="tab:gray", linestyle="--")
    users.set_ylabel("users")
    users.set_ylim(bottom=0)
    lines = throughput.get_lines() + users.get_lines()
    throughput.legend(
        lines,
        [line.get_label() for line in lines],
        loc="upper left",
        bbox_to_anchor=(1.07, 1.0),  # past the users axis
        fontsize="small",
    )
    throughput.set_title("throughput: locust's mean over the 10 s up to 2 s ago")

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
