"""Seeded, deterministic SYNTHETIC corpora in the real layouts, for offline demos and tests.

Nothing here is real data; every report that uses it says "synthetic".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deepfusion.artifacts.freshness import freshness_record, is_current
from deepfusion.config import DemoDataConfig

STAMP = "DEMO_CORPUS.json"


def make_demo_data(cfg: DemoDataConfig, force: bool = False) -> tuple[bool, dict]:
    """Write ``meld/`` and ``textile/`` under ``cfg.out`` unless already there with these settings.

    Returns ``(written, stamp)``; the stamp holds the settings' freshness record and the counts.
    """
    from deepfusion.demo.image_corpus import write_image_corpus
    from deepfusion.demo.meld_corpus import write_meld_corpus

    out = Path(cfg.out)
    settings = cfg.model_dump(mode="json")
    stamp_path = out / STAMP
    if not force and stamp_path.is_file():
        stamp = json.loads(stamp_path.read_text())
        if is_current(stamp.get("freshness"), settings):
            return False, stamp
    shutil.rmtree(out, ignore_errors=True)
    stamp = {
        "synthetic": True,
        "freshness": freshness_record(settings),
        "meld_rows": write_meld_corpus(cfg, out / "meld"),
        "textile_images": write_image_corpus(cfg, out / "textile"),
    }
    stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
    return True, stamp
