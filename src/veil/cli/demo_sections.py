"""Demo sections for capabilities layered on the runtime (DP, SecAgg, audit, report)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from veil.cli.demo import DemoContext

__all__ = ["section_dp_impl", "section_secagg_impl", "section_audit_report_impl"]


def section_dp_impl(ctx: DemoContext) -> None:
    """DP-SGD inside every site at ε = 3, with canaries for the one-run audit."""
    from rich.table import Table

    from veil.cli.demo import _base_config, _fresh
    from veil.cli.progress import round_progress, summary_table
    from veil.app import train

    c = ctx.console
    c.rule("[bold]2. Differential privacy[/] — DP-SGD at every site, ε = 3, δ = 1e-5")
    common = {
        "rounds": 8 if ctx.quick else 40,
        "model": {"hidden": [64]},
        "local": {"batch_size": 64, "lr": 0.5, "momentum": 0.5},
    }
    private = _base_config(
        ctx,
        "demo-dp",
        privacy={
            "enabled": True,
            "target_epsilon": 3.0,
            "delta": 1e-5,
            "sample_level": {"enabled": True, "expected_batch_size": 64, "max_grad_norm": 1.0},
        },
        audit={"canaries": 100},
        **common,
    )
    baseline = _base_config(ctx, "demo-dp-baseline", **common)
    for cfg in (private, baseline):
        _fresh(cfg)
    with round_progress(c, private.rounds, "dp-sgd") as cb:
        out = train(private, on_round=cb)
    with c.status("the same model without DP, for comparison"):
        base = train(baseline)
    c.print(
        summary_table(
            "DP-SGD at 5 sites (noise calibrated by dp-accounting)", out.result.rounds, max_rows=6
        )
    )
    priv = out.record.get("privacy", {})
    t = Table(title="privacy vs utility", title_justify="left")
    for col in ("", "test accuracy", "ε spent (δ = 1e-5)", "noise multiplier"):
        t.add_column(col, justify="right")
    sig = priv.get("noise", {}).get("sample_noise_multiplier")
    if isinstance(sig, dict) and sig:
        lo, hi = min(sig.values()), max(sig.values())
        sigma_txt = f"{lo:.3f}" if abs(hi - lo) < 1e-3 else f"{lo:.3f}–{hi:.3f}"
    else:
        sigma_txt = f"{sig:.3f}" if isinstance(sig, (int, float)) else "–"
    t.add_row("no DP", f"{base.final_accuracy:.3f}", "∞", "–")
    t.add_row(
        "DP-SGD",
        f"{out.final_accuracy:.3f}",
        f"{priv.get('epsilon_sample_max', float('nan')):.3f}",
        sigma_txt,
    )
    c.print(t)
    if out.result.stopped_reason:
        c.print(f"[yellow]stopped:[/] {out.result.stopped_reason}")
    ctx.results["dp_accuracy"] = out.final_accuracy
    ctx.results["dp_epsilon"] = priv.get("epsilon_sample_max")
    ctx.results["dp_baseline_accuracy"] = base.final_accuracy
    ctx.run_dirs["dp"] = out.run_dir


def section_secagg_impl(ctx: DemoContext) -> None:
    """The federation again, with SecAgg+ and 20% of sites dropping mid-protocol."""
    from veil.cli.demo import _base_config, _fresh
    from veil.cli.progress import fmt_bytes, round_progress, summary_table
    from veil.app import train

    c = ctx.console
    c.rule("[bold]3. Secure aggregation[/] — SecAgg+, 10 sites, 20% dropouts")
    cfg = _base_config(
        ctx,
        "demo-secagg",
        data={"sites": 10},
        federation={"dropout_rate": 0.2},
        aggregation={"summation": "secagg", "quantize_range": 0.5, "bits": 32},
    )
    _fresh(cfg)
    with round_progress(c, cfg.rounds, "secagg") as cb:
        out = train(cfg, on_round=cb)
    c.print(
        summary_table("SecAgg+ on digits: the server saw only sums", out.result.rounds, max_rows=6)
    )
    rounds = out.result.rounds
    m = rounds[0].get("measurements", {})
    dropped = sum(len(r["cohort"]) - len(r["survivors"]) for r in rounds)
    aborted = sum(1 for r in rounds if r.get("aborted"))
    plain = (out.record["plan"]["n_parameters"]) * 4 + 16
    mean_bytes = sum(r["bytes_per_site_mean"] for r in rounds) / max(1, len(rounds))
    c.print(
        f"neighbours k = {m.get('secagg/k', 0):.0f}, "
        f"threshold t = {m.get('secagg/threshold', 0):.0f}; "
        f"{dropped} site-rounds dropped and were recovered, {aborted} rounds aborted; "
        f"bytes per site per round {fmt_bytes(mean_bytes)} "
        f"(plain float32 update: {fmt_bytes(plain)})"
    )
    ctx.results["secagg_accuracy"] = out.final_accuracy
    ctx.results["secagg_dropped_site_rounds"] = dropped
    ctx.run_dirs["secagg"] = out.run_dir


def section_audit_report_impl(ctx: DemoContext) -> None:
    """Attack each demo run as a real adversary would, then render the HTML reports."""
    from rich.table import Table

    from veil.audit import audit_run
    from veil.report import render_report

    c = ctx.console
    c.rule("[bold]Audit[/] — what still leaks")
    t = Table(title="attacks on the released models", title_justify="left")
    for col in (
        "run",
        "ε claimed",
        "loss AUC",
        "LiRA AUC",
        "TPR@.1%",
        "ε̂ canary",
        "inversion dB site/sum/DP",
    ):
        t.add_column(col, justify="right")
    for label, run_dir in ctx.run_dirs.items():
        with c.status(f"auditing {label} (membership inference, canaries, gradient inversion)"):
            res = audit_run(
                run_dir,
                lira_refs=8 if ctx.quick else 16,
                inversion_steps=100 if ctx.quick else 300,
                log_path=ctx.out / "audit.log",
            )
        mem = res.get("membership", {})
        lira = mem.get("lira", {}).get("online", mem.get("lira", {}))
        one = res.get("one_run") or {}
        inv = res.get("inversion") or {}
        def f(v: object, fmt: str = "{:.3f}") -> str:
            return fmt.format(v) if isinstance(v, (int, float)) else "–"
        eps_hat = one.get("epsilon_lower")
        flag = " [red]> claim: bug![/]" if one.get("exceeds_claim") else ""
        views = inv.get("views", inv)
        single = (views.get("single_site") or {}).get("psnr") if isinstance(views, dict) else None
        summed = (views.get("secure_sum") or {}).get("psnr") if isinstance(views, dict) else None
        noised = (views.get("dp") or {}).get("psnr") if isinstance(views, dict) else None
        t.add_row(
            label,
            f(res.get("claimed_epsilon"), "{:.2f}")
            if res.get("claimed_epsilon") is not None
            else "∞",
            f(mem.get("loss", {}).get("auc")),
            f(lira.get("auc")),
            f(lira.get("tpr_at_fpr", {}).get("0.001")),
            (f(eps_hat, "{:.2f}") + flag) if eps_hat is not None else "–",
            f"{f(single, '{:.0f}')}/{f(summed, '{:.0f}')}/{f(noised, '{:.0f}')}",
        )
        path = render_report(run_dir)
        ctx.results[f"report_{label}"] = str(path)
    c.print(t)
    for k, v in ctx.results.items():
        if k.startswith("report_"):
            c.print(f"report: {v}")
