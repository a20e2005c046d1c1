"""The docs' tables of facts the code decides, read from the docs and compared with the code's own tables:
signatures and genre head files per mode (export/README.md), history.csv columns per mode (README.md),
skip reasons (tfrecords/README.md), the tag_genres outputs (docs/ARCHITECTURE.md)."""
import re
from pathlib import Path

import pytest

from cmir_tf.model.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]


def _table(path: Path, header_start: str) -> list[list[str]]:
    """The rows (cells stripped of backticks) of the markdown table whose header row starts with ``header_start``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header_start)]
    assert len(starts) == 1, f"{path.name}: {len(starts)} tables start with {header_start!r}"
    rows = []
    for line in lines[starts[0] + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().replace("`", "") for cell in line.strip().strip("|").split("|")])
    return rows


def _names(cell: str) -> list[str]:
    return [name.strip() for name in cell.split(",") if name.strip()]


def test_export_readme_lists_each_modes_signatures_and_genre_head_files():
    rows = _table(REPO / "export" / "README.md", "| `--mode` | SavedModel signatures")
    documented = {mode: (_names(sigs), head) for mode, sigs, head in rows}
    assert set(documented) == set(PRESETS)
    for mode, preset in PRESETS.items():
        expected = ["serving_default", "embed_waveform"] + (["tag_genres"] if preset.has_genre_encoder else [])
        assert documented[mode] == (expected, "yes" if preset.has_genre_encoder else "no"), mode


@pytest.mark.parametrize("mode", sorted(PRESETS))
def test_the_model_has_a_genre_encoder_exactly_when_the_preset_says(mode):
    """export writes tag_genres and the genre head from the model's genre encoder (export.load_run_model)."""
    import numpy as np

    from cmir_tf.model.contrastive import build_model

    model = build_model(mode, np.zeros((5, 8), np.float32), vocab_size=5, w2v_dim=8, cf_dim=6, compile=False)
    assert (model.genre_encoder is not None) == PRESETS[mode].has_genre_encoder


def test_readme_lists_each_modes_history_columns():
    rows = _table(REPO / "README.md", "| `--mode` | `history.csv` columns")
    assert {mode: _names(cols) for mode, cols in rows} == {m: list(p.history_columns) for m, p in PRESETS.items()}


def test_history_columns_are_what_the_csv_logger_writes(tmp_path):
    """HistoryCSV (Keras's CSVLogger) on the logs a hybrid run's epoch gives: the preset's column order."""
    import csv

    from cmir_tf.train.callbacks import HistoryCSV

    preset = PRESETS["hybrid"]
    names = ("loss",) + preset.parts
    logs = {**{n: 1.0 for n in names}, **{f"val_{n}": 2.0 for n in names}}
    logger = HistoryCSV(tmp_path / "history.csv")
    logger.on_train_begin()
    logger.on_epoch_end(0, dict(reversed(list(logs.items()))))
    logger.on_train_end()
    with open(tmp_path / "history.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == preset.history_columns and rows[1][0] == "1"  # epochs counted from 1


def test_tfrecords_readme_lists_every_skip_reason():
    from cmir_tf.prepare.song_split import SKIP_REASONS

    rows = _table(REPO / "tfrecords" / "README.md", "| reason | the song is skipped")
    assert [row[0] for row in rows] == list(SKIP_REASONS)


def test_signature_outputs_in_the_docs_are_those_the_savedmodel_returns(tmp_path):
    """docs/ARCHITECTURE.md's signature lines and export/README.md's signature table against the outputs of
    the export's signatures (traced on a contr_cf_g model)."""
    import numpy as np

    from cmir_tf.export.exporter import _Serving
    from cmir_tf.model.contrastive import build_model

    model = build_model("contr_cf_g", np.zeros((3, 8), np.float32), vocab_size=3, w2v_dim=8, cf_dim=6, compile=False)
    (tmp_path / "genres.txt").write_text("a\nb\nc\n")
    sigs = _Serving(model.audio_encoder, np.eye(3, 128, dtype=np.float32), ["a", "b", "c"],
                    str(tmp_path / "genres.txt")).signatures()
    outputs = {name: sorted(fn.get_concrete_function().structured_outputs) for name, fn in sigs.items()}
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for name, keys in outputs.items():
        line = next(line for line in text.splitlines() if f"{name}(" in line and "→" in line)
        assert sorted(re.findall(r"(\w+) (?:string|f32)?\[", line.split("→")[1])) == keys, name
    table = _table(REPO / "export" / "README.md", "| signature | input | outputs |")
    documented = {row[0].split()[0]: sorted(re.findall(r"(?:^|; |, )(\w+) (?:string |float32 )?\[", row[2]))
                  for row in table}
    assert documented == outputs
