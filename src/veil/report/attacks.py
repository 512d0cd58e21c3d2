"""The report's "What the attacks achieved" section (from ``audit.json``).

Three parts, each saying what its numbers can and cannot show:

* membership inference: AUC and TPR at low FPR, a TPR only where the number of
  non-members resolves that FPR (at least ``1/FPR`` of them), and the ROC drawn no lower
  than ``1/non-members``;
* the one-run canary audit: ε̂ with the number of canaries and guesses, and the largest
  ε̂ those canaries could have shown; on a run without DP there is no guarantee to
  compare with, and the box says ε̂ is a lower bound only;
* gradient inversion: what the server sees without secure aggregation, under the secure
  sum (the sum of every site's update: the attack's target is the sum) and with DP noise,
  beside the scores of chance and of a blend of the images in the sum.
"""

from __future__ import annotations

from typing import Any

from veil.audit.mia import resolves
from veil.audit.run import attack_results
from veil.report import figures
from veil.report.common import e, img, num, pct, table, td

__all__ = ["attack_section"]


def _tpr_cell(r: dict[str, Any], fpr: float) -> str:
    n_nm = r.get("n_nonmembers")
    if isinstance(n_nm, int) and not resolves(n_nm, fpr):
        need = round(1 / fpr)
        return td(e(f"n/a ({n_nm} non-members; needs ≥ {need})"), True)
    return td(pct((r.get("tpr_at_fpr") or {}).get(f"{fpr:g}")), True)


def _membership(audit: dict[str, Any]) -> list[str]:
    att = attack_results(audit.get("membership") or {})
    if not att:
        return []
    parts = ["<h3>Membership inference against the released model</h3><div class='row'><div>"]
    rows = [[td(e(n)), td(num(r.get("auc")), True), _tpr_cell(r, 0.001), _tpr_cell(r, 0.01),
             td(e(f"{r.get('n_members', '?')} / {r.get('n_nonmembers', '?')}"), True)]
            for n, r in att.items()]
    parts.append(
        table(["attack", "AUC", "TPR @ 0.1 % FPR", "TPR @ 1 % FPR", "members / non"], rows)
    )
    parts.append('<p class="note">AUC 0.5 and TPR equal to the FPR mean the attacker does no '
                 "better than guessing. TPR at low FPR is what matters: it counts examples "
                 "identified with confidence. A TPR at an FPR below 1 / (non-members) is not "
                 "measured (one false positive already exceeds it), so it is shown as n/a, and "
                 "the ROC is not drawn below that FPR.</p>")
    lira = (audit.get("membership") or {}).get("lira") or {}
    if lira.get("reference_training"):
        parts.append(f'<p class="note">LiRA reference models: {e(lira.get("n_refs"))} × '
                     f'{e(lira["reference_training"])}.</p>')
    parts.append("</div><div>")
    floors = {n: 1.0 / r["n_nonmembers"] for n, r in att.items()
              if isinstance(r.get("n_nonmembers"), int) and r["n_nonmembers"] > 0}
    parts.append(img(figures.roc_figure({n: r.get("roc") or {} for n, r in att.items()},
                                        floors), "ROC"))
    parts.append("</div></div>")
    return parts


