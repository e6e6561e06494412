"""`lab scenario run NAME --plot FILE.png`: the timeline (success rate per second per client group,
the break marked) or, for scenarios that break nothing but measure bars (`hops`), the bars. matplotlib, Agg backend."""

from __future__ import annotations

from scenarios.framework import Result


def plot(result: Result, path: str) -> str:
    """Draws RESULT into PATH (PNG); returns PATH."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    if result.timelines and (result.events or not result.bars):
        fig, ax = plt.subplots(figsize=(10, 4.5))
        for group, tl in result.timelines.items():
            pts = [(b["t"] + 0.5, 100.0 * b["rate"]) for b in tl if b.get("rate") is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=group)
        breaks = [e for e in result.events if e["label"] != "restore"]
        restores = [e for e in result.events if e["label"] == "restore"]
        for e in breaks:
            ax.axvline(e["t"], color="red", linestyle="--", linewidth=1)
            ax.annotate(
                e["label"], (e["t"], 103), fontsize=8, color="red", rotation=0, ha="left", annotation_clip=False
            )
        for e in restores:
            ax.axvline(e["t"], color="green", linestyle=":", linewidth=1)
        for b, r in zip(breaks, restores):
            ax.axvspan(b["t"], r["t"], color="red", alpha=0.06)
        ax.set_ylim(-5, 110)
        ax.set_xlabel("seconds since the scenario started")
        ax.set_ylabel("success rate per second (%)")
        ax.legend(loc="lower left", fontsize=8)
        ax.grid(alpha=0.3)
    elif result.bars:
        metrics = list(result.bars)
        fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.5), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            labels = list(result.bars[metric])
            values = [result.bars[metric][k] for k in labels]
            ax.bar(range(len(labels)), values, color="steelblue")
            ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
            ax.set_title(metric, fontsize=10)
            for i, v in enumerate(values):
                ax.annotate(f"{v:.2f}", (i, v), ha="center", va="bottom", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
    else:
        fig, ax = plt.subplots(figsize=(8, 2 + 0.4 * len(result.rows)))
        ax.axis("off")
        ax.table(
            cellText=[[r.claim[:60], r.verdict] for r in result.rows],
            colLabels=["CLAIM", "VERDICT"],
            loc="center",
            cellLoc="left",
        )
    fig.suptitle(f"{result.scenario}: {result.summary}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
