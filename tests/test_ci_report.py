"""sbm.pipeline.ci_report: the CI report from synthetic experiments (directories, and commits of a
small git repository), without DVC or any pipeline run."""

import subprocess
from pathlib import Path

import pytest

from sbm.pipeline.ci_report import Source, filter_rows, metrics_diff, picture_path, read_curves, write_ci_report

PNG = b"\x89PNG\r\n\x1a\n fake picture"


def _experiment(root: Path, loss_values, with_text=True) -> Path:
    """reports/ files of one finished experiment, as the pipeline writes them."""
    live = root / "reports/live/train_score/plots"
    (live / "metrics/quality").mkdir(parents=True)
    (live / "metrics/loss.tsv").write_text("step\tloss\n" + "".join(f"{25 * (i + 1)}\t{v}\n"
                                                                    for i, v in enumerate(loss_values)))
    (live / "metrics/lr.tsv").write_text("step\tlr\n25\t0.001\n")
    (live / "metrics/quality/fid.tsv").write_text("step\tfid\n100\t200.0\n200\t150.0\n")
    (live / "images/samples").mkdir(parents=True)
    for step in ("000100", "000200"):
        (live / f"images/samples/{step}.png").write_bytes(PNG + step.encode())
    (root / "reports/samples.png").write_bytes(PNG)
    if with_text:
        text = root / "reports/live/train_text/plots"
        (text / "metrics").mkdir(parents=True)
        (text / "metrics/loss.tsv").write_text("step\tloss\n25\t3.0\n50\t2.0\n")
        (text / "images/samples").mkdir(parents=True)
        (text / "images/samples/000200.png").write_bytes(PNG)
        (root / "reports/prompt_samples.png").write_bytes(PNG)
    return root


def test_the_report_draws_each_stage_links_existing_pictures_and_names_what_is_missing(tmp_path):
    sources = {"ci-dsm": Source(repo=_experiment(tmp_path / "a", [3.0, 2.0, 1.5])),
               "ci-ssm": Source(repo=_experiment(tmp_path / "b", [5.0, 4.0], with_text=False))}
    out = tmp_path / "out/reports/ci.md"
    text = write_ci_report(out, sources=sources, table="| Experiment |\n|---|", diff="no diff")
    assert out.read_text() == text
    for section in ("## Experiments", "## Metrics against the previous commit", "## Training curves", "## Samples"):
        assert section in text
    # the curves: one PNG per stage that has any, the learning rate not drawn
    assert (out.parent / "ci/train_score.png").stat().st_size > 1000
    assert (out.parent / "ci/train_text.png").is_file()
    assert not (out.parent / "ci/train_vae.png").exists()
    assert "No curves (no reports/live/train_vae/plots/metrics/*.tsv) in: ci-dsm, ci-ssm (score.space" in text
    assert "No curves (no reports/live/train_text/plots/metrics/*.tsv) in: ci-ssm." in text
    # every link in the page points at a file written next to it; the last monitor picture is shown
    links = [part.split(")")[0] for line in text.splitlines() for part in line.split("](")[1:]]
    assert links and all((out.parent / link).is_file() for link in links)
    assert (out.parent / "ci/ci-dsm/train_score_last.png").read_bytes() \
        == PNG + b"000200"
    # what an experiment lacks is named, not an error
    assert "ci-ssm: no reports/prompt_samples.png" in text
    assert "ci-ssm: no reports/live/train_text/plots/images/samples/<step>.png" in text


def test_curves_are_read_without_the_learning_rate_and_an_empty_or_missing_file_is_skipped(tmp_path):
    root = _experiment(tmp_path / "a", [1.0, 0.5])
    (root / "reports/live/train_score/plots/metrics/quality/kid.tsv").write_text("")
    curves = read_curves(Source(repo=root), "train_score")
    assert sorted(curves) == ["loss", "quality/fid"]
    assert list(curves["loss"]["loss"]) == [1.0, 0.5]
    assert read_curves(Source(repo=root), "train_classifier") == {}


def test_an_experiment_commit_is_read_through_git(tmp_path):
    """Queued experiments are commits: their files come from `git show REV:PATH`, the workspace untouched."""
    repo = _experiment(tmp_path / "repo", [2.0, 1.0])
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "exp"], check=True)
    rev = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (repo / "reports/samples.png").unlink()  # the workspace differs from the commit
    source = Source(rev, repo)
    assert source.read("reports/samples.png") == PNG
    assert source.read("reports/nothing.png") is None
    assert list(read_curves(source, "train_score")["loss"]["loss"]) == [2.0, 1.0]
    assert picture_path(source, "reports/live/train_score/plots/images/samples/{last}.png").endswith("000200.png")
    assert "No commit 'nope'" in metrics_diff("nope", repo)


def test_the_experiment_table_keeps_the_baseline_and_the_named_experiments_only():
    md = "\n".join(["| Experiment | fid |", "|---|---|", "| main | 10 |", "| ├── 1a2b3c4 [ci-dsm] | 50 |",
                    "| ├── 5d6e7f8 [other] | 40 |", "| └── 9a8b7c6 [ci-ssm] | 60 |"])
    kept = filter_rows(md, ["ci-dsm", "ci-ssm"])
    assert "[other]" not in kept and "[ci-dsm]" in kept and "[ci-ssm]" in kept and "| main |" in kept


@pytest.mark.parametrize("argv", [["ci-report", "--help"]])
def test_the_command_line_has_the_subcommand(argv, capsys):
    from sbm.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0 and "--exp" in capsys.readouterr().out


def test_queued_running_and_failed_experiments_are_not_finished_ones():
    """`dvc exp show --json` lists queued experiments with the stash's or the workspace's data: the
    comparison and the CI report skip them until the queue has run them with success."""
    from sbm.pipeline.experiments import finished

    assert finished({"name": "ci-dsm", "executor": None})  # run in the workspace, or the queue's and collected
    assert finished({"executor": {"state": "success"}})
    assert not any(finished({"executor": {"state": s}}) for s in ("queued", "running", "failed"))


def test_experiments_are_found_by_name_and_an_unfinished_one_is_reported_as_not_found(monkeypatch):
    import json
    from types import SimpleNamespace

    from sbm.pipeline import ci_report

    shown = [{"rev": "workspace", "data": {}, "experiments": None},
             {"rev": "base", "data": {"params": {}}, "experiments": [
                 {"name": "ci-dsm", "executor": None, "revs": [{"rev": "a" * 40, "name": "ci-dsm", "data": {"x": 1}}]},
                 {"name": "ci-ssm", "executor": {"state": "running"},
                  "revs": [{"rev": "b" * 40, "name": "ci-ssm", "data": {"x": 1}}]}]}]
    monkeypatch.setattr(ci_report, "_run", lambda args, repo: SimpleNamespace(returncode=0, stdout=json.dumps(shown),
                                                                            stderr=""))
    sources, missing = ci_report.experiment_sources(["ci-dsm", "ci-ssm", "ci-eps"])
    assert sources == {"ci-dsm": Source("a" * 40, None)} and missing == ["ci-ssm", "ci-eps"]
