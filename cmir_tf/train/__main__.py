"""The train command: ``python -m cmir_tf.train`` (``cmir-train``), the project's main job.

With no flags it runs the whole way on the embedded synthetic Melon (synth → prepare → train → export).
The flags are defined in :mod:`cmir_tf.train.config`; the door trains (:func:`cmir_tf.train.loop.train`),
prints every output path, and exports the run (:func:`export_after_training`) unless ``--no-export``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from cmir_tf import cli
from cmir_tf.fileio import require_output_dir
from cmir_tf.train.config import TrainConfig, config_from_args
from cmir_tf.train.embedded import default_export_dir, default_run_dir
from cmir_tf.train.loop import train
from cmir_tf.train.rundir import RunDir


def check_export_dir(cfg: TrainConfig) -> None:
    """Before training: the folder the encoder will be exported to can take it (no file in the way)."""
    if cfg.export:
        run_dir = cfg.out or default_run_dir(cfg.mode)
        require_output_dir(cfg.export_dir or default_export_dir(Path(run_dir)), "--export-dir")


def export_after_training(cfg: TrainConfig, run_dir) -> object | None:
    """Export the trained audio encoder (SavedModel + Essentia graph) to ``export/<run name>``.

    A new version is written only when the run's checkpoints are newer than its latest export, so
    rerunning a finished run does not pile up identical versions. Returns the ExportResult or None.
    """
    from cmir_tf.export.exportdir import ExportDir
    from cmir_tf.export.exporter import export_run

    run = RunDir(run_dir)
    out = ExportDir(cfg.export_dir or default_export_dir(run.path))
    checkpoints = run.checkpoints()
    if not checkpoints:
        return None
    latest = out.latest_version()
    if latest is not None and out.version_dir(latest).stat().st_mtime >= max(p.stat().st_mtime for p in checkpoints):
        print(f"[cmir_tf] export: {Path(out.path).resolve()} version {latest} is up to date")
        return None
    return export_run(run.path, out.path)


@cli.command(hard_exit=True)
def main(argv: list[str] | None = None) -> int:
    cfg, restart = config_from_args(argv)
    check_export_dir(cfg)
    run_dir = train(cfg, restart=restart)
    run = RunDir(run_dir)
    print(f"[cmir_tf] run: {run_dir.resolve()}")
    for path in (run.config_path, run.history_path, *run.checkpoints(), run.curves_path, run.logs_dir):
        if path.exists():
            print(f"[cmir_tf]   {path.resolve()}")
    if cfg.export:
        exported = export_after_training(cfg, run_dir)
        if exported:
            for label, path in exported.outputs():
                print(f"[cmir_tf] export: {label}: {Path(path).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
