"""Studies: statistics, arm specs, aggregation, and skip/resume of cells.

The `train.study` command itself (a killed cell resumes, kill -9 of the
study takes its job along) is run in tests/e2e/study_test.py.
"""

import json
import os

import tensorflow as tf

from tfgraft.study import runner as runner_lib
from tfgraft.study import spec as spec_lib
from tfgraft.study import stats
from tfgraft.study import summary


class StatsTest(tf.test.TestCase):
    def test_t_quantiles(self):
        # Published t_{0.975} values.
        self.assertAllClose(stats.t975(1), 12.706, atol=1e-3)
        self.assertAllClose(stats.t975(2), 4.303, atol=1e-3)
        self.assertAllClose(stats.t975(30), 2.042, atol=1e-3)
        self.assertAllClose(stats.t975(40), 2.021, atol=1e-3)
        self.assertAllClose(stats.t975(60), 2.000, atol=1e-3)
        self.assertAllClose(stats.t975(120), 1.980, atol=1e-3)
        with self.assertRaisesRegex(ValueError, "df=0"):
            stats.t975(0)

    def test_paired_difference_interval(self):
        a = {0: 0.70, 1: 0.72, 2: 0.71, 5: 0.9}  # seed 5 has no pair
        b = {0: 0.69, 1: 0.70, 2: 0.705}
        d = stats.paired_difference(a, b)
        self.assertEqual(d["seeds"], [0, 1, 2])
        self.assertEqual(d["n"], 3)
        # Differences 0.01, 0.02, 0.005: mean 0.0116667, sd 0.0076376,
        # half width t(2) * sd / sqrt(3) = 0.0189731.
        self.assertAllClose(d["mean"], 0.0116667, atol=1e-6)
        self.assertAllClose(d["std"], 0.0076376, atol=1e-6)
        self.assertAllClose(d["low"], -0.0073065, atol=1e-6)
        self.assertAllClose(d["high"], 0.0306398, atol=1e-6)

    def test_one_value_has_no_interval(self):
        d = stats.mean_interval([0.5])
        self.assertEqual((d["n"], d["mean"]), (1, 0.5))
        self.assertIsNone(d["std"])
        self.assertIsNone(d["low"])


class SpecTest(tf.test.TestCase):
    def test_arm_parsing_and_cells(self):
        pre = spec_lib.parse_arm("pre: baseline --epochs=3")
        ft = spec_lib.parse_arm(
            "ft: ekg --pretrained={study}/pre/seed_{seed} --title='a b'"
        )
        self.assertEqual(ft.job, "ekg")
        self.assertEqual(ft.args[1], "--title=a b")
        study = spec_lib.Study("/s", (pre, ft), (0, 4))
        cells = study.cells()
        self.assertEqual(
            [c.key for c in cells], ["pre:0", "ft:0", "pre:4", "ft:4"]
        )
        ft4 = cells[3]
        self.assertEqual(
            ft4.argv,
            (
                "--pretrained=/s/pre/seed_4",
                "--title=a b",
                "--seed=4",
                "--workdir=/s/ft/seed_4",
            ),
        )
        self.assertEqual(ft4.needs, ("/s/pre/seed_4",))
        self.assertEqual(cells[0].needs, ())
        self.assertEqual(study.select("ft:4"), ft4)

    def test_errors_name_the_input(self):
        bad = [
            ("no colon here", "expected 'NAME: JOB ARGS"),
            ("a:", "no JOB"),
            ("a: baseline --seed=3", "--seed is set by the study"),
            ("a: baseline --workdir=x", "--workdir is set by the study"),
        ]
        for text, message in bad:
            with self.assertRaisesRegex(spec_lib.StudyError, message):
                spec_lib.parse_arm(text, where="--arm")
        a = spec_lib.parse_arm("a: baseline")
        with self.assertRaisesRegex(spec_lib.StudyError, "defined twice"):
            spec_lib.Study("/s", (a, a), (0,))
        with self.assertRaisesRegex(spec_lib.StudyError, "distinct"):
            spec_lib.Study("/s", (a,), (1, 1))
        with self.assertRaisesRegex(spec_lib.StudyError, "'c' is not an arm"):
            spec_lib.parse_comparison("a - c", ["a", "b"])
        with self.assertRaisesRegex(spec_lib.StudyError, "expected 'A - B'"):
            spec_lib.parse_comparison("a-b", ["a", "b"])
        study = spec_lib.Study("/s", (a,), (0, 1))
        with self.assertRaisesRegex(spec_lib.StudyError, "--only=a:7: seed 7"):
            study.select("a:7")
        with self.assertRaisesRegex(spec_lib.StudyError, "expected ARM:SEED"):
            study.select("a")
        late = spec_lib.parse_arm("b: ekg --pretrained={study}/c/seed_{seed}")
        c = spec_lib.parse_arm("c: baseline")
        with self.assertRaisesRegex(spec_lib.StudyError, "listed after"):
            spec_lib.Study("/s", (late, c), (0,)).cells()


