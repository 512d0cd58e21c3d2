"""Write three small synthetic hospital CSVs (one per site) for examples/own_sites/*.toml.

Each hospital has its own age mix and recording habits (missing BMI values, labels written
as 1 or 1.0); hospital C keeps a separate test file. Seeded: the files are reproducible.
Run: python examples/own_sites/make_files.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _rows(rng: np.random.Generator, n: int, age_mu: float, p_missing: float,
          float_labels: bool, start_id: int) -> list[str]:
    out = []
    for i in range(n):
        age = float(np.clip(rng.normal(age_mu, 12), 18, 95))
        bmi = float(np.clip(rng.normal(27, 4), 15, 45))
        sex = rng.choice(["F", "M"])
        smoker = rng.choice(["yes", "no", ""], p=[0.25, 0.7, 0.05])
        stage = rng.choice(["I", "II", "III"], p=[0.5, 0.3, 0.2])
        z = (0.06 * (age - 55) + 0.12 * (bmi - 27) + 0.8 * (smoker == "yes")
             + {"I": -0.7, "II": 0.0, "III": 0.9}[stage] + rng.normal(0, 0.7))
        y = int(z > 0)
        bmi_s = "" if rng.random() < p_missing else f"{bmi:.1f}"
        lab = f"{y}.0" if float_labels and rng.random() < 0.5 else str(y)
        out.append(f"{start_id + i},{age:.0f},{bmi_s},{sex},{smoker},{stage},{lab}")
    return out


def main() -> None:
    rng = np.random.default_rng(2026)
    header = "patient_id,age,bmi,sex,smoker,stage,outcome"
    specs = {  # file: (rows, mean age, share of BMI missing, some labels written as 1.0)
        "hospital_a.csv": (160, 45.0, 0.0, False),
        "hospital_b.csv": (120, 65.0, 0.1, True),
        "hospital_c.csv": (90, 55.0, 0.05, False),
        "hospital_c_test.csv": (40, 55.0, 0.05, False),
    }
    start = 1
    for name, (n, mu, miss, flt) in specs.items():
        rows = _rows(rng, n, mu, miss, flt, start)
        start += n
        (HERE / name).write_text(header + "\n" + "\n".join(rows) + "\n")
        print(f"wrote {HERE / name} ({n} rows)")


if __name__ == "__main__":
    main()