def _canaries(audit: dict[str, Any]) -> list[str]:
    parts = ["<h3>One-run canary audit (Steinke, Nasr &amp; Jagielski 2023)</h3>"]
    one = audit.get("one_run")
    if not one:
        parts.append('<p class="note">This run inserted no canaries, so there is no ε̂ '
                     "(set <code>audit.canaries = N</code> to audit the next run).</p>")
        return parts
    eh, ec, top, m = (one.get("epsilon_lower"), one.get("claimed_epsilon"),
                      one.get("epsilon_max"), one.get("m"))
    seen = (f"ε̂ = {num(eh, '{:.2f}')} from {e(m)} canaries ({e(one.get('r'))} guesses, "
            f"{e(one.get('v'))} right); with {e(m)} canaries the audit could show at most "
            f"ε̂ = {num(top, '{:.2f}')}")
    if ec is None:
        parts.append(f'<p class="note"><b>Not a DP run: there is no guarantee to compare ε̂ '
                     f"with.</b> {seen}. ε̂ is a lower bound only: the run leaks at least this "
                     "much, and possibly far more.</p>")
    elif one.get("exceeds_claim"):
        parts.append(f'<p class="flag">⚠ {seen}. ε̂ exceeds the claimed ε = '
                     f"{num(ec, '{:.2f}')}: the privacy guarantee does not hold (a bug in the "
                     "mechanism, its accounting or its implementation).</p>")
    elif isinstance(top, (int, float)) and top <= ec:
        parts.append(f'<p class="note">{seen} ≤ claimed ε = {num(ec, "{:.2f}")}: this audit '
                     "could not have detected a violation of the claim, whatever the run did "
                     "(more canaries are needed for that).</p>")
    else:
        parts.append(f'<p class="ok">{seen}; ε̂ ≤ claimed ε = {num(ec, "{:.2f}")}: consistent '
                     "with the guarantee.</p>")
    labels = {"epsilon_lower": "ε̂ (lower bound, at the stated confidence)",
              "epsilon_max": "largest ε̂ these canaries could show (every guess right)",
              "claimed_epsilon": "claimed ε", "m": "canaries", "r": "guesses made",
              "v": "correct guesses", "k_pos": "guessed 'in'", "k_neg": "guessed 'out'",
              "delta": "δ", "confidence": "confidence"}
    rows = [[td(e(lab)), td(num(one.get(k), "{:.4g}") if isinstance(one.get(k), float)
                            else e(one.get(k) if one.get(k) is not None else "—"), True)]
            for k, lab in labels.items() if k in one]
    parts.append(table(["quantity", "value"], rows))
    parts.append(f'<p class="note">{e(m)} canaries (mislabelled examples), each inserted with '
                 "probability ½; the auditor guesses membership from their loss. ε̂ is the "
                 "largest ε that the number of correct guesses rules out with the stated "
                 "confidence (a valid lower bound; ε̂ above a claimed ε signals a bug).</p>")
    return parts


def _inversion(inv: dict[str, Any] | None) -> list[str]:
    parts = ["<h3>Gradient inversion against what the server sees</h3>"]
    if not inv:
        return parts + ['<p class="note">Not run (needs image data).</p>']
    n = inv.get("n_sites", "n")
    parts.append("<div class='row'><div>")
    parts.append(img(figures.inversion_figure(inv), "gradient inversion"))
    parts.append("</div><div>")
    names = {"single_site": "one site's update (no SecAgg)",
             "secure_sum": f"secure sum of {n} sites' updates",
             "dp": f"clipped + DP noise (σ = {inv.get('noise_multiplier', '?')})"}
    rows = [[td(e(names.get(k, k))), td(num(v.get("psnr"), "{:.1f}"), True),
             td(num(v.get("ssim"), "{:.2f}"), True)]
            for k, v in (inv.get("views") or {}).items()]
    rows.append([td("random images (chance)"), td(num(inv.get("noise_psnr"), "{:.1f}"), True),
                 td("")])
    if inv.get("mean_image_psnr") is not None:
        rows.append([td("the average training image"),
                     td(num(inv.get("mean_image_psnr"), "{:.1f}"), True), td("")])
    if inv.get("sum_average_psnr") is not None:
        rows.append([td(e(f"the average of the {n} sites' images in the sum")),
                     td(num(inv.get("sum_average_psnr"), "{:.1f}"), True),
                     td(num(inv.get("sum_average_ssim"), "{:.2f}"), True)])
    parts.append(table(["what the server sees", "PSNR (dB)", "SSIM"], rows))
    parts.append(f'<p class="note">A batch of {e(inv.get("batch_size"))} images at one site '
                 "(the victim), one local SGD step at the released model; each view's "
                 "reconstruction is scored against the victim's images. Higher PSNR/SSIM = the "
                 "attacker sees the images.</p>")
    parts.append(f'<p class="note"><b>The secure-sum row.</b> Under secure aggregation the '
                 f"server never sees the victim's update, only the sum of all {n} sites' "
                 "updates, so the attack's target is the sum: the gradient of every site's "
                 "batch at once. Its reconstruction is at best a blend of all those images, "
                 "and a blend of digits resembles any one digit somewhat, so its score can "
                 "even exceed the single update's without revealing the victim's images. "
                 "Compare it with the row for the average of the images in the sum: a "
                 "secure-sum score near that row means the attacker learned the blend, not "
                 "the victim's images.</p></div></div>")
    return parts


def attack_section(audit: dict[str, Any] | None) -> str:
    """The section as HTML (a hint to run ``veil audit`` when there is no audit)."""
    if not audit:
        return ('<section><h2>What the attacks achieved</h2><p class="note">No audit yet: run '
                "<code>veil audit RUN</code> to attack this run, then render the report again."
                "</p></section>")
    parts = ["<section><h2>What the attacks achieved</h2>"]
    parts += _membership(audit) + _canaries(audit) + _inversion(audit.get("inversion"))
    parts.append("</section>")
    return "".join(parts)