def _report(nets_best, nets_final, ens=None, params=100, flops=1000):
    nets = [
        {"best_top1": b, "final_top1": f, "params": params, "flops": flops}
        for b, f in zip(nets_best, nets_final)
    ]
    report = {"job": "baseline", "nets": nets, "wall_seconds": 60.0}
    if ens is not None:
        report["ensemble"] = {"best_top1": ens[0], "final_top1": ens[1]}
    return report


def _write_report(workdir, report):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(report, f)


class SummaryTest(tf.test.TestCase):
    def test_rows_views_and_paired_comparisons(self):
        root = self.create_tempdir().full_path
        arms = (
            spec_lib.parse_arm("m: baseline"),
            spec_lib.parse_arm("c: baseline"),
        )
        study = spec_lib.Study(
            root,
            arms,
            (0, 1, 2),
            (
                spec_lib.Comparison("m", "c"),
                spec_lib.Comparison("m", "c/ensemble"),
            ),
            title="T",
        )
        m_final = {0: 0.70, 1: 0.72, 2: 0.71}
        c_final = {0: 0.69, 1: 0.70, 2: 0.705}
        for s in (0, 1, 2):
            # Two nets per run; the arm's row is their mean.
            f = m_final[s]
            _write_report(
                study.cell_dir("m", s),
                _report([f + 0.01, f + 0.03], [f - 0.01, f + 0.01]),
            )
        for s in (0, 1):  # seed 2 of c is not done
            f = c_final[s]
            _write_report(
                study.cell_dir("c", s),
                _report([f, f], [f, f], ens=(f + 0.02, f + 0.01)),
            )
        data = summary.collect(study)
        rows = {r["label"]: r for r in data["rows"]}
        self.assertEqual(
            list(rows), ["m", "m/best_net", "c", "c/best_net", "c/ensemble"]
        )
        self.assertEqual(rows["m"]["n"], 3)
        self.assertAllClose(rows["m"]["final_top1"]["mean"], 0.71)
        self.assertAllClose(rows["m"]["final_top1"]["std"], 0.01)
        self.assertAllClose(rows["m"]["best_top1"]["mean"], 0.73)
        self.assertAllClose(rows["m/best_net"]["final_top1"]["mean"], 0.72)
        self.assertEqual(rows["c"]["n"], 2)
        self.assertEqual(rows["c/ensemble"]["params"]["mean"], 200)
        statuses = {(c["arm"], c["seed"]): c["status"] for c in data["cells"]}
        self.assertEqual(statuses[("c", 2)], "pending")
        comps = {(c["label"], c["metric"]): c for c in data["comparisons"]}
        final = comps[("m - c", "final_top1")]
        self.assertEqual(final["seeds"], [0, 1])
        # Differences 0.70-0.69 and 0.72-0.70.
        self.assertAllClose(final["mean"], 0.015)
        half = stats.t975(1) * 0.0070710678 / 2**0.5
        self.assertAllClose(final["high"], 0.015 + half, atol=1e-6)
        ens = comps[("m - c/ensemble", "best_top1")]
        # m best: 0.72, 0.74; c ensemble best: 0.71, 0.72.
        self.assertAllClose(ens["mean"], 0.015)
        summary.write(study, data)
        with open(os.path.join(root, "study.json")) as f:
            self.assertEqual(json.load(f)["rows"][0]["label"], "m")
        with open(os.path.join(root, "study.md")) as f:
            md = f.read()
        self.assertIn("| m | 3 | 73.00 ± 1.00 | 71.00 ± 1.00 |", md)
        self.assertIn("| m - c | final_top1 | 2 | +1.50 |", md)
        with open(os.path.join(root, "study.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_done_cells_are_not_run_again(self):
        root = self.create_tempdir().full_path
        study = spec_lib.Study(
            root, (spec_lib.parse_arm("a: baseline"),), (0, 1)
        )
        for s in (0, 1):
            _write_report(study.cell_dir("a", s), _report([0.5], [0.5]))
        lines = []
        # A module that does not exist: any launch would fail.
        run = runner_lib.Runner(
            study, module="no_such_module.{job}", echo=lines.append
        )
        self.assertEqual(run.run(study.cells()), [])
        self.assertEqual(lines, ["study: 2 of 2 cells already done"])
        self.assertFalse(
            os.path.exists(os.path.join(study.cell_dir("a", 0), "study.log"))
        )

    def test_a_cell_waits_for_the_cell_it_reads(self):
        root = self.create_tempdir().full_path
        study = spec_lib.Study(
            root,
            (
                spec_lib.parse_arm("p: baseline"),
                spec_lib.parse_arm("f: ekg --pretrained={study}/p/seed_{seed}"),
            ),
            (0,),
        )
        run = runner_lib.Runner(study, echo=lambda line: None)
        with self.assertRaisesRegex(spec_lib.StudyError, "needs .*p/seed_0"):
            run.run_cell(study.select("f:0"))


if __name__ == "__main__":
    tf.test.main()
